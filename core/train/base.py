"""Training plumbing every task's LightningModule shares: optimizer groups, the warmup +
cosine schedule, and a checkpoint that carries what inference needs (config, tokenizer,
labels), so a checkpoint alone can be reloaded."""

from __future__ import annotations

import dataclasses
import glob
import inspect
import logging
import math
import typing
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.parsing import collect_init_args
from torch import nn

from anyformer.core.cli.errors import UsageError
from anyformer.core.train.atomic import atomic_open

logger = logging.getLogger(__name__)

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


def dataclass_type(hint: Any) -> type | None:
    """The dataclass of a type hint (``Config`` or ``Config | None``), or None."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if len(options) == 1 and dataclasses.is_dataclass(options[0]) and isinstance(options[0], type):
        return options[0]
    return None


def dataclass_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a (possibly nested) config dataclass from ``dataclasses.asdict`` output."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in values:
            continue
        value, nested = values[field.name], dataclass_type(hints[field.name])
        kwargs[field.name] = dataclass_from_dict(nested, value) if nested and isinstance(value, dict) else value
    return cls(**kwargs)


def plain_hparam(value: Any) -> Any:
    """An init argument as checkpoint-safe data (``torch.load(weights_only=True)`` reads it back):
    dataclasses become dicts; containers of plain values stay; anything else raises TypeError."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return type(value)(plain_hparam(item) for item in value)
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: plain_hparam(item) for key, item in value.items()}
    raise TypeError(f"{type(value).__name__} is not plain data")


def init_kwargs(cls: type, hparams: dict[str, Any]) -> dict[str, Any]:
    """Saved hyperparameters -> ``cls.__init__`` keyword arguments: dicts of an argument typed as a
    config dataclass (``config``, ``optim``) become that dataclass again."""
    hints = typing.get_type_hints(cls.__init__)
    kwargs = dict(hparams)
    for name, value in hparams.items():
        config_class = dataclass_type(hints.get(name))
        if config_class is not None and isinstance(value, dict):
            kwargs[name] = dataclass_from_dict(config_class, value)
    return kwargs


class TaskModule(pl.LightningModule):
    """Base of every task: holds ``config`` (a dataclass) and the network ``model``, builds the
    optimizer, takes what inference needs from the training data, and stores the config plus
    ``inference_state()`` in every checkpoint under ``"anyformer"``.

    Subclasses set ``task_name`` and ``self.model``, override ``read_data`` to keep what
    inference needs, and may declare ``data_links`` (data-module attribute -> model argument)
    that the CLI wires up, so sizes known only once the data exists (vocab_size, num_classes)
    are never typed twice.

    The arguments of the subclass's constructor are saved as Lightning hyperparameters (config
    dataclasses as dicts, so ``torch.load(weights_only=True)`` reads them), so
    ``Module.load_from_checkpoint(path)`` rebuilds the module without the training config; the
    tokenizer and labels come back from the checkpoint's inference state.
    """

    task_name: ClassVar[str] = ""
    data_links: ClassVar[dict[str, str]] = {}
    hparams_ignore: ClassVar[tuple[str, ...]] = ()
    """Constructor arguments not saved as hyperparameters: ones only training uses (a path to
    initial weights), which the checkpoint's own weights replace."""

    def __init__(self, config: Any, optim: OptimConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self.optim = optim or OptimConfig()
        self.save_hyperparameters(self._constructor_hparams(inspect.currentframe()), logger=False)

    def _constructor_hparams(self, frame: Any) -> dict[str, Any]:
        """The arguments the most derived ``__init__`` was called with, as plain data.

        Lightning walks the ``__init__`` frames from here outwards; the last one is the call that
        built this object, so its arguments rebuild it. An argument that is not plain data (a
        module handed in) is left out, with a warning: such a module cannot be reloaded alone.
        """
        calls = collect_init_args(frame, [], classes=(TaskModule,))
        hparams = {}
        for name, value in (calls[-1] if calls else {}).items():
            if name in self.hparams_ignore:
                continue
            try:
                hparams[name] = plain_hparam(value)
            except TypeError as err:
                logger.warning("%s: argument %r is not saved as a hyperparameter (%s)", type(self).__name__, name, err)
        return hparams

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> TaskModule:
        """``LightningModule.load_from_checkpoint`` that rebuilds the config dataclasses.

        The saved hyperparameters are plain dicts; the arguments typed as dataclasses are rebuilt
        here and handed to Lightning as keyword arguments (``kwargs`` still override them). A
        checkpoint written before hyperparameters were saved is rebuilt from its ``anyformer``
        section (config and optimizer).
        """
        from anyformer.core.train.checkpoint import checkpoint_read_error

        mmap = isinstance(checkpoint_path, (str, Path))  # a file object cannot be memory-mapped
        try:
            # weights_only: a pickle that would build other objects (and could run code) is refused;
            # Lightning's own read below then finds the same, already checked, file.
            saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as err:  # torch raises many types for a damaged or unsafe file
            raise checkpoint_read_error(checkpoint_path, err) from None
        hparams = saved.get(cls.CHECKPOINT_HYPER_PARAMS_KEY)
        if hparams is None and "anyformer" in saved:
            hparams = {"config": saved["anyformer"]["config"], "optim": saved["anyformer"]["optim"]}
        del saved
        kwargs = {**init_kwargs(cls, hparams or {}), **kwargs}
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, **kwargs)

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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # ``load_from_checkpoint`` builds a fresh module: give it the tokenizer and labels. A fit
        # resumed by a trainer has read them from its data module already.
        if self._trainer is None and "anyformer" in checkpoint:
            self.load_inference_state(checkpoint["anyformer"]["inference"])

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

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        """Read a checkpoint to resume from (``--ckpt_path``) as data only: ``weights_only=True``
        whatever the caller asks, so a file whose pickle would run code is refused, not run.

        Raises:
            UsageError: the file is missing, unreadable, or holds more than weights and plain data.
        """
        from anyformer.core.train.checkpoint import checkpoint_read_error

        if not Path(path).is_file():
            raise UsageError(f"--ckpt_path {path} does not exist; expected a .ckpt file written by a fit")
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except Exception as err:  # torch raises many types for a damaged or unsafe file
            raise checkpoint_read_error(path, err) from None
