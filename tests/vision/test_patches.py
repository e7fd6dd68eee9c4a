"""Patch order, patchify round trips, 2-D positions and input checks of the patch tokenizer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.layers import resample_abs_pos_embed

from anyformer.core.patches import PatchTokenizer, patchify, resample_grid_positions, sinusoidal_grid, unpatchify


def test_patchify_puts_each_patch_in_its_row_major_token() -> None:
    images = torch.zeros(1, 3, 8, 12)  # grid 2 x 3 with P = 4
    images[0, :, 4:8, 8:12] = 7.0  # grid row 1, column 2 -> token 1 * 3 + 2 = 5
    patches = patchify(images, 4)
    assert patches.shape == (1, 6, 4 * 4 * 3)
    changed = patches.abs().sum(-1)[0].nonzero().flatten().tolist()
    assert changed == [5]
    assert torch.all(patches[0, 5] == 7.0)


def test_patchify_flattens_a_patch_as_row_column_channel() -> None:
    images = torch.arange(2 * 2 * 2, dtype=torch.float32).reshape(1, 2, 2, 2)  # (B, C, H, W), one 2x2 patch
    # pixel (row r, column c, channel ch) sits at r*2*2 + c*2 + ch
    expected = [images[0, ch, r, c].item() for r in range(2) for c in range(2) for ch in range(2)]
    assert patchify(images, 2)[0, 0].tolist() == expected


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 4),
    patch=st.integers(1, 5),
    grid_h=st.integers(1, 4),
    grid_w=st.integers(1, 4),
)
def test_unpatchify_inverts_patchify_exactly(batch: int, channels: int, patch: int, grid_h: int, grid_w: int) -> None:
    images = torch.randn(batch, channels, grid_h * patch, grid_w * patch)
    patches = patchify(images, patch)
    assert patches.shape == (batch, grid_h * grid_w, patch * patch * channels)
    assert torch.equal(unpatchify(patches, (grid_h * patch, grid_w * patch), patch), images)
    assert torch.equal(patchify(unpatchify(patches, images.shape[-2:], patch), patch), patches)


def test_projection_is_a_linear_map_of_each_patchify_row() -> None:
    torch.manual_seed(0)
    tokenizer = PatchTokenizer((8, 12), patch_size=4, in_channels=3, dim=16)
    images = torch.randn(2, 3, 8, 12)
    weight = tokenizer.proj.weight.permute(0, 2, 3, 1).reshape(16, -1)  # (D, P*P*C) in patchify's order
    expected = patchify(images, 4) @ weight.T + tokenizer.proj.bias + tokenizer.pos_embed[:, 1:]
    tokens = tokenizer(images)
    assert tokens.shape == (2, 1 + 6, 16)
    torch.testing.assert_close(tokens[:, 1:], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens[:, 0], (tokenizer.cls_token + tokenizer.pos_embed[:, :1])[0].expand(2, -1))


def test_changing_one_patch_changes_only_its_token() -> None:
    torch.manual_seed(0)
    tokenizer = PatchTokenizer(16, patch_size=4, in_channels=1, dim=8)
    images = torch.randn(1, 1, 16, 16)
    edited = images.clone()
    edited[..., 8:12, 4:8] += 1.0  # grid row 2, column 1 -> token 1 + 2 * 4 + 1 = 10
    diff = (tokenizer(edited) - tokenizer(images)).abs().sum(-1)[0]
    assert diff.nonzero().flatten().tolist() == [10]


def test_same_size_resampling_is_the_identity() -> None:
    pos = torch.randn(1, 1 + 12, 8)
    assert resample_grid_positions(pos, (3, 4), (3, 4)) is pos
    tokenizer = PatchTokenizer((12, 16), patch_size=4, in_channels=1, dim=8)
    assert tokenizer.positions((3, 4)) is tokenizer.pos_embed


def test_resampling_matches_timm_and_is_smooth() -> None:
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 4 * 6, 8)
    ours = resample_grid_positions(pos, (4, 6), (8, 12))
    assert ours.shape == (1, 1 + 8 * 12, 8)
    torch.testing.assert_close(ours, resample_abs_pos_embed(pos, [8, 12], old_size=[4, 6], num_prefix_tokens=1))
    assert torch.equal(ours[:, 0], pos[:, 0])  # [CLS] position untouched
    # A linear ramp over the grid stays (nearly) a ramp: neighbours differ by about half the old step.
    rows = torch.arange(4.0)[:, None].expand(4, 6).reshape(1, -1, 1)
    ramp = torch.cat([torch.zeros(1, 1, 1), rows], dim=1)
    up = resample_grid_positions(ramp, (4, 6), (8, 12))[0, 1:, 0].reshape(8, 12)
    steps = up[1:] - up[:-1]
    assert torch.allclose(up[:, 0:1].expand(8, 12), up, atol=1e-5)  # constant along a row
    assert torch.all(steps[1:-1] > 0.3) and torch.all(steps[1:-1] < 0.7)


def test_tokenizer_accepts_a_doubled_image_with_interpolated_positions() -> None:
    tokenizer = PatchTokenizer(8, patch_size=4, in_channels=1, dim=8)
    assert tokenizer(torch.randn(2, 1, 16, 16)).shape == (2, 1 + 16, 8)
    assert tokenizer.positions((4, 4)).shape == (1, 17, 8)


def test_sinusoidal_positions_split_channels_into_row_and_column() -> None:
    table = sinusoidal_grid((3, 5), dim=16).reshape(3, 5, 16)
    assert torch.equal(table[:, :1, :8].expand(3, 5, 8), table[..., :8])  # first half: the row only
    assert torch.equal(table[:1, :, 8:].expand(3, 5, 8), table[..., 8:])  # second half: the column only
    assert len({tuple(row) for row in table.reshape(15, 16).tolist()}) == 15  # every patch distinct
    tokenizer = PatchTokenizer(12, patch_size=4, in_channels=1, dim=16, position="sinusoidal")
    assert tokenizer.pos_embed is None
    torch.testing.assert_close(tokenizer.positions((3, 3))[0, 1:], sinusoidal_grid((3, 3), 16))
    assert tokenizer(torch.randn(1, 1, 20, 8)).shape == (1, 1 + 10, 16)  # any grid, no table needed


def test_grayscale_model_rejects_rgb_input_with_a_clear_error() -> None:
    tokenizer = PatchTokenizer(8, patch_size=4, in_channels=1, dim=8)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, H, W\).*got \(2, 3, 8, 8\)"):
        tokenizer(torch.randn(2, 3, 8, 8))
    rgb = PatchTokenizer(8, patch_size=4, in_channels=3, dim=8)
    assert rgb(torch.randn(2, 3, 8, 8)).shape == (2, 5, 8)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*got \(8, 8\)"):
        rgb(torch.randn(8, 8))


def test_size_not_divisible_by_the_patch_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"10x8 \(HxW\) is not divisible by the patch size 4"):
        PatchTokenizer(8, patch_size=4, in_channels=1, dim=8)(torch.randn(1, 1, 10, 8))
    with pytest.raises(ValueError, match="not divisible by the patch size 3"):
        PatchTokenizer(8, patch_size=3, in_channels=1, dim=8)
    with pytest.raises(ValueError, match="position='rope' is not one of"):
        PatchTokenizer(8, patch_size=4, in_channels=1, dim=8, position="rope")


def test_without_positions_a_mean_pooled_vit_cannot_tell_where_a_patch_is() -> None:
    # No positions: tokens are a set, so shuffling the patches (pixels move with their patch)
    # permutes the tokens and leaves a mean-pooled prediction unchanged; with positions it changes.
    from anyformer.vision.vit import ViT, ViTConfig

    torch.manual_seed(0)
    images = torch.randn(2, 1, 12, 12)
    order = torch.randperm(9)
    shuffled = unpatchify(patchify(images, 4)[:, order], 12, 4)
    for position, invariant in [("none", True), ("sinusoidal", False), ("learned", False)]:
        model = ViT(ViTConfig(image_size=12, patch_size=4, pool="mean", position=position)).eval()
        if position == "learned":
            torch.nn.init.normal_(model.tokenizer.pos_embed, std=1.0)
        tokens, tokens_shuffled = model.tokenizer(images), model.tokenizer(shuffled)
        if invariant:
            torch.testing.assert_close(tokens_shuffled[:, 1:], tokens[:, 1 + order])
        same = torch.allclose(model(images), model(shuffled), atol=1e-5)
        assert same is invariant, position
