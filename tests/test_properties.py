"""Property-based tests (hypothesis) of the invariants every task relies on.

- masks: the causal mask is the lower triangle (numpy's ``tri`` as the reference);
- padding: a padded key never changes the outputs of the real tokens, which equal the outputs of
  the unpadded sequence run alone (encoder and decoder);
- causality: changing a future token never changes a past output of a decoder;
- spectrogram patches: ``unpatchify`` inverts ``patchify`` exactly, and ``patchify`` is what the
  tokenizer projects. (The image patches have the same round-trip test in tests/vision/test_patches.py,
  and the text tokenizers theirs in tests/text/test_tokenizers.py.)

Models run in float64 so that "unchanged" can be checked to 1e-10 rather than to float32 noise.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from anyformer.core import Decoder, Encoder, TransformerConfig, causal_mask, lengths_to_keep, merge_masks, padding_mask
from anyformer.core.patches import PatchTokenizer, patchify, unpatchify

PROPERTY = settings(max_examples=25, deadline=None)
POSITIONS = st.sampled_from(["none", "sinusoidal", "learned", "rope"])
EXACT = {"rtol": 0.0, "atol": 1e-10}


def _stack(kind: type[Encoder] | type[Decoder], max_seq_len: int, position: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    cfg = TransformerConfig(dim=16, n_layers=2, n_heads=2, max_seq_len=max_seq_len, position=position)
    return kind(cfg).double().eval()


@st.composite
def padded_batches(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, 16) float64 embeddings and (B,) lengths in [1, T]."""
    batch, length = draw(st.integers(1, 4)), draw(st.integers(1, 12))
    lengths = torch.tensor(draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch)))
    x = torch.from_numpy(np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal((batch, length, 16)))
    return x, lengths


# -- masks ---------------------------------------------------------------------------------------
@PROPERTY
@given(n_queries=st.integers(1, 20), extra_keys=st.integers(0, 20))
def test_causal_mask_is_the_lower_triangle(n_queries: int, extra_keys: int) -> None:
    n_keys = n_queries + extra_keys  # the queries are the last n_queries of n_keys positions
    mask = causal_mask(n_queries, n_keys)
    assert mask.shape == (1, 1, n_queries, n_keys) and mask.dtype == torch.bool
    reference = np.tri(n_queries, n_keys, k=extra_keys, dtype=bool)  # key j visible iff j <= i + extra_keys
    assert np.array_equal(mask[0, 0].numpy(), reference)


@PROPERTY
@given(batch=padded_batches())
def test_padding_and_causal_masks_merge_to_their_logical_and(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, lengths = batch
    n, t = lengths.shape[0], x.shape[1]
    merged = merge_masks(causal_mask(t), padding_mask(lengths_to_keep(lengths, t)))
    assert merged.shape == (n, 1, t, t)
    for b, length in enumerate(lengths.tolist()):
        for i in range(t):
            for j in range(t):
                assert bool(merged[b, 0, i, j]) == (j <= i and j < length)


# -- padding never leaks -------------------------------------------------------------------------
@PROPERTY
@given(batch=padded_batches(), position=POSITIONS, causal=st.booleans(), seed=st.integers(0, 1000))
def test_padded_keys_never_change_the_outputs_of_real_tokens(
    batch: tuple[torch.Tensor, torch.Tensor], position: str, causal: bool, seed: int
) -> None:
    x, lengths = batch
    t = x.shape[1]
    stack = _stack(Decoder if causal else Encoder, t, position, seed)
    keep = lengths_to_keep(lengths, t)  # (B, T), True at real tokens
    mask = padding_mask(keep)
    garbage = x.clone()
    garbage[~keep] = torch.randn(int((~keep).sum()), x.shape[-1], dtype=x.dtype) * 100  # rewrite the padding
    with torch.no_grad():
        out, out_garbage = stack(x, mask=mask), stack(garbage, mask=mask)
        for b, length in enumerate(lengths.tolist()):
            torch.testing.assert_close(out_garbage[b, :length], out[b, :length], **EXACT)
            alone = stack(x[b : b + 1, :length])  # the same sequence with no padding at all
            torch.testing.assert_close(out[b, :length], alone[0], rtol=1e-9, atol=1e-9)


# -- causality -----------------------------------------------------------------------------------
@PROPERTY
@given(
    length=st.integers(2, 12),
    data=st.data(),
    position=POSITIONS,
    seed=st.integers(0, 1000),
)
def test_changing_a_future_token_never_changes_past_outputs(
    length: int, data: st.DataObject, position: str, seed: int
) -> None:
    vocab = 11
    embedding = nn.Embedding(vocab, 16).double()
    decoder = _stack(Decoder, length, position, seed)
    ids = torch.tensor([data.draw(st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length))])
    changed_at = data.draw(st.integers(0, length - 1))
    edited = ids.clone()
    edited[0, changed_at] = (ids[0, changed_at] + data.draw(st.integers(1, vocab - 1))) % vocab  # a different token
    with torch.no_grad():
        out, out_edited = decoder(embedding(ids)), decoder(embedding(edited))
    torch.testing.assert_close(out_edited[:, :changed_at], out[:, :changed_at], **EXACT)
    assert not torch.allclose(out_edited[:, changed_at], out[:, changed_at])  # the property is not vacuous


# -- spectrogram patches ---------------------------------------------------------------------------
@PROPERTY
@given(
    batch=st.integers(1, 3),
    patch=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    grid=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 1000),
)
def test_unpatchify_inverts_spectrogram_patchify_exactly(
    batch: int, patch: tuple[int, int], grid: tuple[int, int], seed: int
) -> None:
    size = (grid[0] * patch[0], grid[1] * patch[1])  # divisible: no padding, no overlap
    spec = torch.randn(batch, 1, *size, generator=torch.Generator().manual_seed(seed))
    patches = patchify(spec, patch, patch)
    assert patches.shape == (batch, grid[0] * grid[1], patch[0] * patch[1])
    assert torch.equal(unpatchify(patches, size, patch, patch), spec)
    assert torch.equal(patchify(unpatchify(patches, size, patch, patch), patch, patch), patches)


@PROPERTY
@given(
    size=st.tuples(st.integers(1, 20), st.integers(1, 20)),
    patch=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    stride_cut=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    seed=st.integers(0, 1000),
)
def test_overlapping_patches_round_trip_and_are_what_the_tokenizer_projects(
    size: tuple[int, int], patch: tuple[int, int], stride_cut: tuple[int, int], seed: int
) -> None:
    stride = (max(1, patch[0] - stride_cut[0]), max(1, patch[1] - stride_cut[1]))  # <= patch: overlap allowed
    torch.manual_seed(seed)
    spec = torch.randn(2, 1, *size, dtype=torch.float64)
    patches = patchify(spec, patch, stride, pad=True)
    torch.testing.assert_close(unpatchify(patches, size, patch, stride), spec, rtol=0, atol=1e-12)
    tokenizer = PatchTokenizer(size, patch, 1, dim=8, stride=stride, pad=True).double()
    weight = tokenizer.proj.weight.reshape(8, -1)  # (D, Pf*Pt), the (band, frame) order of patchify
    torch.testing.assert_close(tokenizer.embed_patches(spec), patches @ weight.T + tokenizer.proj.bias)
