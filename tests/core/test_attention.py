"""Attention against torch.nn.MultiheadAttention, plus mask semantics."""

import pytest
import torch
from torch import nn

from anyformer.core import MultiHeadAttention, TransformerConfig, causal_mask, merge_masks, padding_mask
from anyformer.core.masks import lengths_to_keep

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


@pytest.mark.parametrize("cross", [False, True])
def test_fully_masked_query_rows_give_zeros_on_both_paths(cross):
    """A query that may attend to nothing: zero weights and a zero attention output (only
    out_proj's bias remains), identical on the SDPA and the explicit path, with finite gradients."""
    _, ours = _pair(cross=cross)
    x = torch.randn(2, 5, D, requires_grad=True)
    memory = torch.randn(2, 6, D) if cross else None
    n_keys = 6 if cross else 5
    mask = torch.rand(2, 1, 5, n_keys) > 0.3
    mask[..., 0] = True  # every row keeps a key ...
    mask[0, :, 2] = False  # ... except query 2 of the first sequence
    mask[1] = False  # and every query of the second (all of its keys are padding)
    blocked = ~mask.any(-1).expand(2, H, 5)  # (B, H, Tq)
    maps: list = []
    slow = ours(x, memory=memory, mask=mask, maps=maps)
    fast = ours(x, memory=memory, mask=mask)
    (probs,) = maps
    assert torch.isfinite(slow).all() and torch.isfinite(probs).all()
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=0)
    assert (probs[blocked] == 0).all()
    torch.testing.assert_close(probs.sum(-1)[~blocked], torch.ones(int((~blocked).sum())))
    bias_only = ours.out_proj.bias.expand(2, 5, D)
    torch.testing.assert_close(slow[0, 2], bias_only[0, 2])
    torch.testing.assert_close(slow[1], bias_only[1])
    slow.sum().backward()
    assert torch.isfinite(x.grad).all()
