"""The anyformer ViT -> timm's ``VisionTransformer`` (``anyformer export --format hf`` for ``vit``): the
architecture arguments, the state dict and the folder timm's ``create_model("local-dir:...")`` loads.
Options timm's ViT cannot express are refused by name (:func:`timm_args`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import timm
from torch import Tensor, nn

from anyformer.core.patches import to_pair
from anyformer.vision.timm import TIMM_LAYERNORM_EPS, TIMM_SIZES, timm_key
from anyformer.vision.vit import ViT, ViTConfig


def timm_args(cfg: ViTConfig) -> dict[str, Any]:
    """The ``timm.create_model`` keyword arguments that build ``cfg``'s network as a timm ViT.

    Raises:
        ValueError: naming every option timm's ``VisionTransformer`` cannot express.
    """
    t = cfg.transformer
    patch = to_pair(cfg.patch_size)
    refused = {
        f"stem={cfg.stem!r} (timm's ViT has the linear patch projection)": cfg.stem != "patch",
        "position='sinusoidal' (timm's ViT learns its positions or has none)": cfg.position == "sinusoidal",
        f"patch_stride={cfg.patch_stride!r} (overlapping patches)": cfg.patch_stride is not None
        and to_pair(cfg.patch_stride) != patch,
        "pad=True (zero padding at the bottom/right edges)": cfg.pad,
        "distill=True (DeiT's distillation token: timm's VisionTransformerDistilled, not exported)": cfg.distill,
        f"transformer.norm={t.norm!r}": t.norm != "layernorm",
        f"transformer.norm_position={t.norm_position!r}": t.norm_position != "pre",
        f"transformer.ffn={t.ffn!r}": t.ffn != "gelu",
        "transformer.bias=False": not t.bias,
        f"transformer.n_experts={t.n_experts}": t.n_experts > 0,
        "transformer.input_norm=True": t.input_norm,
        "transformer.locality_self_attention=True (a learned temperature and masked diagonal)": (
            t.locality_self_attention
        ),
        f"transformer.norm_eps={t.norm_eps} (timm's ViT LayerNorms use {TIMM_LAYERNORM_EPS})": not math.isclose(
            t.norm_eps, TIMM_LAYERNORM_EPS
        ),
    }
    found = [name for name, present in refused.items() if present]
    if found:
        raise ValueError(f"timm's VisionTransformer cannot express this ViT: {', '.join(found)}")
    size = to_pair(cfg.image_size)
    args: dict[str, Any] = {
        "img_size": list(size),
        "patch_size": list(patch),
        "in_chans": cfg.in_channels,
        "num_classes": cfg.num_classes,
        "embed_dim": t.dim,
        "depth": t.n_layers,
        "num_heads": t.n_heads,
        "mlp_ratio": t.mlp_ratio,
        "class_token": True,
        "global_pool": "token" if cfg.pool == "cls" else "avg",
        "qkv_bias": True,
    }
    if cfg.pool == "mean":
        args["fc_norm"] = False  # ours normalizes every token, then averages
    if cfg.position == "none":
        args["pos_embed"] = "none"
    if not t.use_final_norm:
        args["final_norm"] = False
    if t.drop_path:
        args["drop_path_rate"] = t.drop_path  # timm spreads it over the blocks as we do: linspace(0, rate, depth)
    if t.activation != "gelu":
        args["act_layer"] = t.activation  # timm's names: 'gelu_tanh', 'relu'
    return args


def timm_architecture(cfg: ViTConfig) -> str:
    """A registered timm ViT name for ``cfg``: ``vit_<size>_patch<P>_224`` when that size exists,
    else ``vit_base_patch16_224``; the exported ``model_args`` override every default either way."""
    t, patch = cfg.transformer, to_pair(cfg.patch_size)
    size = TIMM_SIZES.get((t.dim, t.n_layers, t.n_heads))
    name = f"vit_{size}_patch{patch[0]}_224"
    return name if size is not None and patch[0] == patch[1] and timm.is_model(name) else "vit_base_patch16_224"


def timm_state_dict(vit: ViT, timm_model: nn.Module) -> dict[str, Tensor]:
    """``vit``'s weights under ``timm_model``'s state-dict names (every one of both must be used)."""
    own = vit.state_dict()
    names = {key: timm_key(key) for key in timm_model.state_dict()}
    missing = sorted(key for key, ours in names.items() if ours not in own)
    unused = sorted(set(own) - set(names.values()))
    if missing or unused:
        raise ValueError(f"no timm counterpart: timm keys {missing} lack ours, our keys {unused} lack timm's")
    return {key: own[ours].detach().cpu().contiguous() for key, ours in names.items()}  # type: ignore[index]


def export_vit_timm(module: Any, out_dir: Path) -> None:
    """Write a trained ``vit`` task module as a timm model folder: ``model.safetensors`` + ``config.json``.

    ``config.json`` is timm's layout (``save_for_hf``): ``architecture``, ``num_classes``,
    ``model_args`` (``img_size``, ``patch_size``, ``in_chans``, ``num_classes``, ``embed_dim``, ``depth``,
    ``num_heads``, ``mlp_ratio``, ``class_token``, ``global_pool``, ...), ``label_names`` and
    ``pretrained_cfg`` with the data's normalization (``mean``, ``std``) and ``input_size``. Then
    ``timm.create_model(architecture, pretrained=False, **model_args)`` + ``load_state_dict`` of the
    safetensors file (or ``timm.create_model("local-dir:<out_dir>", pretrained=True)``, or
    ``init_from: timm:<out_dir>`` here) gives the same logits.

    Args:
        module: a ``ViTModule`` (``module.model`` a ViT, ``module.mean`` / ``std`` / ``class_names``).
        out_dir: an existing, empty folder.

    Raises:
        ValueError: not a ViT, a folder that is missing or not empty, or an option timm cannot express.
    """
    from safetensors.torch import save_file

    vit, out_dir = getattr(module, "model", None), Path(out_dir)
    if not isinstance(vit, ViT):
        raise ValueError(f"export to timm needs a `vit` task module, got a {type(vit).__name__} network")
    if not out_dir.is_dir() or any(out_dir.iterdir()):
        raise ValueError(f"export folder {out_dir} must exist and be empty")
    cfg = vit.cfg
    args, arch = timm_args(cfg), timm_architecture(cfg)
    timm_model = timm.create_model(arch, pretrained=False, **args)
    state = timm_state_dict(vit, timm_model)
    timm_model.load_state_dict(state)  # strict: every weight has its place
    size = to_pair(cfg.image_size)
    pretrained_cfg = {
        "input_size": [cfg.in_channels, *size],
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "mean": list(module.mean),
        "std": list(module.std),
        "num_classes": cfg.num_classes,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
    }
    config = {
        "architecture": arch,
        "num_classes": cfg.num_classes,
        "num_features": cfg.transformer.dim,
        "global_pool": args["global_pool"],
        "label_names": list(getattr(module, "class_names", [])),
        "model_args": args,
        "pretrained_cfg": pretrained_cfg,
    }
    save_file(state, str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
