"""timm <-> anyformer ViT: logits equal timm's (native size, resampled positions, one channel), the
export reloads in timm with the same logits, ``--model.init_from timm:...`` trains through the CLI,
and bad specs are one line with exit status 2. Small random timm models in temporary folders; no hub."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from anyformer.core.cli.main import main
from anyformer.core.config import TransformerConfig
from anyformer.core.patches import resample_grid_positions
from anyformer.core.train.checkpoint import load_task
from anyformer.vision.timm import (
    from_timm,
    load_timm_state_dict,
    parse_spec,
    pretrained_vit,
    timm_config,
)
from anyformer.vision.timm_export import export_vit_timm
from anyformer.vision.vit import ViT, ViTConfig
from anyformer.vision.vit_task import ViTModule
from tests.vision.timm_files import TINY, tiny_timm, tiny_timm_folder

DIGITS = Path(__file__).resolve().parents[2] / "experiments" / "vision" / "vit_digits.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny timm ViT (16x16 RGB, 4x4 patches, 10 classes) saved by timm's ``save_for_hf``."""
    return tiny_timm_folder(tmp_path_factory.mktemp("timm") / "tiny", num_classes=10)


def timm_reference(folder: Path, **size: int) -> torch.nn.Module:
    """timm's own model at another size/channels, its weights resampled/adapted by timm's loader."""
    overlay = {"file": str(folder / "model.safetensors"), "custom_load": False, "num_classes": 10}
    args = TINY | {"num_classes": 10} | size
    return timm.create_model("vit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=overlay, **args).eval()


def test_from_timm_reproduces_the_logits_and_features() -> None:
    model = tiny_timm(num_classes=7)
    vit = from_timm(model).eval()
    cfg, t = vit.cfg, vit.cfg.transformer
    assert (cfg.image_size, cfg.patch_size, cfg.in_channels, cfg.num_classes, cfg.pool) == (16, 4, 3, 7, "cls")
    assert (t.dim, t.n_layers, t.n_heads, t.mlp_ratio, t.norm_eps) == (32, 2, 2, 4.0, 1e-6)
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(vit(images), model(images), atol=1e-4, rtol=0)
        torch.testing.assert_close(vit.forward_features(images), model.forward_features(images), atol=1e-4, rtol=0)


def test_mean_pool_no_positions_and_tanh_gelu_map_too() -> None:
    model = tiny_timm(global_pool="avg", fc_norm=False, pos_embed="none", act_layer="gelu_tanh")
    vit = from_timm(model).eval()
    assert (vit.cfg.pool, vit.cfg.position, vit.cfg.transformer.activation) == ("mean", "none", "gelu_tanh")
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(vit(images), model(images), atol=1e-4, rtol=0)


def test_init_from_a_folder_at_the_native_size(folder: Path) -> None:
    vit = pretrained_vit(f"timm:{folder}", ViTConfig(image_size=16, in_channels=3, num_classes=10)).model.eval()
    reference = timm_reference(folder)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(vit(images), reference(images), atol=1e-4, rtol=0)


def test_init_from_resamples_positions_and_sums_rgb_for_one_channel(folder: Path) -> None:
    # 24x24 gray images: a 6x6 grid from the 4x4 one, the RGB filters summed (timm's adapt_input_conv).
    pretrained = pretrained_vit(f"timm:{folder}", ViTConfig(image_size=24, in_channels=1, num_classes=10))
    vit, reference = pretrained.model.eval(), timm_reference(folder, img_size=24, in_chans=1)
    assert pretrained.mean == pretrained.std == (0.5, 0.5, 0.5)
    images = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(vit(images), reference(images), atol=1e-4, rtol=0)
    # Other classes: the same features, a fresh head of the new size.
    five = pretrained_vit(f"timm:{folder}", ViTConfig(image_size=24, in_channels=1, num_classes=5)).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(five.forward_features(images), reference.forward_features(images), atol=1e-4, rtol=0)
        assert five(images).shape == (2, 5)


def test_init_from_name_at_file_reads_deit_style_checkpoints(tmp_path: Path) -> None:
    # Saved after fine-tuning at 64x64 on 10 classes: built at that size, then resampled once to 32x32.
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=64)
    path = tmp_path / "deit.pth"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    vit = pretrained_vit(f"timm:vit_tiny_patch16_224@{path}", ViTConfig(image_size=32, num_classes=10, in_channels=3))
    assert vit.model.cfg.transformer.dim == 192 and vit.model.cfg.grid_size == (2, 2)
    ours, theirs = vit.model.state_dict(), source.state_dict()
    torch.testing.assert_close(
        ours["encoder.blocks.11.mlp.fc2.weight"], theirs["blocks.11.mlp.fc2.weight"], atol=0, rtol=0
    )
    resampled = resample_grid_positions(theirs["pos_embed"], (4, 4), (2, 2))
    torch.testing.assert_close(ours["tokenizer.pos_embed"], resampled, atol=0, rtol=0)
    full = from_timm(source.eval()).eval()  # the real vit_tiny (12 blocks of 192) at its own size
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(full(images), source(images), atol=1e-4, rtol=0)


def test_spec_syntax() -> None:
    assert parse_spec("timm:vit_tiny_patch16_224") == ("vit_tiny_patch16_224", None)
    assert parse_spec("timm:vit_small_patch16_224@/w/x.safetensors") == (
        "vit_small_patch16_224",
        Path("/w/x.safetensors"),
    )
    with pytest.raises(ValueError, match="needs its timm architecture"):
        parse_spec("timm:weights.safetensors")
    with pytest.raises(ValueError, match="expected 'timm:<model name>'"):
        parse_spec("vit_tiny_patch16_224")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"global_pool": "avg"}, "fc_norm"),
        ({"reg_tokens": 2}, "register tokens"),
        ({"init_values": 1e-5}, "layer scale"),
        ({"qk_norm": True}, "q/k norm"),
        ({"no_embed_class": True}, "no_embed_class"),
    ],
)
def test_timm_options_the_core_cannot_express_are_named(overrides: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        timm_config(timm.create_model("vit_tiny_patch16_224", pretrained=False, **(TINY | overrides)))


def test_weights_into_a_hand_built_config_and_shape_errors() -> None:
    model = tiny_timm()
    cfg = ViTConfig(
        image_size=16, patch_size=4, in_channels=3, num_classes=1000,
        transformer=TransformerConfig(dim=32, n_layers=2, n_heads=2, position="none", norm_eps=1e-6),
    )  # fmt: skip
    vit = load_timm_state_dict(ViT(cfg), model.state_dict()).eval()
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(vit(images), model(images), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="shapes differ"):
        load_timm_state_dict(ViT(ViTConfig(**(cfg.__dict__ | {"num_classes": 5}))), model)


def _vit_module(**overrides) -> ViTModule:
    torch.manual_seed(1)
    transformer = TransformerConfig(dim=32, n_layers=2, n_heads=4, position="none", norm_eps=1e-6, mlp_ratio=2.0)
    config = ViTConfig(
        **({"image_size": 16, "patch_size": 4, "in_channels": 3, "transformer": transformer} | overrides)
    )
    module = ViTModule(config).eval()
    with torch.no_grad():  # off the zero-init biases and unit norms
        for param in module.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return module


@pytest.mark.parametrize(
    "overrides",
    [{}, {"pool": "mean", "position": "none", "image_size": (16, 12), "num_classes": 3, "in_channels": 1}],
    ids=["cls-learned", "mean-none-nonsquare-gray"],
)
def test_export_reloads_in_timm_with_the_same_logits(tmp_path: Path, overrides: dict) -> None:
    module = _vit_module(**overrides)
    export_vit_timm(module, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert {"img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "num_heads", "mlp_ratio",
            "class_token", "global_pool"} <= set(config["model_args"])  # fmt: skip
    assert config["pretrained_cfg"]["mean"] == module.mean
    model = timm.create_model(config["architecture"], pretrained=False, **config["model_args"]).eval()
    model.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    cfg = module.config
    h, w = (cfg.image_size, cfg.image_size) if isinstance(cfg.image_size, int) else cfg.image_size
    images = torch.randn(2, cfg.in_channels, h, w)
    with torch.no_grad():
        expected = module(images)
        torch.testing.assert_close(model(images), expected, atol=1e-4, rtol=0)
        local = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()  # timm's own folder reader
        torch.testing.assert_close(local(images), expected, atol=1e-4, rtol=0)
        back = pretrained_vit(f"timm:{tmp_path}", cfg).model.eval()  # and our init_from
        torch.testing.assert_close(back(images), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"stem": "conv"}, "stem='conv'"),
        ({"position": "sinusoidal"}, "position='sinusoidal'"),
        ({"patch_stride": 2}, "patch_stride=2"),
        ({"pad": True, "image_size": 15}, "pad=True"),
        ({"transformer": TransformerConfig(dim=32, n_layers=1, n_heads=4, position="none")}, "norm_eps=1e-05"),
        (
            {"transformer": TransformerConfig(dim=32, n_heads=4, position="none", norm_eps=1e-6, ffn="swiglu")},
            "ffn='swiglu'",
        ),
        (
            {
                "transformer": TransformerConfig(
                    dim=32, n_heads=4, position="none", norm_eps=1e-6, locality_self_attention=True
                )
            },
            "locality_self_attention=True",
        ),
    ],
)
def test_export_refuses_what_timm_cannot_express(tmp_path: Path, overrides: dict, named: str) -> None:
    with pytest.raises(ValueError, match=f"cannot express this ViT: .*{named}"):
        export_vit_timm(_vit_module(**overrides), tmp_path)
    assert not any(tmp_path.iterdir())


def test_stochastic_depth_exports_as_timms_drop_path_rate(tmp_path: Path) -> None:
    # Training-only, so the exported model computes the same in eval mode; timm spreads the rate over the
    # blocks as the core does (linspace from 0), so a fine-tune in timm keeps the regularization.
    transformer = TransformerConfig(dim=32, n_layers=3, n_heads=4, position="none", norm_eps=1e-6, drop_path=0.2)
    module = _vit_module(transformer=transformer)
    export_vit_timm(module, tmp_path)
    model = timm.create_model("local-dir:" + str(tmp_path), pretrained=True)
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in model.blocks]  # rate 0: an Identity
    assert rates == pytest.approx([transformer.drop_path_rate(i) for i in range(3)])
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), module(images), atol=1e-4, rtol=0)


def test_export_needs_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(ValueError, match="must exist and be empty"):
        export_vit_timm(_vit_module(), tmp_path)


def test_cli_fine_tunes_digits_from_a_timm_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 16x16 RGB timm weights -> 8x8 gray digits: 2x2 positions resampled from 4x4, RGB filters summed,
    # a fresh 10-class head (the source has 7).
    source = tiny_timm_folder(tmp_path / "source", num_classes=7)
    monkeypatch.chdir(tmp_path)
    steps = ["--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=2"]
    argv = ["vit", "fit", "--config", str(DIGITS), "--model.init_from", f"timm:{source}", *steps, *QUIET]
    assert main(argv) == 0
    checkpoint = tmp_path / "runs" / "vit_digits" / "checkpoints" / "last.ckpt"
    module = load_task(checkpoint, tasks=("vit",))  # rebuilt from the checkpoint alone: the timm architecture
    cfg = module.model.cfg
    assert (cfg.transformer.dim, cfg.transformer.n_layers, cfg.patch_size, cfg.image_size, cfg.in_channels) == (
        32, 2, 4, 8, 1,
    )  # fmt: skip
    assert "init_from" not in torch.load(checkpoint, weights_only=True)["hyper_parameters"]


def _write_bad(tmp_path: Path, kind: str) -> str:
    if kind == "not weights":
        path = tmp_path / "notes.safetensors"
        path.write_text("these are not tensors")
        return f"timm:vit_tiny_patch16_224@{path}"
    if kind == "mismatch":  # config.json says 3 blocks, the weights hold 2
        folder = tiny_timm_folder(tmp_path / "bad")
        config = json.loads((folder / "config.json").read_text())
        config["model_args"]["depth"] = 3
        (folder / "config.json").write_text(json.dumps(config))
        return f"timm:{folder}"
    if kind == "file of another model":
        path = tmp_path / "small.safetensors"
        save_file(tiny_timm().state_dict(), str(path))
        return f"timm:vit_tiny_patch16_224@{path}"
    names = {
        "unknown name": "timm:vit_nonexistent_patch16_224",
        "offline": "timm:vit_tiny_patch16_224",
        "not a ViT": "timm:resnet18",
        "distilled": "timm:deit_tiny_distilled_patch16_224",
    }
    return names[kind]


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not weights", "is not a readable weights file"),
        ("mismatch", "the weights do not fit the timm model 'vit_tiny_patch16_224': 12 missing"),
        ("file of another model", "of another shape"),
        ("unknown name", "'vit_nonexistent_patch16_224' is not a timm model name"),
        ("offline", "cannot load the pretrained timm weights of 'vit_tiny_patch16_224'"),
        ("not a ViT", "'resnet18' is a timm ResNet, not a VisionTransformer"),  # refused before any download
        ("distilled", "VisionTransformerDistilled is not a plain timm VisionTransformer"),
    ],
)
def test_bad_init_from_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], kind: str, message: str
) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no request leaves the machine
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    spec = _write_bad(tmp_path, kind)
    monkeypatch.chdir(tmp_path)
    assert main(["vit", "fit", "--config", str(DIGITS), "--model.init_from", spec, *QUIET]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"anyformer vit: error: init_from={spec!r}"), lines
    assert message in lines[0], lines[0]
