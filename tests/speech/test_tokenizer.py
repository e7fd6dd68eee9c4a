"""The core patch tokenizer as the speech model configures it: one-channel (F, T) spectrogram
images, (possibly overlapping) patches, zero padding at the high-frequency and late-time edges."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from anyformer.core.patches import PatchTokenizer, grid_length, patch_grid, patchify, unpatchify


def spectrogram_tokenizer(size, patch, stride, dim: int) -> PatchTokenizer:
    """The tokenizer of a speech model reading (F, T) spectrograms (``SpeechConfig.vit``)."""
    return PatchTokenizer(size, patch, 1, dim, stride=stride, pad=True)


def embed(tok: PatchTokenizer, spec: torch.Tensor) -> torch.Tensor:
    """(B, F, T) -> (B, N, D)."""
    return tok.embed_patches(spec[:, None])


def windows_covering(length: int, patch: int, stride: int) -> int:
    """Brute force: add windows [k*stride, k*stride + patch) until every cell is covered."""
    covered, count = set(), 0
    while len(covered) < length:
        covered |= set(range(count * stride, min(count * stride + patch, length)))
        count += 1
    return max(count, 1)


def covering_patches(tok: PatchTokenizer, f: int, t: int) -> set[int]:
    """Token indices (0-based among the N patches) whose window contains cell (f, t)."""
    (pf, pt), (sf, st), (gf, gt) = tok.patch_size, tok.stride, tok.grid_size
    rows = [i for i in range(gf) if i * sf <= f < i * sf + pf]
    cols = [j for j in range(gt) if j * st <= t < j * st + pt]
    return {i * gt + j for i in rows for j in cols}


def test_grid_length_matches_brute_force_cover():
    for length, patch, stride in itertools.product(range(1, 40), range(1, 12), range(1, 12)):
        if stride > patch:
            continue  # a stride beyond the patch leaves gaps; coverage is not the question then
        assert grid_length(length, patch, stride) == windows_covering(length, patch, stride), (length, patch, stride)
    # AST's 128 bands, 16-band patches every 10: AST drops the last 2 bands (12 rows), we pad them (13).
    assert grid_length(128, 16, 10) == 13 and patch_grid((128, 16), (16, 16), (10, 10), pad=True)[1] == (8, 0)
    assert patch_grid((64, 101), (16, 16), (8, 8), pad=True) == ((7, 12), (0, 3))
    assert patch_grid((64, 101), (16, 16), (16, 16), pad=True) == ((4, 7), (0, 11))
    with pytest.raises(ValueError, match=r"64x101 \(HxW\) is not divisible by the patch size 16"):
        patch_grid((64, 101), (16, 16), (16, 16))  # without padding the patches must tile the image
    with pytest.raises(ValueError, match=r"64x101 \(HxW\) is not tiled exactly by 16 patches every 8"):
        patch_grid((64, 101), (16, 16), (8, 8))


@pytest.mark.parametrize("patch, stride", [((16, 16), None), ((16, 8), (8, 4)), ((64, 8), (64, 4)), ((5, 7), (3, 2))])
def test_a_cell_changes_exactly_the_patches_that_cover_it(patch, stride):
    torch.manual_seed(0)
    tok = spectrogram_tokenizer((64, 101), patch, stride, dim=8)
    base = torch.randn(1, 64, 101)
    before = embed(tok, base)
    for f, t in [(0, 0), (17, 33), (63, 100), (40, 96)]:
        bumped = base.clone()
        bumped[0, f, t] += 5.0
        changed = (embed(tok, bumped) - before).abs().amax(dim=-1)[0] > 1e-6  # (N,)
        assert set(changed.nonzero().flatten().tolist()) == covering_patches(tok, f, t), (f, t)


def test_patch_embedding_is_a_linear_map_of_each_zero_padded_patch():
    torch.manual_seed(0)
    tok = spectrogram_tokenizer((10, 23), (4, 6), (3, 5), dim=5)
    spec = torch.randn(2, 10, 23)
    (gf, gt), (pf, pt), (sf, st) = tok.grid_size, tok.patch_size, tok.stride
    padded = torch.zeros(2, (gf - 1) * sf + pf, (gt - 1) * st + pt)
    padded[:, :10, :23] = spec
    weight = tok.proj.weight.reshape(5, -1)  # (D, Pf*Pt)
    expected = torch.stack(
        [
            padded[:, i * sf : i * sf + pf, j * st : j * st + pt].reshape(2, -1) @ weight.T + tok.proj.bias
            for i in range(gf)
            for j in range(gt)
        ],
        dim=1,
    )  # (B, N, D), row-major
    torch.testing.assert_close(embed(tok, spec), expected)
    torch.testing.assert_close(patchify(spec[:, None], (4, 6), (3, 5), pad=True) @ weight.T + tok.proj.bias, expected)

    tokens = tok(spec[:, None])
    assert tokens.shape == (2, 1 + gf * gt, 5)
    torch.testing.assert_close(tokens[:, 0], (tok.cls_token[0] + tok.pos_embed[:, 0]).expand(2, -1))
    torch.testing.assert_close(tokens[:, 1:], expected + tok.pos_embed[:, 1:])


def test_patch_map_spreads_patch_values_as_the_mean_over_covering_patches():
    tok = spectrogram_tokenizer((64, 101), (16, 16), (8, 8), dim=4)
    n = tok.num_patches
    torch.testing.assert_close(tok.patch_map(torch.full((1, n), 0.3)), torch.full((1, 64, 101), 0.3))
    values = torch.rand(1, n)
    cells = tok.patch_map(values)
    for f, t in [(0, 0), (20, 50), (63, 100)]:
        expected = values[0, sorted(covering_patches(tok, f, t))].mean()
        torch.testing.assert_close(cells[0, f, t], expected)


def test_overlapping_patches_round_trip_through_unpatchify():
    torch.manual_seed(0)
    spec = torch.randn(2, 1, 10, 23, dtype=torch.float64)
    patches = patchify(spec, (4, 6), (3, 5), pad=True)
    assert patches.shape == (2, 3 * 5, 24)  # ceil((10 - 4) / 3) + 1 rows, ceil((23 - 6) / 5) + 1 columns
    torch.testing.assert_close(unpatchify(patches, (10, 23), (4, 6), (3, 5)), spec, rtol=0, atol=1e-12)


def test_wrong_spectrogram_shape_and_stride_are_named():
    tok = spectrogram_tokenizer((64, 101), 16, None, dim=4)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\).*got \(2, 64, 90\)"):
        tok(torch.zeros(2, 64, 90))  # a (B, F, T) spectrogram is not a one-channel image
    assert tok(torch.zeros(2, 1, 64, 90)).shape == (2, 1 + 4 * 6, 4)  # a shorter clip: positions resampled
    with pytest.raises(ValueError, match="patch_stride"):
        spectrogram_tokenizer((64, 101), 16, (0, 4), dim=4)


def test_conv_projection_matches_unfold_reference_for_square_patches():
    torch.manual_seed(1)
    tok = spectrogram_tokenizer((32, 48), 16, None, dim=6)
    spec = torch.randn(3, 32, 48)
    patches = F.unfold(spec[:, None], kernel_size=16, stride=16).transpose(1, 2)  # (B, N, 256) row-major
    torch.testing.assert_close(
        embed(tok, spec), patches @ tok.proj.weight.reshape(6, -1).T + tok.proj.bias, rtol=1e-5, atol=1e-5
    )
