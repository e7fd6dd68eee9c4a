"""Whether a run still describes the code: made from a dirty tree, or stale since a later commit.

- **dirty**: the run's ``run.json`` says ``git.dirty`` (tracked files differed from its commit
  when it started, :func:`anyformer.core.train.run_record.git_state`): the commit alone does not
  reproduce it.
- **stale**: a commit that is not an ancestor of the run's commit (so: made after it) touched the
  code the run exercises, :func:`code_paths`: all of ``core/`` (the CLI, trainer and layers every
  task runs through; not ``RECORD_ONLY``, which only writes the run's record) plus the domain
  modules its task imports, found by following the ``import`` statements of its LightningModule
  and data module (or of its evaluation tool, and of the task whose run it reads) through the
  domain packages, lazy imports inside functions included. A change to another task of the same
  domain leaves the run current. Judged only inside a git checkout, for a commit that checkout
  holds; otherwise the run is not marked. Only commits count, never the working tree, so the answer
  is the same on every clone of the same history. A run is also stale when a later commit changed
  the settings of its ``--config`` YAML (comments aside): its command then means another experiment.
"""

from __future__ import annotations

import ast
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from anyformer.core.cli.tasks import TASKS, TOOLS

CORE = "core/"
RECORD_ONLY = ("core/train/run_record.py",)
"""Files of ``core/`` that shape only how a run is recorded (which machine, commit and command its
run.json names), never what it computes: a commit touching them stales no run, so describing the
machine better does not send every archived run back to be rerun."""
PACKAGE = "anyformer"
"""The import name; ``anyformer.<folder>`` is the repository folder ``<folder>/`` when it is a
package (core, text, vision, speech, rl, experiments), else a module of ``anyformer/``."""


def _module_file(root: Path, module: str) -> Path | None:
    """The repository file of ``module`` (``anyformer.text.gpt.data`` -> ``text/gpt/data.py``), None if none."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) > 1 and (root / parts[1] / "__init__.py").is_file():
        path = root.joinpath(*parts[1:])
    else:
        path = root.joinpath(PACKAGE, *parts[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(file: Path, module: str) -> set[str]:
    """Every module ``file`` (module ``module``) names in an import, at any depth but under ``if TYPE_CHECKING``."""
    tree = ast.parse(file.read_text(), str(file))
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for statement in branch.body
        for node in ast.walk(statement)
    }
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


@cache
def _domain_closure(root: Path, modules: tuple[str, ...]) -> tuple[str, ...]:
    """The domain files (outside ``core/`` and ``anyformer/``, which count whole or not at all) that
    ``modules`` import, transitively, as repository-relative paths."""
    seen: dict[Path, str] = {}
    todo = list(modules)
    while todo:
        module = todo.pop()
        file = _module_file(root, module)
        if file is None or file in seen:
            continue
        relative = file.relative_to(root).as_posix()
        if relative.startswith((CORE, f"{PACKAGE}/")):
            continue  # core counts whole; the top-level package is the Python API, no task's code
        seen[file] = relative
        parents = module.split(".")
        todo += [".".join(parents[:i]) for i in range(2, len(parents))]  # the packages' __init__.py run first
        todo += sorted(_imports(file, module))
    return tuple(sorted(seen.values()))


def _entry_modules(task: str) -> tuple[str, ...]:
    """The modules a task (its LightningModule and data module) or a tool starts from."""
    if task in TASKS:
        return tuple(path.split(":", 1)[0] for path in (TASKS[task].model, TASKS[task].data))
    if task in TOOLS:
        return (TOOLS[task][0].split(":", 1)[0],)
    return ()


def code_paths(*tasks: str, root: str | Path = ".") -> tuple[str, ...]:
    """``core/`` and the domain files whose commits can change what runs of ``tasks`` (tasks or tools) compute."""
    entries = tuple(sorted({module for task in tasks for module in _entry_modules(task)}))
    return (CORE, *_domain_closure(Path(root).resolve(), entries))


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
    def changed_since(self, commit: str, paths: tuple[str, ...]) -> tuple[str, ...]:
        """The files under ``paths`` that commits after ``commit`` (not its ancestors, up to HEAD) touched."""
        excluded = [f":(exclude){path}" for path in RECORD_ONLY]
        names = _git(self.root, "log", "--format=", "--name-only", f"{commit}..HEAD", "--", *paths, *excluded)
        return tuple(sorted(set((names or "").split()))) if names else ()

    @cache  # noqa: B019
    def config_changed(self, commit: str, path: str) -> bool:
        """Whether the experiment YAML ``path`` says something else at HEAD than at ``commit``
        (compared parsed, so an edited comment is no change; a file missing at either end is one)."""
        then, now = _git(self.root, "show", f"{commit}:{path}"), _git(self.root, "show", f"HEAD:{path}")
        if then is None or now is None:
            return then != now
        try:
            return yaml.safe_load(then) != yaml.safe_load(now)
        except yaml.YAMLError:
            return then != now

    def stale(self, record: dict[str, Any], paths: tuple[str, ...]) -> tuple[str, ...]:
        """What changed in commits made after the run's commit: the files of ``paths`` (the code the
        run exercises, :func:`code_paths`) that they touched and the run's ``--config`` files whose
        settings they changed; empty when the run is current or cannot be judged."""
        commit = (record.get("git") or {}).get("commit")
        if not commit or not self.has_commit(commit):
            return ()
        configs = [path for path in record.get("config") or [] if self.config_changed(commit, path)]
        return tuple(sorted({*self.changed_since(commit, paths), *configs}))


CHANGES_SHOWN = 6
"""How many of the changed files :func:`describe_changes` names before `and N more`."""


def describe_changes(paths: list[str] | tuple[str, ...]) -> str:
    """Changed files as a reader wants them: ``core/`` as one folder with its count (every task runs
    through it), then the other files by name, the first CHANGES_SHOWN of them."""
    core = [path for path in paths if path.startswith(CORE)]
    named = [f"`{path}`" for path in paths if not path.startswith(CORE)]
    shown = ([f"`{CORE}` ({len(core)} {'file' if len(core) == 1 else 'files'})"] if core else []) + named
    more = f" and {len(shown) - CHANGES_SHOWN} more" if len(shown) > CHANGES_SHOWN else ""
    return ", ".join(shown[:CHANGES_SHOWN]) + more


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
