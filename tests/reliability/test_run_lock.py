"""One writer per run: a second command on a running run's folder is refused, a dead holder's lock
is taken over, and ``anyformer experiment`` leaves a locked run alone."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import yaml

from anyformer.core.train.run_lock import LOCK_FILE, RunLock, holder_of
from anyformer.experiments import runner
from anyformer.experiments.comparison import load_comparison
from tests.helpers import run_cli
from tests.reliability.tiny_gpt import cli_command, fit_args, subprocess_env, write_corpus

TINY = {"trainer.max_steps": 2, "trainer.val_check_interval": 2, "trainer.limit_val_batches": 1}


class WaitForFile(pl.Callback):
    """In the first fit: announce that training started, then wait (at most 120 s) for a file."""

    def __init__(self, started: str, release: str) -> None:
        self.started, self.release = Path(started), Path(release)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started.write_text(str(os.getpid()))
        deadline = time.monotonic() + 120
        while not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_a_second_fit_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path, caplog) -> None:
    corpus = write_corpus(tmp_path)
    started, release = tmp_path / "started", tmp_path / "release"
    waiter = {"class_path": f"{__name__}.WaitForFile", "init_args": {"started": str(started), "release": str(release)}}
    first = subprocess.Popen(
        cli_command(fit_args("shared", corpus, TINY, callbacks=[waiter])),
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(started, first)
        holder = holder_of(tmp_path / "runs" / "shared")
        assert holder is not None and holder["pid"] == first.pid and holder["host"] == socket.gethostname()

        # A second fit of the same run, a real second process: refused, one line naming the holder.
        files_before = {path: path.read_bytes() for path in (tmp_path / "runs").rglob("*") if path.is_file()}
        second = subprocess.run(
            cli_command(fit_args("shared", corpus, TINY)),
            cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2, second.stderr
        assert len(lines) == 1 and lines[0].startswith("anyformer gpt: error: runs/shared is in use by"), lines
        assert f"pid {first.pid} on host {socket.gethostname()}, started {holder['started']}" in lines[0]
        assert "--run-name" in lines[0]
        assert first.poll() is None, "the refused fit did not disturb the running one"
        files_after = {path: path.read_bytes() for path in (tmp_path / "runs").rglob("*") if path.is_file()}
        assert files_after == files_before and (tmp_path / "runs" / "shared" / "run.json") in files_after
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock
        first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL

    # The killed fit left its lock file behind, but the kernel dropped its lock: taken over.
    lock_file = tmp_path / "runs" / "shared" / LOCK_FILE
    assert json.loads(lock_file.read_text())["pid"] == first.pid
    assert holder_of(tmp_path / "runs" / "shared") is None
    caplog.set_level(logging.INFO)
    run_cli(tmp_path, fit_args("shared", corpus, TINY))
    assert "taking over the lock of `anyformer gpt fit" in caplog.text and f"pid {first.pid}" in caplog.text
    assert "(gone)" in caplog.text
    record = json.loads((tmp_path / "runs" / "shared" / "run.json").read_text())
    assert record["status"] == "finished" and record["step"] == 2
    assert not lock_file.exists(), "a fit that ends releases its lock"


def _comparison(root: Path) -> Any:
    (root / "a.yaml").write_text("seed_everything: 1\n")
    runs = [{"name": "busy", "task": "gpt", "config": "a.yaml", "then": ["test"]},
            {"name": "free", "task": "gpt", "config": "a.yaml"}]  # fmt: skip
    path = root / "toy.yaml"
    tables = [{"title": "Toy", "columns": ["val_loss"]}]
    path.write_text(yaml.safe_dump({"title": "Toy", "runs": runs, "tables": tables}, sort_keys=False))
    return load_comparison(path)


def test_experiment_reports_a_locked_run_and_leaves_it_alone(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    comparison = _comparison(tmp_path)
    executed = []
    monkeypatch.setattr(runner, "execute", lambda step: executed.append(step.label) or 0)
    with RunLock(Path("runs") / "busy", ["anyformer", "gpt", "fit", "--run-name", "busy"]):
        steps = runner.plan(comparison, Path("runs"))
        assert [(step.label, step.action) for step in steps] == [
            ("busy", "locked"), ("busy test", "locked"), ("free", "run")
        ]  # fmt: skip
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in steps[0].reason
        assert runner.main([str(tmp_path / "toy.yaml")]) == 1
    assert executed == ["free"], "the locked run and its test were not started"
    err = capsys.readouterr().err
    assert "left alone busy, busy test: another process is writing them" in err
    assert not (tmp_path / "runs" / "busy").exists(), "the lock's folder goes when the lock was all it held"
    assert runner.plan(comparison, Path("runs"))[0].action == "run"


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluations_of_a_running_run_are_refused_too(subcommand, tmp_path, capsys) -> None:
    """validate/test/predict write runs/<name>/<subcommand>/ and (test) run.json: one writer still."""
    holder = ["anyformer", "gpt", "fit", "--run-name", "busy"]
    with RunLock(tmp_path / "runs" / "busy", holder):
        run_cli(tmp_path, ["gpt", subcommand, "--run-name", "busy", "--data.source", "x.txt"], expect=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anyformer gpt: error: runs/busy is in use by"), lines
    assert f"`anyformer gpt fit --run-name busy`, pid {os.getpid()}" in lines[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("tool", "needed"), [("decode-eval", []), ("rollout", ["--target-return", "1"]), ("attention", [])]
)
def test_evaluation_tools_writing_a_run_take_its_lock(tool, needed, tmp_path, capsys) -> None:
    """decode-eval, rollout and attention with --run-name write runs/<name>/run.json: one writer there too.
    Refused while another command holds the run; run, and the lock let go, when it is free."""
    holder = ["anyformer", "gpt", "fit", "--run-name", "busy"]
    missing = str(tmp_path / "missing.ckpt")
    with RunLock(tmp_path / "runs" / "busy", holder):
        run_cli(tmp_path, [tool, "--ckpt", missing, "--run-name", "busy"], expect=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"anyformer {tool}: error: runs/busy is in use by"), lines
    assert f"`anyformer gpt fit --run-name busy`, pid {os.getpid()}" in lines[0]
    # Free: the tool runs (and fails on its missing checkpoint); its lock goes with it.
    run_cli(tmp_path, [tool, "--ckpt", missing, *needed, "--run-name", "free"], expect=2)
    assert "missing.ckpt" in capsys.readouterr().err
    assert holder_of(tmp_path / "runs" / "free") is None and not (tmp_path / "runs" / "free").exists()
