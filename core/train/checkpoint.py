"""Reading anyformer checkpoints back for inference, without the training config.

A checkpoint is a ``.ckpt`` file written by ``anyformer <task> fit``, or a folder written by
``anyformer export --format safetensors``: the weights as ``model.safetensors`` (no pickle) and the
checkpoint's ``"anyformer"`` section (task, config, optimizer, tokenizer, labels) as ``anyformer.json``.
Both rebuild the same module (:func:`load_task`).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import typing
from pathlib import Path
from typing import Any

import torch

from anyformer.core.cli.errors import UsageError
from anyformer.core.cli.tasks import TASKS, resolve
from anyformer.core.train.base import OptimConfig, TaskModule, dataclass_from_dict, dataclass_type

WEIGHTS_FILE = "model.safetensors"
"""The weights of a safetensors export: every tensor of the state dict, tied copies once."""
META_FILE = "anyformer.json"
"""The checkpoint's ``"anyformer"`` section, plus ``export`` (the format) and ``tied_weights``
(name -> the name whose tensor it shares, e.g. GPT's LM head -> its token embedding)."""


class CheckpointError(UsageError):
    """A checkpoint file that is missing, unreadable, or not for the command at hand."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict (``"anyformer"`` section and ``"state_dict"``) on the CPU, from a .ckpt
    file or a safetensors export folder, with errors that name the file."""
    path = Path(path)
    if path.is_dir():
        return read_weights_folder(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist (expected a .ckpt file written by `anyformer ... fit`"
            " or a folder written by `anyformer export --format safetensors`)"
        )
    try:
        # weights_only: tensors and plain data only; a pickle that would build other objects
        # (and so could run code) is refused by torch before anything is built.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged zip/pickle
        raise checkpoint_read_error(path, err) from None
    if not isinstance(checkpoint, dict) or "anyformer" not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not an anyformer checkpoint (no 'anyformer' section)")
    return checkpoint


def checkpoint_read_error(path: str | Path, err: BaseException) -> CheckpointError:
    """The one-line error for a checkpoint ``torch.load(weights_only=True)`` refused or could not read."""
    if isinstance(err, pickle.UnpicklingError) and "Weights only load failed" in str(err):
        # torch's message runs to a dozen lines; its first "Unsupported global" names the object.
        found = next((line for line in str(err).splitlines() if "Unsupported" in line), "")
        detail = found[found.find("Unsupported") :].split(" was not ")[0].strip() if found else ""
        return CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data ({detail or 'refused by torch'});"
            " refused without loading it, since unpickling such a file can run arbitrary code"
        )
    return CheckpointError(f"checkpoint {path} could not be read ({type(err).__name__}: {err}); is it truncated?")


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
    config = dataclass_from_dict(config_class, restore_tuples(config_class, meta["config"]))
    model = cls(config=config, optim=dataclass_from_dict(OptimConfig, meta["optim"]))
    model.load_state_dict(checkpoint["state_dict"])
    model.load_inference_state(meta["inference"])
    return model.eval()


def restore_tuples(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` of the config dataclass ``cls`` with lists turned back into tuples where the field
    is typed as one (``obs_shape``, ``image_size``): JSON has no tuples. A no-op for a .ckpt's config."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for field in dataclasses.fields(cls):
        value, hint = values.get(field.name), hints[field.name]
        nested = dataclass_type(hint)
        if nested is not None and isinstance(value, dict):
            out[field.name] = restore_tuples(nested, value)
        elif isinstance(value, list) and any(typing.get_origin(h) is tuple for h in (hint, *typing.get_args(hint))):
            out[field.name] = tuple(value)
    return out


# -- safetensors export folders ------------------------------------------------------------
def save_weights_folder(module: TaskModule, folder: Path) -> None:
    """Write ``module`` into the existing ``folder`` as ``model.safetensors`` + ``anyformer.json``.

    The JSON is the ``"anyformer"`` section a .ckpt of this module carries (``on_save_checkpoint``).
    safetensors stores no tensor twice: a weight tied to another (GPT's LM head and token embedding)
    is written once, and ``tied_weights`` names it so :func:`read_weights_folder` ties it again.
    """
    from safetensors.torch import save_file

    checkpoint: dict[str, Any] = {}
    module.on_save_checkpoint(checkpoint)
    tensors, tied = _untie(module.state_dict())
    meta = {**checkpoint["anyformer"], "export": "safetensors", "tied_weights": tied}
    save_file(tensors, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def _untie(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors to save, {tied name: saved name}). A tensor that only overlaps another is copied."""
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    views: dict[tuple[Any, ...], str] = {}
    storages: set[int] = set()
    for name, tensor in state.items():
        tensor = tensor.detach()
        storage = tensor.untyped_storage().data_ptr()
        view = (storage, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if view in views and tensor.numel():
            tied[name] = views[view]
            continue
        views[view] = name
        shares = storage in storages or not tensor.is_contiguous()
        tensors[name] = tensor.clone(memory_format=torch.contiguous_format) if shares else tensor
        storages.add(storage)
    return tensors, tied


def read_weights_folder(folder: Path) -> dict[str, Any]:
    """A safetensors export folder as a checkpoint dict (``"anyformer"``, ``"state_dict"``), tied weights tied."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path, weights_path = folder / META_FILE, folder / WEIGHTS_FILE
    if not meta_path.is_file():
        raise CheckpointError(
            f"{folder} is a folder without {META_FILE}; expected a .ckpt file or a folder written by "
            "`anyformer export --format safetensors`"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{meta_path} could not be read ({type(err).__name__}: {err})") from err
    if not isinstance(meta, dict) or not {"task", "config", "optim", "inference"} <= meta.keys():
        raise CheckpointError(f"{meta_path} is not an anyformer export description (no task, config, ...)")
    if meta.get("export") != "safetensors":
        raise CheckpointError(
            f"{folder} is an {meta.get('export')!r} export, which only its runtime reads; anyformer reads .ckpt "
            "files and `anyformer export --format safetensors` folders"
        )
    if not weights_path.is_file():
        raise CheckpointError(f"{folder} has {META_FILE} but no {WEIGHTS_FILE}; is the export incomplete?")
    try:
        state = load_file(weights_path)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{weights_path} could not be read ({type(err).__name__}: {err})") from err
    for name, source in meta.get("tied_weights", {}).items():
        if source not in state:
            raise CheckpointError(f"{meta_path} ties {name!r} to {source!r}, which {WEIGHTS_FILE} lacks")
        state[name] = state[source]
    return {"anyformer": meta, "state_dict": state}
