"""timm's ``VisionTransformer`` <-> the anyformer ViT: the weight mapping, ``init_from: timm:...``
and the export back to timm.

Where the weights come from (``ViTModule(init_from=...)``, ``--model.init_from``):

- ``timm:<name>``: ``timm.create_model(name, pretrained=True)``, e.g. ``timm:vit_tiny_patch16_224`` or
  ``timm:vit_tiny_patch16_224.augreg_in21k`` (a pretrained tag); downloaded once by huggingface_hub into
  its cache (``$HF_HOME``), so it needs the network the first time.
- ``timm:<name>@<file>``: the architecture ``name`` (timm's defaults for it), weights from a local
  ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin`` file saved from that timm model: a state dict, or a
  checkpoint holding one under ``state_dict`` / ``model`` (DeiT's release files).
- ``timm:<folder>``: timm's own folder layout (``save_for_hf``, the Hub, ``timm.create_model("local-dir:...")``):
  ``config.json`` (``architecture``, ``model_args``, ``num_classes``, ``pretrained_cfg``) and
  ``model.safetensors`` (or ``pytorch_model.bin``). :func:`export_vit_timm` writes this layout, so an
  export reloads with ``timm:<that folder>``.

The core ViT takes the timm architecture (patch size, width, depth, heads, MLP ratio, norm epsilon,
activation, pooling, positions); the data decides image size, channels and classes. Learned
positions are bicubically resampled to the data's patch grid (``resample_grid_positions``, timm's
``resample_abs_pos_embed``), the patch projection is adapted to the data's channels (timm's
``adapt_input_conv``: summed over RGB for one channel), and the classifier starts fresh when the
number of classes differs. Timm options the core cannot express are refused by name (:func:`timm_config`).

Normalization: the images are normalized by the data module (``data.mean`` / ``data.std``) in
training, evaluation and the checkpoint (``anyformer classify``); the timm weights were trained with
their own statistics (``pretrained_cfg['mean'/'std']``, 0.5/0.5 for the AugReg ViTs). Set ``data.mean``
and ``data.std`` to those for the closest start; ``ViTModule`` logs a warning when they differ.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import VisionTransformer
from timm.models._manipulate import adapt_input_conv
from torch import Tensor, nn

from anyformer.core.config import TransformerConfig
from anyformer.core.patches import resample_grid_positions, to_pair
from anyformer.vision.vit import ViT, ViTConfig

logger = logging.getLogger(__name__)

PREFIX = "timm:"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
"""The weight files of a timm folder, in the order they are looked for (timm's own preference)."""
TIMM_LAYERNORM_EPS = 1e-6
"""The epsilon of timm's ViT LayerNorms (not settable through its JSON ``model_args``)."""
TIMM_SIZES = {(192, 12, 3): "tiny", (384, 12, 6): "small", (768, 12, 12): "base", (1024, 24, 16): "large"}
"""(width, depth, heads) of timm's named ViT sizes, to name an exported architecture."""

# timm VisionTransformer key -> ours (regex substitutions, applied in order; first match wins).
_TIMM_KEYS = [
    (r"^patch_embed\.proj\.", "tokenizer.proj."),
    (r"^cls_token$", "tokenizer.cls_token"),
    (r"^pos_embed$", "tokenizer.pos_embed"),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.blocks.\1.norm1."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.blocks.\1.attn.qkv_proj."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.blocks.\1.attn.out_proj."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.blocks.\1.norm2."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"encoder.blocks.\1.mlp.fc1."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"encoder.blocks.\1.mlp.fc2."),
    (r"^norm\.", "encoder.final_norm."),
    (r"^head\.", "head."),
]


def timm_key(name: str) -> str | None:
    """Our parameter name for a timm ``VisionTransformer`` state-dict key (None if unmapped)."""
    for pattern, replacement in _TIMM_KEYS:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return None


# -- timm -> anyformer ---------------------------------------------------------------------
def _activation(act: nn.Module) -> str | None:
    """The core's name of a timm MLP activation, or None if the core has none like it."""
    if isinstance(act, nn.GELU):
        return {"none": "gelu", "tanh": "gelu_tanh"}[act.approximate]
    if type(act).__name__ == "GELUTanh":  # timm's own tanh GELU (act_layer='gelu_tanh')
        return "gelu_tanh"
    return "relu" if isinstance(act, nn.ReLU) else None


def timm_config(timm_model: nn.Module) -> ViTConfig:
    """The ``ViTConfig`` of a timm ``VisionTransformer``.

    Raises:
        ValueError: naming every timm option the core ViT cannot express.
    """
    if type(timm_model) is not VisionTransformer:  # subclasses add tokens (DeiT's distillation token)
        raise ValueError(f"a timm {type(timm_model).__name__} is not a plain timm VisionTransformer")
    m: Any = timm_model
    block = m.blocks[0]
    activation = _activation(getattr(block.mlp, "act", None))
    embed, embed_norm = type(m.patch_embed).__name__, getattr(m.patch_embed, "norm", nn.Identity())
    norms = [m.norm, m.fc_norm, block.norm1, block.norm2]
    unsupported = {
        f"global_pool={m.global_pool!r} (only 'token' and 'avg')": m.global_pool not in ("token", "avg"),
        "fc_norm (the final norm after the pooling)": not isinstance(m.fc_norm, nn.Identity),
        "register tokens (reg_tokens)": m.num_reg_tokens > 0,
        "no class token (class_token=False)": m.cls_token is None,
        "no_embed_class": m.no_embed_class,
        "layer scale (init_values)": not isinstance(block.ls1, nn.Identity),
        "q/k norm (qk_norm)": not isinstance(block.attn.q_norm, nn.Identity),
        "attention/MLP scale norms (scale_attn_norm, scale_mlp_norm)": not (
            isinstance(getattr(block.attn, "norm", nn.Identity()), nn.Identity)
            and isinstance(getattr(block.mlp, "norm", nn.Identity()), nn.Identity)
        ),
        "pre-norm before the blocks (pre_norm)": not isinstance(m.norm_pre, nn.Identity),
        f"patch embedding {embed} (embed_layer; only PatchEmbed)": embed != "PatchEmbed",
        "a norm in the patch embedding (embed_norm_layer)": not isinstance(embed_norm, nn.Identity),
        "dynamic_img_pad": getattr(m.patch_embed, "dynamic_img_pad", False),
        f"MLP {type(block.mlp).__name__} (mlp_layer; only Mlp)": type(block.mlp).__name__ != "Mlp",
        f"activation {type(getattr(block.mlp, 'act', None)).__name__} (act_layer)": activation is None,
        "norms other than LayerNorm (norm_layer)": not all(isinstance(n, (nn.LayerNorm, nn.Identity)) for n in norms),
        "no qkv bias (qkv_bias=False)": block.attn.qkv.bias is None,
        "no projection bias (proj_bias=False)": block.attn.proj.bias is None or block.mlp.fc1.bias is None,
        "attention width != embed_dim (attn head_dim)": block.attn.num_heads * block.attn.head_dim != m.embed_dim,
        "an attention-pool head (global_pool='map'/'prr')": m.attn_pool is not None,
        "no classifier head (num_classes=0)": not isinstance(m.head, nn.Linear),
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise ValueError(f"cannot build a ViT from this timm model: {', '.join(found)}")
    dim = m.embed_dim
    transformer = TransformerConfig(
        dim=dim, n_layers=len(m.blocks), n_heads=block.attn.num_heads, mlp_ratio=block.mlp.fc1.out_features / dim,
        norm_eps=block.norm1.eps, position="none", activation=activation, ffn="gelu", bias=True,
        final_norm=not isinstance(m.norm, nn.Identity),
    )  # fmt: skip
    patch, image_size = to_pair(m.patch_embed.patch_size), to_pair(m.patch_embed.img_size)
    return ViTConfig(
        image_size=image_size[0] if image_size[0] == image_size[1] else image_size,
        patch_size=patch[0] if patch[0] == patch[1] else patch,
        in_channels=m.patch_embed.proj.in_channels,
        num_classes=m.num_classes,
        pool="cls" if m.global_pool == "token" else "mean",
        position="none" if m.pos_embed is None else "learned",
        transformer=transformer,
    )


def load_timm_state_dict(vit: ViT, timm_model: nn.Module | dict[str, Tensor]) -> ViT:
    """Copy a timm ``VisionTransformer``'s weights (a model or its state dict) into ``vit``; the
    shapes must match (see :func:`adapt_timm_state_dict` for another size, channels or classes).

    Raises:
        ValueError: a timm key has no counterpart here, or the shapes disagree.
    """
    source = timm_model.state_dict() if isinstance(timm_model, nn.Module) else timm_model
    mapped, unmapped = {}, []
    for name, value in source.items():
        ours = timm_key(name)
        if ours is None:
            unmapped.append(name)
        else:
            mapped[ours] = value
    if unmapped:
        raise ValueError(f"timm weights with no ViT counterpart: {unmapped}")
    own = vit.state_dict()
    missing = sorted(set(own) - set(mapped))
    extra = sorted(set(mapped) - set(own))
    if missing or extra:
        raise ValueError(f"timm weights do not match this ViT: missing {missing}, unexpected {extra}")
    mismatched = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mapped.items() if v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(f"timm weights whose shapes differ from this ViT's (timm vs ours): {mismatched}")
    vit.load_state_dict(mapped, strict=True)
    return vit


def from_timm(timm_model: nn.Module) -> ViT:
    """A ViT with the architecture and weights of a timm ``VisionTransformer`` (same logits).

    Supported: [CLS] or mean pooling (``global_pool='token'`` / ``'avg'`` without ``fc_norm``), the
    class token inside the position table, learned or no positions, exact or tanh GELU or ReLU; no
    register tokens, layer scale or q/k norm — the plain ViT/DeiT recipe (``vit_tiny_patch16_224`` ...).
    """
    return load_timm_state_dict(ViT(timm_config(timm_model)), timm_model)


def adapt_timm_state_dict(state: dict[str, Tensor], source: ViTConfig, vit: ViT) -> dict[str, Tensor]:
    """A timm state dict of a model built as ``source``, made to fit ``vit`` (same architecture):
    positions resampled to its patch grid, the patch projection adapted to its channels, and its own
    freshly initialized classifier when the number of classes differs."""
    target, state = vit.cfg, dict(state)
    if "pos_embed" in state and source.grid_size != target.grid_size:
        state["pos_embed"] = resample_grid_positions(state["pos_embed"], source.grid_size, target.grid_size)
    if source.in_channels != target.in_channels:
        try:
            state["patch_embed.proj.weight"] = adapt_input_conv(target.in_channels, state["patch_embed.proj.weight"])
        except NotImplementedError as err:
            raise ValueError(
                f"cannot adapt the patch projection from {source.in_channels} to {target.in_channels} channels"
            ) from err
    if source.num_classes != target.num_classes:
        state["head.weight"], state["head.bias"] = vit.head.weight.detach(), vit.head.bias.detach()
    return state


@dataclasses.dataclass
class PretrainedViT:
    """A ViT initialized from timm weights, and the normalization those weights were trained with."""

    model: ViT
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def parse_spec(spec: str) -> tuple[str | None, Path | None]:
    """``timm:<name>`` -> (name, None); ``timm:<name>@<file>`` -> (name, file); ``timm:<folder>`` -> (None, folder).

    Raises:
        ValueError: not a ``timm:`` spec, or a weights file without the architecture's name.
    """
    if not spec.startswith(PREFIX) or len(spec) == len(PREFIX):
        raise ValueError(
            f"init_from={spec!r}: expected 'timm:<model name>', 'timm:<model name>@<weights file>' or "
            "'timm:<folder with config.json>'"
        )
    rest = spec[len(PREFIX) :]
    if "@" in rest and not rest.startswith("hf-hub:"):
        name, _, file = rest.partition("@")
        return name, Path(file).expanduser()
    path = Path(rest).expanduser()
    if path.is_dir():
        return None, path
    if path.suffix in WEIGHT_SUFFIXES:
        raise ValueError(
            f"init_from={spec!r}: a weights file needs its timm architecture, 'timm:<model name>@{rest}' "
            "(or a folder holding timm's config.json)"
        )
    if "/" in rest and not rest.startswith("hf-hub:"):
        raise ValueError(f"init_from={spec!r}: folder {path} does not exist (expected timm's config.json + weights)")
    return rest, None


def read_timm_weights(path: Path, what: str) -> dict[str, Tensor]:
    """A state dict from a ``.safetensors`` / ``.pth`` / ``.bin`` file (or a checkpoint holding one)."""
    if not path.is_file():
        raise ValueError(f"{what}: weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors, zip and pickle readers raise many types for a bad file
        raise ValueError(f"{what}: {path} is not a readable weights file ({_one_line(err)})") from err
    if isinstance(loaded, dict) and "anyformer" in loaded:
        raise ValueError(f"{what}: {path} is an anyformer checkpoint, not timm weights")
    for key in ("state_dict", "model"):  # timm train checkpoints, DeiT release files
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ValueError(f"{what}: {path} holds no state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def _load_strict(model: nn.Module, state: dict[str, Tensor], what: str, arch: str) -> None:
    """``model.load_state_dict(state)`` with one line naming what does not fit."""
    from timm.models.vision_transformer import checkpoint_filter_fn  # other ViT layouts -> timm's

    try:
        state = checkpoint_filter_fn(state, model)
    except Exception as err:  # the converter indexes and reshapes whatever the file holds
        raise ValueError(f"{what}: the weights are not a timm ViT state dict ({_one_line(err)})") from err
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    found = {"missing": missing, "unexpected": unexpected, "of another shape (file vs model)": shapes}
    problems = [
        f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
        for label, items in found.items()
        if items
    ]
    if problems:
        raise ValueError(f"{what}: the weights do not fit the timm model {arch!r}: {'; '.join(problems)}")
    model.load_state_dict(state)


def _create(arch: str, what: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(arch, **kwargs)`` with one-line errors naming ``arch``."""
    if not arch.startswith("hf-hub:") and not timm.is_model(arch):
        raise ValueError(f"{what}: {arch!r} is not a timm model name (timm.list_models('vit_*') lists its ViTs)")
    try:
        model = timm.create_model(arch, **kwargs)
    except TypeError as err:  # an argument this architecture does not take
        raise ValueError(f"{what}: timm cannot build {arch!r} with {sorted(kwargs)} ({_one_line(err)})") from err
    except (OSError, RuntimeError, ValueError) as err:  # offline, not in the cache, no pretrained weights
        raise ValueError(
            f"{what}: cannot load the pretrained timm weights of {arch!r} ({_one_line(err)}); without the "
            "network, give a local copy: 'timm:<name>@<weights file>' or 'timm:<folder>'"
        ) from err
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"{what}: {arch!r} is a timm {type(model).__name__}, not a VisionTransformer")
    return model


def _read_folder(folder: Path, what: str) -> nn.Module:
    """The timm model of a ``config.json`` + weights folder, with its weights."""
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        arch, model_args = config["architecture"], dict(config.get("model_args") or {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{what}: {config_path} is not a timm config.json with an 'architecture' ({_one_line(err)})"
        ) from err
    if config.get("num_classes") is not None:
        model_args.setdefault("num_classes", config["num_classes"])
    stats = {k: v for k, v in (config.get("pretrained_cfg") or {}).items() if k in ("mean", "std")}
    model = _create(arch, what, pretrained=False, pretrained_cfg_overlay=stats, **model_args)
    weights = next((folder / name for name in FOLDER_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise ValueError(f"{what}: {folder} holds none of {list(FOLDER_WEIGHTS)}")
    _load_strict(model, read_timm_weights(weights, what), what, arch)
    return model


def open_timm(spec: str) -> nn.Module:
    """The timm ``VisionTransformer`` a ``timm:...`` spec names, at its own size, with its weights.

    Raises:
        ValueError: one line naming the spec and what is wrong (unknown name, offline, unreadable
            or mismatched weights, not a ViT).
    """
    name, path = parse_spec(spec)
    what = f"init_from={spec!r}"
    if name is None:
        return _read_folder(path, what)  # type: ignore[arg-type]
    if path is None:
        with torch.device("meta"):  # refuse an architecture the core cannot build before downloading it
            skeleton = _create(name, what, pretrained=False)
        try:
            timm_config(skeleton)
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from None
        return _create(name, what, pretrained=True)
    state = read_timm_weights(path, what)
    model = _create(name, what, pretrained=False, **_sizes_of(state))
    _load_strict(model, state, what, name)
    return model


def _sizes_of(state: dict[str, Tensor]) -> dict[str, Any]:
    """The classes, channels and (square) image size a timm ViT state dict was saved at, as far as
    its shapes tell: the named architecture is then built at that size and loads it unchanged."""
    sizes: dict[str, Any] = {}
    head, proj, pos = state.get("head.weight"), state.get("patch_embed.proj.weight"), state.get("pos_embed")
    if head is not None and head.ndim == 2:
        sizes["num_classes"] = head.shape[0]
    if proj is not None and proj.ndim == 4:
        sizes["in_chans"] = proj.shape[1]
        side = math.isqrt(pos.shape[1] - 1) if pos is not None and pos.ndim == 3 and pos.shape[1] > 1 else 0
        if side and side * side == pos.shape[1] - 1 and proj.shape[2] == proj.shape[3]:  # type: ignore[union-attr]
            sizes["img_size"] = side * proj.shape[2]
    return sizes


def pretrained_vit(spec: str, config: ViTConfig) -> PretrainedViT:
    """A ViT with the architecture and weights of a timm model, sized by ``config``'s data-linked
    fields (``image_size``, ``in_channels``, ``num_classes``); ``config``'s dropouts are kept, its
    other fields are replaced by the timm model's.

    Raises:
        ValueError: the spec cannot be read, the timm model has options the core cannot express, or
            the data's images do not tile into its patches.
    """
    timm_model = open_timm(spec)
    try:
        source = timm_config(timm_model)
    except ValueError as err:
        raise ValueError(f"init_from={spec!r}: {err}") from None
    t = dataclasses.replace(
        source.transformer, dropout=config.transformer.dropout, attn_dropout=config.transformer.attn_dropout
    )
    try:
        target = dataclasses.replace(
            source, image_size=config.image_size, in_channels=config.in_channels, num_classes=config.num_classes,
            transformer=t,
        )  # fmt: skip
    except ValueError as err:
        raise ValueError(f"init_from={spec!r} (patch size {source.patch_size}) and the data: {err}") from None
    changed = [
        f"{prefix}{field.name}={getattr(ours, field.name)!r}->{getattr(theirs, field.name)!r}"
        for prefix, ours, theirs in (("", config, target), ("transformer.", config.transformer, target.transformer))
        for field in dataclasses.fields(ours)
        if field.name != "transformer" and getattr(ours, field.name) != getattr(theirs, field.name)
    ]
    if changed:
        logger.info("init_from=%s: the architecture is the timm model's: %s", spec, ", ".join(changed))
    vit = ViT(target)
    try:
        load_timm_state_dict(vit, adapt_timm_state_dict(timm_model.state_dict(), source, vit))
    except ValueError as err:
        raise ValueError(f"init_from={spec!r}: {err}") from None
    cfg = timm_model.pretrained_cfg
    return PretrainedViT(vit, tuple(cfg.get("mean", (0.5,) * 3)), tuple(cfg.get("std", (0.5,) * 3)))


def expected_normalization(pretrained: PretrainedViT, channels: int) -> tuple[list[float], list[float]]:
    """The mean/std the timm weights expect, for ``channels`` input channels: the channel average
    for one channel (``adapt_input_conv`` sums the RGB filters, as for a gray image repeated to RGB)."""
    if channels == len(pretrained.mean):
        return list(pretrained.mean), list(pretrained.std)
    mean, std = sum(pretrained.mean) / len(pretrained.mean), sum(pretrained.std) / len(pretrained.std)
    return [mean] * channels, [std] * channels
