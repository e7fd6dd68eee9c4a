"""A process SIGKILLed in the middle of writing a checkpoint leaves the previous one intact."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from anyformer.core.train.base import AtomicCheckpointIO


def _save_half_then_hang(path: Path, half_written: multiprocessing.synchronize.Event) -> None:
    """In the child: start saving a new checkpoint, get half of its bytes onto the disk, then stall."""
    real_save = torch.save

    def slow_save(obj: object, file: io.BufferedWriter) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        os.fsync(file.fileno())
        half_written.set()
        time.sleep(120)  # the parent kills us here
        file.write(data[len(data) // 2 :])

    torch.save = slow_save  # only in this forked child
    AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(10_000)}, path)


def test_sigkill_mid_save_keeps_the_previous_checkpoint(tmp_path) -> None:
    path = tmp_path / "last.ckpt"
    io_plugin = AtomicCheckpointIO()
    io_plugin.save_checkpoint({"weights": torch.ones(10_000)}, path)

    # fork: the child needs no fresh import of torch and Lightning, only the code above.
    context = multiprocessing.get_context("fork")
    half_written = context.Event()
    child = context.Process(target=_save_half_then_hang, args=(path, half_written))
    child.start()
    try:
        assert half_written.wait(timeout=120), "the child never started writing"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL

    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.ones(10_000))
    (partial,) = (p for p in tmp_path.iterdir() if p.name != "last.ckpt")  # the killed save's temporary file
    with pytest.raises((RuntimeError, OSError)):  # torch's error for a torn zip varies
        torch.load(partial, weights_only=True)  # what last.ckpt would be without the rename

    io_plugin.save_checkpoint({"weights": torch.full((10_000,), 2.0)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # the next save removes the leftover
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.full((10_000,), 2.0))
