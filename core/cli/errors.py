"""Bad input to the ``anyformer`` commands: one exception, one parser, one way to report it.

The convention of every command: a bad input (a missing or corrupt file, a value out of range,
a checkpoint of the wrong task, an unknown environment, an unknown config key) ends the command
with exit status 2 and ONE line on stderr, ``anyformer <command>: error: <message>``, naming the
input and what was expected; never a traceback. Errors found while parsing the command line
raise ``SystemExit(2)`` (argparse's convention); errors found afterwards make ``main`` return 2.
A write refused for lack of space (ENOSPC, EDQUOT) is not a usage error but stops the command
with exit status 1 and one line, ``anyformer <command>: stopped: <message>`` (the writes are
atomic, so the message can say the previous file is intact). Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import errno
import functools
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

USAGE_EXIT = 2
"""Exit status of a usage or input error (argparse's and POSIX tools' convention)."""
STOPPED_EXIT = 1
"""Exit status of a command stopped by its environment (a full disk) or by a diverged run."""
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""``errno`` of a write refused for lack of space (the device, or the user's quota)."""


class UsageError(ValueError):
    """A bad input to a command or an API; the message names the input and says what was expected.

    A ``ValueError``, so library callers that catch ``ValueError`` keep working.
    """


def one_line(message: object) -> str:
    """``message`` with every run of whitespace, newlines included, collapsed to one space."""
    return " ".join(str(message).split())


def report(prog: str, error: BaseException) -> int:
    """Print ``prog: error: <message>`` as one line on stderr; return :data:`USAGE_EXIT`."""
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
    return USAGE_EXIT


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, else the option's one-line error naming what was typed."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``prog: error: message`` (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT, f"{self.prog}: error: {one_line(message)}\n")


def disk_full(error: BaseException) -> OSError | None:
    """The first write refused for lack of space behind ``error`` (itself, or an exception it was
    raised while handling or from: a later write on the same full disk, a writer's wrapper), or
    None. A described one (``DiskFullError``, naming the file) wins over the bare ``OSError``."""
    found, seen, current = [], set(), error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL:
            found.append(current)
        current = current.__cause__ or current.__context__
    described = [err for err in found if type(err) is not OSError]
    return (described or found or [None])[-1]  # the walk goes from the latest to the earliest


def report_stop(prog: str, error: BaseException) -> int:
    """Print ``prog: stopped: <message>`` as one line on stderr; return :data:`STOPPED_EXIT`."""
    print(f"{prog}: stopped: {one_line(error)}", file=sys.stderr)
    return STOPPED_EXIT


Main = Callable[[Sequence[str] | None], int]
"""A command's entry point: ``main(argv)`` (None: ``sys.argv[1:]``) -> exit status."""


def reports_usage_errors(prog: str) -> Callable[[Main], Main]:
    """Decorate a command's ``main(argv) -> int`` so that a :class:`UsageError` it raises is
    reported by :func:`report` (one line, exit status 2), and a full disk by :func:`report_stop`
    (one line, exit status 1), instead of a traceback."""

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except UsageError as error:
                return report(prog, error)
            except OSError as error:
                if (full := disk_full(error)) is None:
                    raise
                return report_stop(prog, full)

        return run

    return decorate
