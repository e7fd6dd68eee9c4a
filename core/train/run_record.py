"""``runs/<name>/run.json``: what a run was (command, code version, machine) and how it ended.

The callback ``anyformer.core.train.callbacks.RunRecord`` writes it for a fit, :func:`record_evaluation` for an
evaluation tool run with ``--run-name`` (``anyformer decode-eval``, ``anyformer rollout``);
``anyformer experiment`` reads it to skip finished runs and ``anyformer report`` to build the result
tables, so no result is typed by hand.

Layout (JSON, keys sorted)::

    {"format": 1, "run_name": ..., "task": ..., "argv": ["anyformer", task, "fit", ...],
     "config": [--config paths], "git": {"commit", "dirty"}, "machine": {...},
     "started": ISO date, "ended": ISO date or null, "status": STATUSES, "step": int,
     "params": int, "wall_s": float, "metrics": {"val_...": float, "test_...": float},
     "test": {"argv", "git", "machine", "started", "ended"}}   # only after `anyformer <task> test`

An evaluation's record has the same keys except ``step``, ``params``, ``wall_s`` and ``test``; its
``task`` is the tool (``decode-eval``), its ``argv`` ``["anyformer", tool, ..., "--run-name", name]``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
from pathlib import Path
from typing import Any

import torch

from anyformer.core.cli.errors import UsageError
from anyformer.core.train.atomic import atomic_write_text
from anyformer.core.train.hardware import cpu_signature

RUN_FILE = "run.json"
FIGURE_FILE = "figure.png"
"""What a figure-drawing evaluation run (``anyformer attention --run-name``) leaves in its folder."""
SAMPLES_FILE = "samples.jsonl"
"""What a sampling evaluation run (``anyformer preference-eval --run-name``) leaves in its folder: one
JSON object per sample, ``{"prompt", "continuation", ...}``."""
FORMAT_VERSION = 1
STATUSES = ("running", "finished", "stopped", "failed", "interrupted")
"""``finished``: fit reached max_steps/max_epochs; ``stopped``: ended early (e.g. early stopping);
``failed``/``interrupted``: an exception / Ctrl-C; ``running``: started, not ended (or killed)."""


def _checkout() -> Path | None:
    """The git checkout this code runs from (core/train/ -> the repository root), or None when it
    was installed from a wheel: then site-packages may lie inside some other repository, whose
    commit says nothing about this code."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / ".git").exists() and (root / "pyproject.toml").is_file() else None


REPO = _checkout()
"""The repository root of an editable install or a source checkout; None for a wheel install."""


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string to the second, e.g. ``2026-11-23T12:36:20Z``."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | None = None) -> dict[str, Any]:
    """Where the run executes: OS, CPU model, cores, torch threads, and the GPU if ``device`` is one.

    ``cpu_signature`` (family, model, ISA flags) tells apart CPUs that share a marketing name: "AMD EPYC"
    is a Zen 4 (family 25) on one host and a Zen 5 (family 26) on another, up to 2x apart in GEMM speed.
    """
    gpu = torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else None
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_signature": cpu_signature(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def git_state(repo: Path | None = REPO) -> dict[str, Any]:
    """Commit of the code that runs, and whether tracked files differ from it (None outside git,
    and for a wheel install, ``repo=None``)."""
    if repo is None:
        return {"commit": None, "dirty": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def config_paths(argv: list[str]) -> list[str]:
    """The ``--config`` files of a command line, in order."""
    paths = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    paths += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    return paths


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's record, or None when the run has none yet."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON ({err}); delete it and rerun the run") from err
    if not isinstance(record, dict) or record.get("format") != FORMAT_VERSION:
        raise UsageError(f"{path} is not a run record of format {FORMAT_VERSION}")
    return record


def write_record(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Write the record atomically (a reader never sees half a file), keys sorted for stable diffs."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")


def evaluation_dir(run_name: str, argv: list[str], runs_dir: str | Path = "runs") -> Path:
    """``runs/<run_name>``, checked before an evaluation starts so a bad name fails fast.

    Raises:
        UsageError: ``run_name`` is not a plain folder name, or the folder holds a record made by
            another command (a fit, or another evaluation), which the evaluation must not overwrite.
    """
    if not run_name or "/" in run_name or run_name.startswith("."):
        raise UsageError(f"--run-name {run_name!r} must be a plain folder name (no '/', not hidden)")
    run_dir = Path(runs_dir) / run_name
    record = read_record(run_dir)
    if record is not None and not same_command(record.get("argv") or [], argv):
        raise UsageError(
            f"{run_dir} holds a run made by `{command_line(record.get('argv') or [])}`; give this evaluation "
            "another --run-name"
        )
    return run_dir


def record_evaluation(
    run_dir: str | Path, argv: list[str], metrics: dict[str, float], started: str, ended: str
) -> None:
    """Write the ``finished`` record of an evaluation tool's run (layout in the module docstring).

    Args:
        run_dir: ``runs/<name>``, from :func:`evaluation_dir`.
        argv: The command as typed, ``["anyformer", tool, ...]``.
        metrics: Metric name -> value, the columns a comparison's table can show.
        started, ended: :func:`utc_now` stamps taken around the evaluation.
    """
    run_dir = evaluation_dir(Path(run_dir).name, argv, Path(run_dir).parent)
    record = {
        "format": FORMAT_VERSION,
        "run_name": run_dir.name,
        "task": argv[1],
        "argv": list(argv),
        "config": config_paths(argv),
        "git": git_state(),
        "machine": machine(),
        "started": started,
        "ended": ended,
        "status": "finished",
        "metrics": {name: float(value) for name, value in metrics.items()},
    }
    write_record(run_dir, record)


def command_line(argv: list[str]) -> str:
    """``argv`` as one shell-quoted line."""
    return shlex.join(argv)


def same_command(recorded: list[str], planned: list[str]) -> bool:
    """Whether two commands train the same thing: equal once ``--run-name`` (the folder is the same
    anyway) and ``--ckpt_path`` (a resumed run continues the same training) are left out."""

    def essential(argv: list[str]) -> list[str]:
        kept, skip_next = [], False
        for arg in argv:
            if skip_next:
                skip_next = False
            elif arg in ("--run-name", "--ckpt_path"):
                skip_next = True
            elif not arg.startswith(("--run-name=", "--ckpt_path=")):
                kept.append(arg)
        return kept

    return essential(recorded) == essential(planned)
