"""KVCache: the preallocated buffer must behave exactly like a growing concatenation."""

import pytest
import torch

from anyformer.core.cache import KVCache


def _kv(batch, length, seed):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 2, length, 3)  # (B, H, T, Dh)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def test_append_returns_everything_so_far_like_a_concatenation():
    cache = KVCache(batch_size=2, n_heads=2, max_len=10, head_dim=3)
    ref_k, ref_v = _kv(2, 0, 0)
    for step, length in enumerate((4, 1, 1, 3)):
        k, v = _kv(2, length, step + 1)
        ref_k, ref_v = torch.cat([ref_k, k], dim=2), torch.cat([ref_v, v], dim=2)
        keys, values = cache.append(k, v)
        torch.testing.assert_close(keys, ref_k, rtol=0, atol=0)
        torch.testing.assert_close(values, ref_v, rtol=0, atol=0)
    assert cache.length == 9


def test_append_past_max_len_is_an_error_naming_both_sizes():
    cache = KVCache(batch_size=1, n_heads=2, max_len=4, head_dim=3)
    cache.append(*_kv(1, 3, 0))
    with pytest.raises(ValueError, match="5 positions requested, cache holds 4"):
        cache.append(*_kv(1, 2, 1))


@pytest.mark.parametrize("index", [[2, 0, 1], [1, 1, 0], [2, 2, 2]], ids=["permute", "repeat", "one-parent"])
def test_reorder_follows_rows_then_keeps_appending(index):
    """Beam search: rows may repeat (two beams with one parent); later appends land after the reorder."""
    cache = KVCache(batch_size=3, n_heads=2, max_len=8, head_dim=3)
    k, v = _kv(3, 5, 0)
    cache.append(k, v)
    order = torch.tensor(index)
    cache.reorder(order)
    k2, v2 = _kv(3, 1, 1)
    keys, values = cache.append(k2, v2)
    torch.testing.assert_close(keys, torch.cat([k[order], k2], dim=2), rtol=0, atol=0)
    torch.testing.assert_close(values, torch.cat([v[order], v2], dim=2), rtol=0, atol=0)


def test_reorder_to_fewer_rows_shrinks_the_batch():
    cache = KVCache(batch_size=3, n_heads=2, max_len=8, head_dim=3)
    k, v = _kv(3, 4, 0)
    cache.append(k, v)
    cache.reorder(torch.tensor([2, 0]))
    keys, values = cache.append(*_kv(2, 1, 1))
    assert keys.shape == (2, 2, 5, 3)
    torch.testing.assert_close(keys[:, :, :4], k[[2, 0]], rtol=0, atol=0)
    torch.testing.assert_close(values[:, :, :4], v[[2, 0]], rtol=0, atol=0)


def test_cache_made_under_autocast_holds_the_autocast_dtype_and_decodes_like_the_full_pass():
    from anyformer.core import Decoder, TransformerConfig

    torch.manual_seed(0)
    decoder = Decoder(TransformerConfig(dim=16, n_layers=2, n_heads=2, max_seq_len=8, position="learned")).eval()
    x = torch.randn(1, 5, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cache = decoder.init_cache(1)
        stepped = torch.cat(
            [decoder(x[:, :3], cache=cache), decoder(x[:, 3:4], cache=cache), decoder(x[:, 4:], cache=cache)], 1
        )
        full = decoder(x)
    assert cache.layers[0].self_attn.keys.dtype == torch.bfloat16
    assert decoder.init_cache(1).layers[0].self_attn.keys.dtype == torch.float32  # outside autocast: the weights'
    torch.testing.assert_close(stepped.float(), full.float(), atol=0.05, rtol=0.05)
