"""Whether a run still describes the code: made from a dirty tree, or stale since a later commit.

- **dirty**: the run's ``run.json`` says ``git.dirty`` (tracked files differed from its commit
  when it started, :func:`anyformer.core.train.run_record.git_state`): the commit alone does not
  reproduce it.
- **stale**: a commit that is not an ancestor of the run's commit (so: made after it) is the last
  to touch the code the run exercises, :func:`code_paths`: ``core/`` plus the domain folder of its
  task's LightningModule and data module (or of its evaluation tool), as named in
  :mod:`anyformer.core.cli.tasks`. Judged only inside a git checkout, for a commit that checkout
  holds; otherwise the run is not marked. Only commits count, never the working tree, so the
  answer is the same on every clone of the same history.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from anyformer.core.cli.tasks import TASKS, TOOLS

CORE = "core/"


def _folder(import_path: str) -> str:
    """``anyformer.text.gpt.gpt_task:GPTModule`` -> ``text/`` (the package folder in the repository)."""
    parts = import_path.split(":", 1)[0].split(".")
    return f"{parts[1]}/" if len(parts) > 1 and parts[0] == "anyformer" else CORE


def code_paths(task: str) -> tuple[str, ...]:
    """The repository folders whose commits can change what run ``task`` (a task or a tool) computes."""
    if task in TASKS:
        spec = TASKS[task]
        folders = {_folder(spec.model), _folder(spec.data)}
    elif task in TOOLS:
        folders = {_folder(TOOLS[task][0])}
    else:
        folders = set()
    return tuple(sorted(folders | {CORE}))


class Git:
    """Read-only questions to the git checkout at ``root`` (answers cached: a report asks many times)."""

    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def of(cls, folder: Path) -> Git | None:
        """The checkout holding ``folder``, None outside git (or without git)."""
        top = _git(folder, "rev-parse", "--show-toplevel")
        return cls(Path(top)) if top else None

    @cache  # noqa: B019 (one instance per report)
    def has_commit(self, commit: str) -> bool:
        return _git(self.root, "cat-file", "-e", f"{commit}^{{commit}}") is not None

    @cache  # noqa: B019
    def last_change(self, paths: tuple[str, ...]) -> str | None:
        """The last commit (from HEAD) that touched ``paths``, None when none did."""
        return _git(self.root, "log", "-1", "--format=%H", "--", *paths) or None

    @cache  # noqa: B019
    def is_ancestor(self, ancestor: str, commit: str) -> bool:
        return _git(self.root, "merge-base", "--is-ancestor", ancestor, commit) is not None

    def stale(self, record: dict[str, Any]) -> bool:
        """Whether the code of the run's task changed in a commit made after the run's commit."""
        commit = (record.get("git") or {}).get("commit")
        if not commit or not self.has_commit(commit):
            return False
        last = self.last_change(code_paths(str(record.get("task"))))
        return last is not None and not self.is_ancestor(last, commit)


def dirty(record: dict[str, Any]) -> bool:
    """Whether the run was made from a tree with uncommitted changes to tracked files."""
    return bool((record.get("git") or {}).get("dirty"))


def _git(cwd: Path, *args: str) -> str | None:
    """git's stdout, stripped; None when git fails or is missing."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
