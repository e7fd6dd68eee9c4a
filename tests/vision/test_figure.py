"""The attention the vit tools draw (``anyformer attention``'s figure, ``anyformer classify --attention-map``)
is the rollout of the maps the model's own ``forward_features(..., maps=...)`` returns."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anyformer.core.attention import AttentionMaps
from anyformer.core.config import TransformerConfig
from anyformer.core.rollout import patch_relevance
from anyformer.vision.classify import classify_images, read_image, to_tensor
from anyformer.vision.figure import vit_figure, vit_rollout
from anyformer.vision.overlay import overlay_heatmap
from anyformer.vision.vit import ViTConfig
from anyformer.vision.vit_task import ViTModule

CONFIGS = {
    "cls": {"pool": "cls"},
    "mean": {"pool": "mean", "position": "sinusoidal"},
    "overlapping": {"patch_stride": 2},  # 4x4 patches every 2 pixels: a 3 x 3 grid
}


def tiny_module(**overrides) -> ViTModule:
    torch.manual_seed(0)
    transformer = TransformerConfig(dim=16, n_layers=3, n_heads=2, position="none")
    module = ViTModule(ViTConfig(**({"image_size": 8, "patch_size": 4, "transformer": transformer} | overrides)))
    module.mean, module.std = [0.3], [0.2]
    return module.eval()


def gradient_image(path: Path | None = None) -> Image.Image:
    image = Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8))
    if path is not None:
        image.save(path)
    return image


def own_maps(module: ViTModule, image: Image.Image) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every layer's attention from the model's own forward_features, and its logits from forward."""
    pixels = to_tensor(image, module.mean, module.std)
    maps = AttentionMaps()
    with torch.no_grad():
        module.model.forward_features(pixels, maps=maps)
        logits = module.model(pixels)[0]
    return maps.self_attn, logits


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("layer", [1, 3, None])
def test_the_figures_rollout_is_read_from_the_models_own_maps(name, layer, tmp_path):
    module = tiny_module(**CONFIGS[name])
    image = gradient_image(tmp_path / "gradient.png")
    attentions, expected_logits = own_maps(module, image)
    heat, logits = vit_rollout(module, image, layer)
    grid = module.model.cfg.grid_size
    expected = patch_relevance(attentions[: layer or len(attentions)], grid, module.model.cfg.pool)[0]
    torch.testing.assert_close(heat, expected, rtol=0, atol=0)
    torch.testing.assert_close(logits, expected_logits)
    figure = vit_figure(module, str(tmp_path / "gradient.png"), layer)
    drawn = figure.axes[1].images[0].get_array()  # the overlay panel
    assert np.array_equal(np.asarray(drawn), np.asarray(overlay_heatmap(image, expected)))


@pytest.mark.parametrize("name", CONFIGS)
def test_classify_draws_the_rollout_of_the_models_own_maps(name, tmp_path, capsys):
    module = tiny_module(**CONFIGS[name])
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "vit.ckpt")
    source = tmp_path / "gradient.png"
    gradient_image(source)
    out = tmp_path / "map.png"
    args = argparse.Namespace(
        ckpt=str(tmp_path / "vit.ckpt"), inputs=[str(source)], top_k=1, keep_size=False, attention_map=str(out)
    )
    assert classify_images(args) == 0
    capsys.readouterr()
    image = read_image(source, 1, (8, 8), 4)
    attentions, _ = own_maps(module, image)
    expected = overlay_heatmap(image, patch_relevance(attentions, module.model.cfg.grid_size, module.model.cfg.pool)[0])
    with Image.open(out) as written:
        assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(expected.convert("RGB")))
