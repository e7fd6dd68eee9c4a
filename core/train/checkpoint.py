"""Reading anyformer checkpoints back for inference, without the training config."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import torch

from anyformer.core.cli.errors import UsageError
from anyformer.core.cli.tasks import TASKS, resolve
from anyformer.core.train.base import OptimConfig, TaskModule, dataclass_from_dict


class CheckpointError(UsageError):
    """A checkpoint file that is missing, unreadable, or not for the command at hand."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist (expected a .ckpt file written by `anyformer ... fit`)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(
            f"checkpoint {path} could not be read ({type(err).__name__}: {err}); is it truncated?"
        ) from err
    if not isinstance(checkpoint, dict) or "anyformer" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not an anyformer checkpoint (no 'anyformer' section)")
    return checkpoint


def load_task(path: str | Path, *, tasks: tuple[str, ...] | None = None) -> TaskModule:
    """Rebuild the trained LightningModule from a checkpoint alone, in eval mode on the CPU.

    Args:
        path: the .ckpt file.
        tasks: the task names the caller can use; another task's checkpoint is an error.
    """
    checkpoint = read_checkpoint(path)
    meta = checkpoint["anyformer"]
    task = meta["task"]
    if task not in TASKS:
        raise CheckpointError(f"{path} holds task {task!r}, which this version does not know ({sorted(TASKS)})")
    if tasks is not None and task not in tasks:
        raise CheckpointError(f"{path} is a {task!r} checkpoint; this command needs one of {list(tasks)}")
    cls = resolve(TASKS[task].model)
    config_class = typing.get_type_hints(cls.__init__)["config"]
    model = cls(
        config=dataclass_from_dict(config_class, meta["config"]), optim=dataclass_from_dict(OptimConfig, meta["optim"])
    )
    model.load_state_dict(checkpoint["state_dict"])
    model.load_inference_state(meta["inference"])
    return model.eval()
