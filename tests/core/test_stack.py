"""Invariances of the stacks: causality, padding, cached decoding == full pass."""

import pytest
import torch

from anyformer.core import Decoder, Encoder, EncoderDecoder, TransformerConfig, padding_mask
from anyformer.core.attention import AttentionMaps
from anyformer.core.masks import lengths_to_keep

POSITIONS = ["none", "sinusoidal", "learned", "rope"]


def _cfg(**overrides):
    return TransformerConfig(**(dict(dim=32, n_layers=2, n_heads=4, max_seq_len=40) | overrides))


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_changing_future_tokens_never_changes_the_past(position, norm_position):
    torch.manual_seed(0)
    decoder = Decoder(_cfg(position=position, norm_position=norm_position)).eval()
    x = torch.randn(2, 12, 32)
    t = 5
    changed = x.clone()
    changed[:, t + 1 :] = torch.randn(2, 12 - t - 1, 32)
    out, out_changed = decoder(x), decoder(changed)
    torch.testing.assert_close(out[:, : t + 1], out_changed[:, : t + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(out[:, t + 1 :], out_changed[:, t + 1 :])


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
@pytest.mark.parametrize("position", POSITIONS)
def test_appending_masked_padding_leaves_real_positions_unchanged(stack, position):
    torch.manual_seed(0)
    cfg = _cfg(position=position)
    model = (Encoder(cfg) if stack == "encoder" else Decoder(cfg)).eval()
    x = torch.randn(2, 7, 32)
    padded = torch.cat([x, torch.randn(2, 5, 32) * 100], dim=1)
    keep = lengths_to_keep(torch.tensor([7, 7]), 12)
    torch.testing.assert_close(model(padded, mask=padding_mask(keep))[:, :7], model(x), atol=1e-5, rtol=0)


def test_padding_mask_is_per_row():
    torch.manual_seed(0)
    encoder = Encoder(_cfg()).eval()
    x = torch.randn(2, 6, 32)
    keep = lengths_to_keep(torch.tensor([6, 3]), 6)
    out = encoder(x, mask=padding_mask(keep))
    torch.testing.assert_close(out[1, :3], encoder(x[1:, :3])[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0], encoder(x[:1])[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("cross", [False, True])
def test_cached_decoding_equals_full_pass(position, cross):
    torch.manual_seed(0)
    decoder = Decoder(_cfg(position=position), cross_attention=cross).eval()
    x = torch.randn(3, 11, 32)
    memory = torch.randn(3, 8, 32) if cross else None
    memory_mask = padding_mask(lengths_to_keep(torch.tensor([8, 5, 2]), 8)) if cross else None
    full = decoder(x, memory=memory, memory_mask=memory_mask)
    cache = decoder.init_cache(3)
    steps = [decoder(x[:, :4], memory=memory, memory_mask=memory_mask, cache=cache)]  # prefill 4 tokens
    steps.append(decoder(x[:, 4:6], memory=memory, memory_mask=memory_mask, cache=cache))  # a 2-token chunk
    for t in range(6, 11):
        steps.append(decoder(x[:, t : t + 1], memory_mask=memory_mask, cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    assert cache.length == 11


def test_cache_overflow_and_misuse_are_clear_errors():
    decoder = Decoder(_cfg()).eval()
    cache = decoder.init_cache(1, max_len=4)
    decoder(torch.randn(1, 4, 32), cache=cache)
    with pytest.raises(ValueError, match="overflow"):
        decoder(torch.randn(1, 1, 32), cache=cache)
    with pytest.raises(ValueError, match="causal"):
        Encoder(_cfg()).init_cache(1)
    with pytest.raises(ValueError, match="memory"):
        Decoder(_cfg(), cross_attention=True)(torch.randn(1, 2, 32))
    with pytest.raises(ValueError, match="max_seq_len"):
        Decoder(_cfg(position="learned", max_seq_len=8))(torch.randn(1, 9, 32))


def test_encoder_decoder_uses_the_source():
    torch.manual_seed(0)
    model = EncoderDecoder(_cfg(), _cfg()).eval()
    src, tgt = torch.randn(2, 9, 32), torch.randn(2, 5, 32)
    out = model(src, tgt)
    assert out.shape == (2, 5, 32)
    assert not torch.allclose(out, model(src.flip(1), tgt))
    keep = lengths_to_keep(torch.tensor([9, 4]), 9)
    masked = model(src, tgt, source_mask=padding_mask(keep))
    torch.testing.assert_close(masked[1], model(src[1:, :4], tgt[1:])[0], atol=1e-5, rtol=0)


def test_attention_maps_collect_one_map_per_layer():
    torch.manual_seed(0)
    decoder = Decoder(_cfg(), cross_attention=True).eval()
    maps = AttentionMaps()
    x, memory = torch.randn(1, 5, 32), torch.randn(1, 3, 32)
    out = decoder(x, memory=memory, maps=maps)
    torch.testing.assert_close(out, decoder(x, memory=memory), atol=1e-5, rtol=0)
    assert [m.shape for m in maps.self_attn] == [(1, 4, 5, 5)] * 2
    assert [m.shape for m in maps.cross_attn] == [(1, 4, 5, 3)] * 2
