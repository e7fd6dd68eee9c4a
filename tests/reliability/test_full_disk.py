"""A full disk (ENOSPC) during each writer (checkpoint, tokenizer, report, run.json, trajectories)
leaves the previous good file intact and no temporary file, and stops with one clear line; a fit
that was running exits 1 naming the file and "no space left".

The disk is simulated: every file ``atomic_open`` writes goes through a wrapper that, once the disk
is "full", writes part of the bytes and then raises ``OSError(ENOSPC)``, as a real full disk does
(mid-write, after some data reached the file).
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from anyformer.core.train import atomic
from anyformer.core.train.atomic import DiskFullError
from anyformer.core.train.base import AtomicCheckpointIO
from anyformer.core.train.run_record import read_record, write_record
from anyformer.experiments.report import write_report
from anyformer.rl.trajectories import Trajectories, load_trajectories, save_trajectories
from anyformer.text.tokenizer import CharTokenizer, load_tokenizer
from tests.helpers import run_cli
from tests.reliability.tiny_gpt import fit_args, write_corpus


class FullDisk:
    """Patches ``atomic_open``'s files: full from the start (``name`` None), or, for files named
    ``name`` only, once ``fill_after`` of them were written: a nearly full disk on which the small
    files (metrics, run.json) still fit and the next checkpoint does not."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str | None = None, fill_after: int = 0) -> None:
        self.name, self.left, self.full = name, fill_after, name is None
        real_fdopen = os.fdopen

        def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            final = re.sub(r"^\.(.*)\.[^.]+\.tmp$", r"\1", Path(os.readlink(f"/proc/self/fd/{fd}")).name)
            return _File(real_fdopen(fd, *args, **kwargs), self, final)

        monkeypatch.setattr(atomic.os, "fdopen", fdopen)


class _File:
    def __init__(self, file: Any, disk: FullDisk, final: str) -> None:
        self._file, self._disk, self._final = file, disk, final

    def write(self, data: Any) -> int:
        if self._disk.full and self._disk.name in (None, self._final):
            self._file.write(data[: len(data) // 2])  # some bytes got onto the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(data)

    def close(self) -> None:
        self._file.close()
        if self._final == self._disk.name and not self._disk.full:
            self._disk.left -= 1
            self._disk.full = self._disk.left <= 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> _File:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_refused(raised: pytest.ExceptionInfo[DiskFullError], path: Path, before: bytes) -> None:
    message = str(raised.value)
    assert raised.value.errno == errno.ENOSPC and "\n" not in message
    assert f"no space left on device while writing {path} (the previous {path.name} is intact)" in message
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_checkpoint(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(1000)}, path)
    before = path.read_bytes()
    FullDisk(monkeypatch)
    with pytest.raises(DiskFullError) as raised:
        AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(1000)}, path)
    _check_refused(raised, path, before)
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.ones(1000))


def test_tokenizer(tmp_path, monkeypatch) -> None:
    path = tmp_path / "tokenizer.json"
    CharTokenizer.train(["abc"]).save(path)
    before = path.read_bytes()
    FullDisk(monkeypatch)
    with pytest.raises(DiskFullError) as raised:
        CharTokenizer.train(["abcdef" * 1000]).save(path)
    _check_refused(raised, path, before)
    assert load_tokenizer(path).vocab_size == CharTokenizer.train(["abc"]).vocab_size


def test_run_record(tmp_path, monkeypatch) -> None:
    write_record(tmp_path, {"format": 1, "status": "finished"})
    path = tmp_path / "run.json"
    before = path.read_bytes()
    FullDisk(monkeypatch)
    with pytest.raises(DiskFullError) as raised:
        write_record(tmp_path, {"format": 1, "status": "running", "pad": "x" * 10_000})
    _check_refused(raised, path, before)
    assert read_record(tmp_path)["status"] == "finished"


def test_trajectories(tmp_path, monkeypatch) -> None:
    path = tmp_path / "data.npz"
    data = Trajectories(
        observations=np.zeros((3, 4)), actions=[0, 1, 0], rewards=[1.0, 1.0, 1.0], terminations=[False, True, True],
        truncations=[False, False, False], episode_starts=[0, 2], meta={"env_id": "CartPole-v1"},
    )  # fmt: skip
    save_trajectories(path, data)
    before = path.read_bytes()
    FullDisk(monkeypatch)
    with pytest.raises(DiskFullError) as raised:
        save_trajectories(path, data)
    _check_refused(raised, path, before)
    assert len(load_trajectories(path)) == 2


def test_report_through_the_command(tmp_path, monkeypatch, capsys) -> None:
    from anyformer.core.cli.main import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "comparisons").mkdir()
    write_report([], tmp_path / "runs", tmp_path / "results")
    path = tmp_path / "results" / "RESULTS.md"
    before = path.read_bytes()
    FullDisk(monkeypatch)
    with pytest.raises(DiskFullError) as raised:
        write_report([], tmp_path / "runs", tmp_path / "results")
    _check_refused(raised, path, before)
    capsys.readouterr()
    (tmp_path / "a.yaml").write_text("seed_everything: 1\n")
    runs = "runs: [{name: one, task: gpt, config: a.yaml}]\n"
    (tmp_path / "comparisons" / "x.yaml").write_text(f"title: X\n{runs}tables: [{{title: T, columns: [val_loss]}}]\n")
    argv = ["report", "--runs", "runs", "--out", "results", "--comparisons", "comparisons", "--readme", "none.md"]
    code = main(argv)
    out, err = capsys.readouterr()
    if code == 2:  # the comparison file itself was refused: then the disk is not what this row tests
        pytest.fail(err)
    assert code == 1 and out == "", err
    assert err.startswith("anyformer report: stopped: no space left on device while writing results/RESULTS.md")
    assert err.count("\n") == 1 and path.read_bytes() == before


def test_a_fit_stops_with_exit_1_and_keeps_its_last_good_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    corpus = write_corpus(tmp_path)
    FullDisk(monkeypatch, name="last.ckpt", fill_after=1)  # the step-10 checkpoint fits, the disk fills after it
    run_cli(tmp_path, fit_args("full", corpus, {"trainer.max_steps": 20}), expect=1)
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("anyformer gpt")]
    last = tmp_path / "runs" / "full" / "checkpoints" / "last.ckpt"
    assert lines == [
        f"anyformer gpt: stopped: no space left on device while writing {Path('runs/full/checkpoints/last.ckpt')} "
        "(the previous last.ckpt is intact); free some space and rerun"
    ], err
    assert "Traceback" not in err
    assert torch.load(last, weights_only=True)["global_step"] == 10
    assert not list((tmp_path / "runs").rglob("*.tmp"))
    record = json.loads((tmp_path / "runs" / "full" / "run.json").read_text())
    assert record["status"] == "failed" and record["step"] == 20, "the record still fits and says how the fit ended"
