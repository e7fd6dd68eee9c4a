"""One writer per run folder: ``runs/<name>/.lock``, held by the command that writes the run.

Every ``anyformer <task> fit|validate|test|predict`` holds the lock of ``runs/<name>/`` while it runs
(validate/test/predict write into ``runs/<name>/<subcommand>/`` and ``test`` into ``run.json``, so
they must not run beside a fit of the same name either), and so does every evaluation tool given
``--run-name`` (``EVALUATION_TOOLS`` of ``anyformer.core.cli.tasks``: they write ``run.json`` too).
The lock is an OS lock (``fcntl.flock`` on the lock file), which the kernel releases when the holder
exits, however it dies: a lock file left by a SIGKILLed process, or by another boot or host, holds
no lock and is simply taken over.
The file also holds a small JSON description of the holder (pid, host, boot, start time, command),
so a refused second writer can name the process that runs.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from anyformer.core.cli.errors import UsageError
from anyformer.core.train.run_record import command_line, utc_now

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
ORPHAN_WAIT_S = 30.0
"""How long a command waits for a lock whose holder is dead but whose forked children (DataLoader
workers inherit the lock's file) still hold it: they exit once they see their parent gone (PyTorch's
workers look every 5 s)."""


class RunLockedError(UsageError):
    """The run folder is held by another live process; the message names it."""


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _describe(holder: dict[str, Any]) -> str:
    command = f"`{command_line(holder['argv'])}`, " if holder.get("argv") else ""
    return (
        f"{command}pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
    )


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        holder = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _stale_reason(holder: dict[str, Any]) -> str:
    """Why the previous holder no longer holds the lock (for the log line)."""
    if holder.get("host") != socket.gethostname():
        return "another host"
    if holder.get("boot_id") not in (None, _boot_id()):
        return "a previous boot"
    pid = holder.get("pid")
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            pass
    return "no longer holding it"


def holder_of(run_dir: str | Path) -> dict[str, Any] | None:
    """The description of the live process that holds ``run_dir``'s lock, or None when it is free."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe_holder(holder: dict[str, Any]) -> str:
    """One line naming the process that holds a run: command, pid, host, start time."""
    return _describe(holder)


class RunLock:
    """The lock of one run folder (``with RunLock(run_dir, argv): ...``, or :meth:`acquire` / :meth:`release`).

    Args:
        run_dir: ``runs/<name>``; created when missing (and removed again, with the folders made
            for it, by :meth:`release` when the lock file was all it held, so a rejected command
            leaves no run folder).
        argv: The command as typed, recorded for a refused second writer's message.
    """

    def __init__(self, run_dir: str | Path, argv: list[str]) -> None:
        self.run_dir = Path(run_dir)
        self.argv = list(argv)
        self._fd: int | None = None
        self._made_dirs: list[Path] = []

    @property
    def path(self) -> Path:
        return self.run_dir / LOCK_FILE

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunLockedError` naming the live holder.

        A lock file whose process is gone is taken over (logged); the kernel dropped its lock.
        """
        self._made_dirs = [d for d in (self.run_dir, *self.run_dir.parents) if not d.exists()]  # innermost first
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + ORPHAN_WAIT_S
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if _stale_reason(holder) == "gone" and time.monotonic() < deadline:
                    time.sleep(0.1)  # a killed holder's loader workers still hold it, for a few seconds
                    continue
                raise RunLockedError(
                    f"{self.run_dir} is in use by {_describe(holder)}; wait for it to end, or give this "
                    "command another --run-name"
                ) from None
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
                    raise UsageError(f"{self.path}: this file system does not support locks ({err})") from err
                raise
            # A releasing holder may have unlinked the file between our open and our flock:
            # then we hold a lock on a file nobody else sees; open the path again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous.get("pid") is not None:
            logger.info(
                "%s: taking over the lock of %s (%s)", self.run_dir, _describe(previous), _stale_reason(previous)
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "boot_id": _boot_id(),
            "started": utc_now(),
            "argv": self.argv,
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
        self._fd = fd

    def release(self) -> None:
        """Drop the lock: the lock file is emptied (no holder) and removed, with the run folder if
        this lock made it and nothing else was written there."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            try:
                self.path.unlink()  # while still locked: a waiting opener re-checks the inode
            except FileNotFoundError:
                pass
            for folder in self._made_dirs:
                try:
                    folder.rmdir()  # only succeeds when empty
                except OSError:
                    break
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
