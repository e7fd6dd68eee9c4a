"""ViT: config checks, pooling, attention maps and rollout (timm parity: tests/vision/test_timm.py)."""

from __future__ import annotations

import pytest
import torch

from anyformer.core.attention import AttentionMaps
from anyformer.core.config import TransformerConfig
from anyformer.core.rollout import attention_rollout, patch_relevance
from anyformer.core.train.base import param_groups
from anyformer.vision.vit import ViT, ViTConfig


def tiny_config(**overrides) -> ViTConfig:
    transformer = TransformerConfig(dim=32, n_layers=2, n_heads=4, position="none", norm_eps=1e-6)
    return ViTConfig(**({"image_size": 16, "patch_size": 4, "transformer": transformer} | overrides))


def test_config_checks_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"transformer\.position='learned' must be 'none'"):
        ViTConfig(transformer=TransformerConfig(position="learned"))
    with pytest.raises(ValueError, match="pool='max' is not one of"):
        tiny_config(pool="max")
    with pytest.raises(ValueError, match=r"ViTConfig\.image_size/patch_size: image size 16x16"):
        tiny_config(patch_size=5)
    assert tiny_config(image_size=[16, 24]).grid_size == (4, 6)
    assert tiny_config(image_size=(16, 24)).num_patches == 24


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_pooling_reads_the_right_tokens(pool: str) -> None:
    torch.manual_seed(0)
    vit = ViT(tiny_config(pool=pool, num_classes=7)).eval()
    features = torch.randn(2, 17, 32)
    expected = features[:, 0] if pool == "cls" else features[:, 1:].mean(1)
    torch.testing.assert_close(vit.forward_head(features), vit.head(expected))
    assert vit(torch.randn(2, 1, 16, 16)).shape == (2, 7)


def test_non_square_images_and_other_sizes() -> None:
    torch.manual_seed(0)
    vit = ViT(tiny_config(image_size=(16, 24), in_channels=3)).eval()
    assert vit.forward_features(torch.randn(2, 3, 16, 24)).shape == (2, 1 + 24, 32)
    assert vit(torch.randn(1, 3, 32, 24)).shape == (1, 10)  # positions resampled to an 8 x 6 grid


def test_no_weight_decay_names_real_parameters_and_they_are_not_decayed() -> None:
    vit = ViT(tiny_config())
    names = vit.no_weight_decay()
    assert names == {"tokenizer.cls_token", "tokenizer.pos_embed"}
    params = dict(vit.named_parameters())
    decayed, not_decayed = param_groups(vit, 0.1)
    assert all(not any(p is params[n] for p in decayed["params"]) for n in names)
    assert any(p is params["tokenizer.proj.weight"] for p in decayed["params"])
    assert ViT(tiny_config(position="sinusoidal")).no_weight_decay() == {"tokenizer.cls_token"}
    assert sum(p.numel() for p in not_decayed["params"]) > 0


def test_attention_maps_collect_every_layer_without_changing_the_output() -> None:
    torch.manual_seed(0)
    vit = ViT(tiny_config()).eval()
    images = torch.randn(2, 1, 16, 16)
    maps = AttentionMaps()
    with torch.no_grad():
        with_maps = vit.forward_features(images, maps=maps)
        torch.testing.assert_close(with_maps, vit.forward_features(images), atol=1e-5, rtol=1e-5)
    assert len(maps.self_attn) == 2
    assert maps.self_attn[0].shape == (2, 4, 17, 17)
    relevance = patch_relevance(maps.self_attn, (4, 4))
    assert relevance.shape == (2, 4, 4)
    assert relevance.amin(dim=(1, 2)).tolist() == [0.0, 0.0] and relevance.amax(dim=(1, 2)).tolist() == [1.0, 1.0]


def test_rollout_of_identity_attention_is_the_identity_and_rows_sum_to_one() -> None:
    eye = torch.eye(5).expand(1, 2, 5, 5)
    torch.testing.assert_close(attention_rollout([eye, eye]), torch.eye(5)[None])
    uniform = torch.full((1, 2, 5, 5), 0.2)
    one_layer = attention_rollout([uniform])
    torch.testing.assert_close(one_layer, 0.5 * torch.full((1, 5, 5), 0.2) + 0.5 * torch.eye(5)[None])
    random = torch.rand(3, 2, 5, 5).softmax(-1)
    torch.testing.assert_close(attention_rollout([random, random, random]).sum(-1), torch.ones(3, 5))
