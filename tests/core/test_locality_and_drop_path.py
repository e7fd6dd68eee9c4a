"""Locality Self-Attention (Lee et al. 2021) and stochastic depth (Huang et al. 2016) in the core.

LSA is checked against a hand-written softmax(q k^T / tau, diagonal at -inf) v on both attention
paths; stochastic depth against its definition: linear rates over the blocks, identity in eval,
whole samples dropped (or kept and scaled by 1 / (1 - p)) in training, and no new state-dict keys.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anyformer.core import Decoder, Encoder, MultiHeadAttention, TransformerConfig, padding_mask
from anyformer.core.attention import AttentionMaps
from anyformer.core.block import TransformerBlock
from anyformer.core.masks import lengths_to_keep
from anyformer.core.patches import ShiftedPatchProjection
from anyformer.core.train.base import param_groups
from anyformer.core.vit import ViT, ViTConfig

D, H, DH = 32, 4, 8


def lsa_layer(**overrides) -> MultiHeadAttention:
    torch.manual_seed(0)
    cfg = TransformerConfig(dim=D, n_heads=H, position="none", locality_self_attention=True, **overrides)
    return MultiHeadAttention(cfg).eval()


def reference_lsa(layer: MultiHeadAttention, x: torch.Tensor, keep: torch.Tensor | None = None):
    """softmax(q k^T / tau) v with the diagonal (and padded keys) at -inf, then out_proj; and the probabilities."""
    b, t, _ = x.shape
    q, k, v = layer.qkv_proj(x).view(b, t, 3, H, DH).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
    tau = layer.log_temperature.exp()
    scores = q @ k.transpose(-2, -1) / tau  # (B, H, T, T)
    scores = scores.masked_fill(torch.eye(t, dtype=torch.bool), float("-inf"))
    if keep is not None:
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    probs = scores.softmax(-1)
    out = (probs @ v).transpose(1, 2).reshape(b, t, D)
    return layer.out_proj(out), probs


@pytest.mark.parametrize("path", ["sdpa", "maps"])
def test_lsa_equals_the_hand_written_formula(path: str) -> None:
    layer = lsa_layer()
    with torch.no_grad():
        layer.log_temperature.fill_(math.log(1.7))  # away from the init, so a missed 1/sqrt(Dh) would show
    x = torch.randn(3, 6, D)
    expected, expected_probs = reference_lsa(layer, x)
    maps = [] if path == "maps" else None
    torch.testing.assert_close(layer(x, maps=maps), expected, atol=1e-5, rtol=1e-5)
    if maps is not None:
        (probs,) = maps
        torch.testing.assert_close(probs, expected_probs, atol=1e-6, rtol=1e-5)
        diagonal = probs.diagonal(dim1=-2, dim2=-1)  # (B, H, T)
        assert torch.equal(diagonal, torch.zeros_like(diagonal))
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, H, 6))


def test_lsa_keeps_padding_masks_on_both_paths() -> None:
    layer = lsa_layer()
    x = torch.randn(3, 7, D)
    keep = lengths_to_keep(torch.tensor([7, 4, 2]), 7)
    expected, expected_probs = reference_lsa(layer, x, keep)
    maps: list[torch.Tensor] = []
    fast, slow = layer(x, mask=padding_mask(keep)), layer(x, mask=padding_mask(keep), maps=maps)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(slow, expected, atol=1e-5, rtol=1e-5)
    padded = ~keep[:, None, None, :].expand_as(maps[0])
    assert torch.equal(maps[0][padded], torch.zeros(int(padded.sum())))
    torch.testing.assert_close(maps[0], expected_probs, atol=1e-6, rtol=1e-5)


def test_a_lone_real_token_under_lsa_gives_zeros_not_nan_on_both_paths() -> None:
    # Its only key is itself, which LSA masks: the row is fully masked, as a padded query's is.
    layer = lsa_layer()
    x, keep = torch.randn(2, 5, D), lengths_to_keep(torch.tensor([5, 1]), 5)
    maps: list[torch.Tensor] = []
    fast, slow = layer(x, mask=padding_mask(keep)), layer(x, mask=padding_mask(keep), maps=maps)
    assert not fast.isnan().any() and not slow.isnan().any()
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert torch.equal(maps[0][1, :, 0], torch.zeros(H, 5))
    torch.testing.assert_close(fast[1, 0], layer.out_proj.bias)  # attention output 0, then out_proj


def test_lsa_temperature_starts_at_sqrt_head_dim_learns_and_is_not_decayed() -> None:
    layer = lsa_layer()
    torch.testing.assert_close(layer.log_temperature.exp(), torch.tensor(math.sqrt(DH)))
    # At init the scores are the usual q k^T / sqrt(Dh): with the diagonal masked by hand, SDPA's own
    # default scale gives the same output.
    x = torch.randn(2, 5, D)
    b, t, _ = x.shape
    q, k, v = layer.qkv_proj(x).view(b, t, 3, H, DH).permute(2, 0, 3, 1, 4)
    off_diagonal = ~torch.eye(t, dtype=torch.bool)
    usual = F.scaled_dot_product_attention(q, k, v, attn_mask=off_diagonal).transpose(1, 2).reshape(b, t, D)
    torch.testing.assert_close(layer(x), layer.out_proj(usual), atol=1e-5, rtol=1e-5)

    layer(x).square().sum().backward()
    assert layer.log_temperature.grad is not None and layer.log_temperature.grad.abs() > 0
    no_decay = param_groups(layer, 0.1)[1]["params"]
    assert any(p is layer.log_temperature for p in no_decay)


def test_without_lsa_there_is_no_temperature_and_attention_is_plain_sdpa() -> None:
    torch.manual_seed(0)
    layer = MultiHeadAttention(TransformerConfig(dim=D, n_heads=H, position="none")).eval()
    assert layer.log_temperature is None
    assert not any("temperature" in name for name in layer.state_dict())
    x = torch.randn(2, 5, D)
    q, k, v = layer.qkv_proj(x).view(2, 5, 3, H, DH).permute(2, 0, 3, 1, 4)
    expected = layer.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 5, D))
    assert torch.equal(layer(x), expected)


def test_lsa_misuse_is_a_clear_error() -> None:
    cfg = TransformerConfig(dim=D, n_heads=H, position="none", locality_self_attention=True)
    for kwargs, kind in (({"causal": True}, "causal self-attention"), ({"cross": True}, "cross-attention")):
        with pytest.raises(ValueError, match=rf"locality_self_attention=True is for non-causal .* is {kind}"):
            MultiHeadAttention(cfg, **kwargs)
    with pytest.raises(ValueError, match="locality_self_attention"):
        Decoder(cfg)
    with pytest.raises(ValueError, match="a sequence of 1 token leaves its query no key"):
        lsa_layer()(torch.randn(2, 1, D))


def test_drop_path_rates_rise_linearly_over_the_blocks() -> None:
    cfg = TransformerConfig(dim=D, n_heads=H, n_layers=5, drop_path=0.2)
    assert [cfg.drop_path_rate(i) for i in range(5)] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    encoder = Encoder(cfg)
    assert isinstance(encoder.blocks[0].drop_path, nn.Identity)  # the first block never drops (timm's linspace)
    assert [block.drop_path.p for block in encoder.blocks[1:]] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert all(block.drop_path.mode == "row" for block in encoder.blocks[1:])
    assert TransformerConfig(n_layers=1, drop_path=0.3).drop_path_rate(0) == 0.0
    with pytest.raises(ValueError, match=r"drop_path must be in \[0, 1\), got 1.0"):
        TransformerConfig(drop_path=1.0)


def test_without_drop_path_no_module_is_added_and_state_dicts_match() -> None:
    plain = Encoder(TransformerConfig(dim=D, n_heads=H, n_layers=3))
    dropping = Encoder(TransformerConfig(dim=D, n_heads=H, n_layers=3, drop_path=0.1))
    assert not [m for m in plain.modules() if type(m).__name__ == "StochasticDepth"]
    assert all(isinstance(block.drop_path, nn.Identity) for block in plain.blocks)
    assert plain.state_dict().keys() == dropping.state_dict().keys()
    dropping.load_state_dict(plain.state_dict())  # strict: old checkpoints load as they are


def _block_pair(p: float, norm_position: str) -> tuple[TransformerBlock, TransformerBlock]:
    cfg = TransformerConfig(dim=D, n_heads=H, norm_position=norm_position)
    torch.manual_seed(0)
    plain = TransformerBlock(cfg)
    dropping = TransformerBlock(cfg, drop_path=p)
    dropping.load_state_dict(plain.state_dict())
    return plain, dropping


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_drop_path_is_the_identity_in_eval(norm_position: str) -> None:
    plain, dropping = _block_pair(0.5, norm_position)
    x = torch.randn(4, 6, D)
    assert torch.equal(dropping.eval()(x), plain.eval()(x))


def test_drop_path_drops_or_scales_whole_samples_reproducibly() -> None:
    p = 0.5
    plain, dropping = _block_pair(p, "pre")
    plain.train(), dropping.train()
    x = torch.randn(64, 5, D)
    branch = plain.attn(plain.norm1(x))  # (B, T, D); no dropout in this config
    # The block's first residual line, x + drop_path(attn(norm1(x))): each sample is x (branch
    # dropped) or x + branch / (1 - p) (kept), whole, never a mix within a sample.
    torch.manual_seed(7)
    after_attn = x + dropping.drop_path(dropping.attn(dropping.norm1(x)))
    error_if_dropped = (after_attn - x).abs().flatten(1).amax(1)  # (B,)
    error_if_kept = (after_attn - x - branch / (1 - p)).abs().flatten(1).amax(1)
    dropped, kept = error_if_dropped == 0, error_if_kept < 1e-5
    assert torch.equal(dropped, ~kept)
    assert 0 < int(dropped.sum()) < 64  # both happen at p = 0.5 over 64 samples

    torch.manual_seed(7)
    first = dropping(x)
    torch.manual_seed(7)
    assert torch.equal(dropping(x), first)  # the same seed drops the same samples
    assert not torch.equal(dropping(x), first)  # the next draws differ


def test_a_vit_with_spt_lsa_and_drop_path_trains_and_draws_its_maps() -> None:
    torch.manual_seed(0)
    transformer = TransformerConfig(
        dim=32, n_layers=3, n_heads=4, position="none", norm_eps=1e-6, drop_path=0.1, locality_self_attention=True
    )
    cfg = ViTConfig(image_size=16, patch_size=4, in_channels=1, num_classes=5, transformer=transformer)
    vit = ViT(cfg, proj=ShiftedPatchProjection(1, 32, 4, None))  # SPT + LSA, the paper's pair
    images, labels = torch.randn(8, 1, 16, 16), torch.randint(0, 5, (8,))
    optimizer = torch.optim.AdamW(param_groups(vit, 0.05), lr=3e-3)
    before = [block.attn.log_temperature.item() for block in vit.encoder.blocks]
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(vit(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]
    assert [block.attn.log_temperature.item() for block in vit.encoder.blocks] != before

    vit.eval()
    maps = AttentionMaps()
    features = vit.forward_features(images[:2], maps=maps)
    assert features.shape == (2, 17, 32)
    assert [tuple(m.shape) for m in maps.self_attn] == [(2, 4, 17, 17)] * 3
    for probs in maps.self_attn:
        assert torch.equal(probs.diagonal(dim1=-2, dim2=-1), torch.zeros(2, 4, 17))
    torch.testing.assert_close(vit.forward_head(features), vit(images[:2]))
