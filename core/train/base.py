"""Training plumbing every task's LightningModule shares: optimizer groups, the warmup +
cosine schedule, and a checkpoint that carries what inference needs (config, tokenizer,
labels), so a checkpoint alone can be reloaded."""

from __future__ import annotations

import dataclasses
import glob
import math
import typing
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from anyformer.core.train.atomic import atomic_open

FORMAT_VERSION = 1


@dataclasses.dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay, stepped every optimizer step."""

    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (never on norms, biases or embeddings)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.99
    """AdamW beta2."""
    warmup_steps: int = 100
    """Steps of linear warmup from 0 to lr."""
    min_lr_ratio: float = 0.1
    """The cosine ends at lr * min_lr_ratio."""
    decay_steps: int | None = None
    """Length of warmup + cosine; None uses the trainer's total steps."""


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Full names of the parameters that ``model`` or any submodule lists in ``no_weight_decay()``.

    Each submodule names its own parameters; they are prefixed with its path, as timm does, so a
    wrapper (a task module around a ViT) needs no forwarding code.

    Raises:
        ValueError: a listed name is not a parameter of the submodule that lists it.
    """
    known = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    names = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if not callable(listed):
            continue
        full = {name: f"{prefix}.{name}" if prefix else name for name in listed()}
        unknown = sorted(name for name, path in full.items() if path not in known)
        if unknown:
            raise ValueError(f"{type(module).__name__}.no_weight_decay() lists {unknown}, which are not its parameters")
        names |= set(full.values())
    return names


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into a decayed group (weight matrices) and a non-decayed one.

    Norm weights, biases, embeddings, and any name listed by the ``no_weight_decay()`` of the
    model or a submodule are not decayed: shrinking them toward zero regularizes nothing useful.
    """
    skip = no_weight_decay_names(model)
    no_decay_modules = (nn.Embedding, nn.LayerNorm, nn.RMSNorm)
    decay, no_decay, seen = [], [], set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            name = f"{module_name}.{param_name}" if module_name else param_name
            if not param.requires_grad or id(param) in seen:
                continue  # tied weights are listed once
            seen.add(id(param))
            if isinstance(module, no_decay_modules) or param.ndim < 2 or name in skip:
                no_decay.append(param)
            else:
                decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier at ``step``: linear warmup, then cosine down to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def dataclass_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) config dataclass from ``dataclasses.asdict`` output."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value, hint = values[field.name], hints[field.name]
        kwargs[field.name] = dataclass_from_dict(hint, value) if dataclasses.is_dataclass(hint) else value
    return cls(**kwargs)


class TaskModule(pl.LightningModule):
    """Base of every task: holds ``config`` (a dataclass) and the network ``model``, builds the
    optimizer, takes what inference needs from the training data, and stores the config plus
    ``inference_state()`` in every checkpoint under ``"anyformer"``.

    Subclasses set ``task_name`` and ``self.model``, override ``read_data`` to keep what
    inference needs, and may declare ``data_links`` (data-module attribute -> model argument)
    that the CLI wires up, so sizes known only once the data exists (vocab_size, num_classes)
    are never typed twice.
    """

    task_name: ClassVar[str] = ""
    data_links: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Any, optim: OptimConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.optim = optim or OptimConfig()

    # -- inference state -------------------------------------------------------------
    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        if data is not None:  # None when fit was given bare dataloaders
            self.read_data(data)

    def read_data(self, data: pl.LightningDataModule) -> None:
        """Keep what inference needs from the attached data module (tokenizer, class names,
        statistics); called by ``setup`` before every fit, validate, test or predict."""

    def inference_state(self) -> dict[str, Any]:
        """JSON-like state, beyond weights and config, that inference needs (tokenizer, labels)."""
        return {}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        """Restore what ``inference_state`` saved."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A finite loss can still give inf gradients and so non-finite weights; refusing to save
        # them keeps the previous checkpoint as the last good one.
        broken = [name for name, param in self.named_parameters() if not torch.isfinite(param).all()]
        if broken:
            raise FloatingPointError(
                f"non-finite weights at step {self.global_step} ({', '.join(broken[:3])}"
                f"{', ...' if len(broken) > 3 else ''}); not saving them, the last saved checkpoint is intact"
            )
        checkpoint["anyformer"] = {
            "format_version": FORMAT_VERSION,
            "task": self.task_name,
            "config": dataclasses.asdict(self.config),
            "optim": dataclasses.asdict(self.optim),
            "inference": self.inference_state(),
        }

    # -- logging ---------------------------------------------------------------------
    def log(self, name: str, value: Any, *args: Any, sync_dist: bool = True, **kwargs: Any) -> None:
        """``LightningModule.log`` with ``sync_dist=True`` by default.

        Under DDP each rank sees its own part of a batch or of the validation set; averaging over
        ranks makes a logged value (and a checkpoint's monitor) describe the whole, not rank 0's
        part. On one device it changes nothing.
        """
        super().log(name, value, *args, sync_dist=sync_dist, **kwargs)

    def log_dict(self, dictionary: Any, *args: Any, sync_dist: bool = True, **kwargs: Any) -> None:
        """``LightningModule.log_dict`` with ``sync_dist=True`` by default, as :meth:`log`."""
        super().log_dict(dictionary, *args, sync_dist=sync_dist, **kwargs)

    def on_fit_start(self) -> None:
        n_parameters = sum(p.numel() for p in self.model.parameters())  # tied weights once
        for logger in self.loggers:  # the run reports read the model size from its hparams
            logger.log_hyperparams({"n_parameters": n_parameters})

    # -- optimization ----------------------------------------------------------------
    def configure_optimizers(self):
        groups = param_groups(self, self.optim.weight_decay)
        # The fused kernel is ~3.5x faster than the per-tensor loop on CPU (experiments/bench). Lightning's
        # mixed-precision plugin refuses to clip the gradients of a fused optimizer, so mixed runs keep the loop.
        mixed = "mixed" in str(getattr(self._trainer, "precision", "32-true"))
        optimizer = torch.optim.AdamW(
            groups, lr=self.optim.lr, betas=(self.optim.beta1, self.optim.beta2), fused=not mixed
        )
        total = self.optim.decay_steps or int(self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, self.optim.warmup_steps, total, self.optim.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def check_finite(self, loss: torch.Tensor) -> None:
        """Stop training on a NaN/inf loss instead of silently corrupting the weights."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at step {self.global_step}; "
                "the last saved checkpoint is intact — lower the learning rate or check the data"
            )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place (``anyformer.core.train.atomic``).

    A process killed mid-save leaves the previous checkpoint untouched instead of a
    truncated file under its name. A save killed by SIGKILL cannot remove its temporary
    file (``.<name>.<random>.tmp``, which ``--ckpt_path last`` never picks); the next save
    of the same checkpoint does.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
        with atomic_open(path, "wb") as file:
            torch.save(checkpoint, file)
