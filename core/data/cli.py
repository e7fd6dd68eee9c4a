"""``anyformer data``: list the datasets (where each is read from, present, verified) and fetch one.

``anyformer data list`` hashes every pinned file it finds (no stamp shortcut) and prints the
mirror layout; it exits 1 when a file fails verification. ``anyformer data fetch NAME [--root
DIR]`` downloads and verifies a dataset ahead of time. Bad input (unknown dataset, bad option)
and data errors print one line, ``anyformer data: error: ...``, and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from .fetch import DatasetStatus, fetch, status
from .locations import ENV_CACHE, ENV_DATA, ENV_MIRROR, ENV_OFFLINE, cache_dir, data_dir, is_offline, mirror
from .registry import DATASETS

PROG = "anyformer data"
USAGE_EXIT = 2


class _UsageError(Exception):
    """argparse's complaint, carried back to :func:`main` instead of ``sys.exit``."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="List, fetch and verify the datasets of the suite.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,fetch}")
    listing = commands.add_parser("list", help="every dataset: where it is read from, present, verified; mirror layout")
    listing.add_argument("--quick", action="store_true", help="trust verification stamps instead of hashing all")
    getting = commands.add_parser("fetch", help="download and verify a dataset ahead of time")
    getting.add_argument("name", help=f"one of: {', '.join(DATASETS)}")
    getting.add_argument("--root", help="the dataset's own folder to fetch into (default: found or the cache)")
    getting.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _verified_cell(state: DatasetStatus) -> str:
    spec = DATASETS[state.name]
    if state.mismatched:
        return f"NO ({len(state.mismatched)} bad)"
    if state.verified:
        return f"yes ({sum(1 for f in spec.files if (state.folder / f.path).is_file())} files)"
    if state.present:
        return f"n/a ({spec.managed_by})"
    return "-"


def _list(quick: bool) -> int:
    rows = [("dataset", "present", "verified", "from", "folder")]
    notes, failed = [], False
    for name, spec in DATASETS.items():
        state = status(name, full=not quick)
        rows.append((name, "yes" if state.present else "no", _verified_cell(state), state.source, str(state.folder)))
        for path, expected, actual in state.mismatched:
            failed = True
            notes.append(f"{name}: {state.folder / path}: sha256 {actual}, expected {expected}")
        if state.unpinned:
            notes.append(f"{name}: {len(state.unpinned)} unpinned file(s), not verified, e.g. {state.unpinned[0]}")
        if spec.note:
            notes.append(f"{name}: {spec.note}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print()
    for note in notes:
        print(note)
    print()
    data = data_dir()
    print(f"${ENV_DATA}: {data if data is not None else '(unset)'}")
    print(f"cache (${ENV_CACHE}): {cache_dir()}")
    print(f"${ENV_OFFLINE}: {'set: no downloads' if is_offline() else '(unset)'}")
    base = mirror()
    print(f"${ENV_MIRROR}: {base or '(unset)'}; a mirror serves each remote file at <mirror>/<path>:")
    remotes = [remote for spec in DATASETS.values() for remote in spec.remotes]
    width = max((len(remote.mirror_path) for remote in remotes), default=0)
    for remote in remotes:
        print(f"  {remote.mirror_path.ljust(width)}  <- {remote.url}")
    for library in sorted({spec.managed_by for spec in DATASETS.values() if spec.managed_by}):
        names = ", ".join(name for name, spec in DATASETS.items() if spec.managed_by == library)
        print(f"  ({names}: downloaded by {library} from its own URLs, not through the mirror)")
    return 1 if failed else 0


def _fetch(name: str, root: str | None, progress: bool) -> int:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    folder = fetch(name, root, progress=progress)
    state = status(name, root)
    pinned = sum(1 for f in DATASETS[name].files if (folder / f.path).is_file())
    what = f"{pinned} pinned file(s) verified" if pinned else f"ready for {DATASETS[name].managed_by}"
    print(f"{name}: {what} in {folder}")
    if state.unpinned:
        print(f"{name}: {len(state.unpinned)} unpinned file(s) there were not verified, e.g. {state.unpinned[0]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``anyformer data`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Returns:
        0 on success; 1 when ``list`` finds a file that fails verification; 2 on bad input or a
        data error (one line on stderr).
    """
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    except _UsageError as error:
        print(f"{PROG}: error: {_one_line(error)} (see `{PROG} --help`)", file=sys.stderr)
        return USAGE_EXIT
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else 0
    try:
        if args.command == "list":
            return _list(args.quick)
        return _fetch(args.name, args.root, progress=not args.no_progress)
    except (ValueError, OSError) as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return USAGE_EXIT
