"""Attention against torch.nn.MultiheadAttention, plus mask semantics."""

import pytest
import torch
from torch import nn

from core import MultiHeadAttention, TransformerConfig, causal_mask, merge_masks, padding_mask
from core.masks import lengths_to_keep

D, H = 32, 4


def _pair(cross: bool):
    torch.manual_seed(1)
    reference = nn.MultiheadAttention(D, H, batch_first=True).eval()
    ours = MultiHeadAttention(TransformerConfig(dim=D, n_heads=H, position="none"), cross=cross).eval()
    with torch.no_grad():
        if cross:
            ours.q_proj.weight.copy_(reference.in_proj_weight[:D])
            ours.q_proj.bias.copy_(reference.in_proj_bias[:D])
            ours.kv_proj.weight.copy_(reference.in_proj_weight[D:])
            ours.kv_proj.bias.copy_(reference.in_proj_bias[D:])
        else:
            ours.qkv_proj.weight.copy_(reference.in_proj_weight)
            ours.qkv_proj.bias.copy_(reference.in_proj_bias)
        ours.out_proj.load_state_dict(reference.out_proj.state_dict())
    return reference, ours


@pytest.mark.parametrize("masked", [False, True])
def test_self_attention_matches_torch(masked):
    reference, ours = _pair(cross=False)
    x = torch.randn(3, 7, D)
    keep = lengths_to_keep(torch.tensor([7, 4, 1]), 7)
    expected, _ = reference(x, x, x, key_padding_mask=~keep if masked else None, need_weights=False)
    got = ours(x, mask=padding_mask(keep) if masked else None)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("masked", [False, True])
def test_cross_attention_matches_torch(masked):
    reference, ours = _pair(cross=True)
    x, memory = torch.randn(2, 5, D), torch.randn(2, 9, D)
    keep = lengths_to_keep(torch.tensor([9, 3]), 9)
    expected, _ = reference(x, memory, memory, key_padding_mask=~keep if masked else None, need_weights=False)
    got = ours(x, memory=memory, mask=padding_mask(keep) if masked else None)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_causal_attention_matches_torch_with_causal_mask():
    reference, ours = _pair(cross=False)
    ours.causal = True
    x = torch.randn(2, 6, D)
    not_allowed = ~causal_mask(6)[0, 0]  # torch's boolean attn_mask marks what may NOT be attended
    expected, _ = reference(x, x, x, attn_mask=not_allowed, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)


def test_attention_maps_path_equals_fast_path_and_returns_weights():
    _, ours = _pair(cross=False)
    ours.causal = True
    x = torch.randn(2, 6, D)
    maps: list = []
    slow = ours(x, maps=maps)
    torch.testing.assert_close(slow, ours(x), atol=1e-5, rtol=0)
    (probs,) = maps
    assert probs.shape == (2, H, 6, 6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, H, 6))
    assert (probs.triu(diagonal=1) == 0).all()  # nothing attends to the future


def test_reference_weights_match_ours():
    reference, ours = _pair(cross=False)
    x = torch.randn(2, 5, D)
    _, expected = reference(x, x, x, need_weights=True, average_attn_weights=False)
    maps: list = []
    ours(x, maps=maps)
    torch.testing.assert_close(maps[0], expected, atol=1e-5, rtol=0)


def test_causal_mask_with_offset_and_merge():
    mask = causal_mask(2, 5)[0, 0]
    assert mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    keep = padding_mask(torch.tensor([[True, True, True, False, True]]))
    merged = merge_masks(causal_mask(2, 5), None, keep)[0, 0]
    assert merged.tolist() == [[True, True, True, False, False], [True, True, True, False, True]]
    assert merge_masks(None, None) is None
    with pytest.raises(ValueError, match="n_keys"):
        causal_mask(5, 2)
    with pytest.raises(ValueError, match=r"\(B, Tk\) bool"):
        padding_mask(torch.ones(2, 3))
