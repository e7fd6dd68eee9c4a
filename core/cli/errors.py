"""Bad input to the ``anyformer`` commands: one exception, one parser, one way to report it.

The convention of every command: a bad input (a missing or corrupt file, a value out of range,
a checkpoint of the wrong task, an unknown environment, an unknown config key) ends the command
with exit status 2 and ONE line on stderr, ``anyformer <command>: error: <message>``, naming the
input and what was expected; never a traceback. Errors found while parsing the command line
raise ``SystemExit(2)`` (argparse's convention); errors found afterwards make ``main`` return 2.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

USAGE_EXIT = 2
"""Exit status of a usage or input error (argparse's and POSIX tools' convention)."""


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


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``prog: error: message`` (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT, f"{self.prog}: error: {one_line(message)}\n")


Main = Callable[[Sequence[str] | None], int]
"""A command's entry point: ``main(argv)`` (None: ``sys.argv[1:]``) -> exit status."""


def reports_usage_errors(prog: str) -> Callable[[Main], Main]:
    """Decorate a command's ``main(argv) -> int`` so that a :class:`UsageError` it raises is
    reported by :func:`report` (one line, exit status 2) instead of a traceback."""

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except UsageError as error:
                return report(prog, error)

        return run

    return decorate
