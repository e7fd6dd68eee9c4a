"""Spectrograms as token sequences: cut into (possibly overlapping) patches, project each to D,
prepend [CLS], add learned 2-D positions (AST, Gong et al. 2021).

Shape notation: B batch, F mel bands, T frames, (Pf, Pt) patch size and (Sf, St) stride along
(frequency, time), (Gf, Gt) the patch grid, N = Gf * Gt patches, D width. Patches are numbered
row-major over the grid: token 1 + f*Gt + t covers bands [f*Sf, f*Sf + Pf) and frames
[t*St, t*St + Pt); token 0 is [CLS]. Band 0 is the lowest frequency.

A stride smaller than the patch makes neighbouring patches overlap, as in AST (16x16 patches,
stride 10). The spectrogram is padded at the high-frequency and late-time edges with zeros (the
mean of a normalized spectrogram) just enough for the grid to cover every band and frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def to_pair(value: int | tuple[int, int] | list[int], name: str = "size") -> tuple[int, int]:
    """``16`` -> ``(16, 16)``; ``(16, 8)`` stays (frequency, time)."""
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be a positive int or a (frequency, time) pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def grid_length(length: int, patch: int, stride: int) -> int:
    """Patches along one axis of ``length`` cells: the fewest windows of ``patch`` cells, ``stride``
    apart from 0, that cover every cell, i.e. ``ceil(max(length - patch, 0) / stride) + 1``."""
    if min(length, patch, stride) < 1:
        raise ValueError(f"length, patch and stride must be >= 1, got {length}, {patch}, {stride}")
    return math.ceil(max(length - patch, 0) / stride) + 1


def patch_grid(
    size: tuple[int, int], patch: tuple[int, int], stride: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (Gf, Gt) grid of an (F, T) spectrogram and the (bands, frames) of zero padding it needs."""
    grid = (grid_length(size[0], patch[0], stride[0]), grid_length(size[1], patch[1], stride[1]))
    padding = tuple((g - 1) * s + p - n for g, s, p, n in zip(grid, stride, patch, size))
    return grid, padding  # type: ignore[return-value]


def patchify(spec: Tensor, patch: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Cut spectrograms into the patches the tokenizer projects.

    Args:
        spec: (B, F, T).
        patch: (Pf, Pt).
        stride: (Sf, St).

    Returns:
        (B, N, Pf*Pt): row-major over the (Gf, Gt) grid, each patch flattened as (band, frame), the
        spectrogram zero-padded at its high-frequency and late-time edges as in ``patch_grid``.
    """
    _, padding = patch_grid(tuple(spec.shape[1:]), patch, stride)  # type: ignore[arg-type]
    x = F.pad(spec, (0, padding[1], 0, padding[0]))  # (B, F + pad_f, T + pad_t)
    return F.unfold(x.unsqueeze(1), kernel_size=patch, stride=stride).transpose(1, 2)  # (B, N, Pf*Pt)


def unpatchify(patches: Tensor, size: tuple[int, int], patch: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Inverse of :func:`patchify`: (B, N, Pf*Pt) -> (B, F, T) for an (F, T) ``size``.

    Each cell is the mean of the patches covering it and the padding is dropped, so without
    overlap (stride = patch) this is the exact inverse; with overlap it is exact up to the
    rounding of that mean.
    """
    grid, padding = patch_grid(size, patch, stride)
    n_cells = patch[0] * patch[1]
    if patches.ndim != 3 or patches.shape[1:] != (grid[0] * grid[1], n_cells):
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not tile a {size[0]}x{size[1]} spectrogram with "
            f"{patch[0]}x{patch[1]} patches at stride {stride} (expected (B, {grid[0] * grid[1]}, {n_cells}))"
        )
    padded = (size[0] + padding[0], size[1] + padding[1])
    columns = patches.transpose(1, 2)  # (B, Pf*Pt, N)
    total = F.fold(columns, padded, kernel_size=patch, stride=stride)  # (B, 1, F + pad_f, T + pad_t)
    count = F.fold(torch.ones_like(columns[:1]), padded, kernel_size=patch, stride=stride)
    return (total / count)[:, 0, : size[0], : size[1]]


class SpectrogramTokenizer(nn.Module):
    """Log-mel spectrogram (B, F, T) -> tokens (B, 1 + N, D): patch projection, [CLS], positions.

    The projection is ``Conv2d(1, D, kernel_size=(Pf, Pt), stride=(Sf, St))``, a linear map of each
    flattened patch. Positions are one learned (1, 1 + N, D) table, [CLS] first (timm's layout),
    so each (frequency, time) cell of the grid has its own vector; the grid is fixed by the clip
    length the model is built for.

    Args:
        size: (F, T) of the spectrograms the model reads.
        patch_size: (Pf, Pt), or one int for square patches.
        stride: (Sf, St), or one int; None means ``patch_size`` (no overlap).
        dim: D.
    """

    def __init__(
        self,
        size: tuple[int, int],
        patch_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None,
        dim: int,
    ) -> None:
        super().__init__()
        self.size = to_pair(size, "spectrogram size")
        self.patch_size = to_pair(patch_size, "patch_size")
        self.stride = self.patch_size if stride is None else to_pair(stride, "patch_stride")
        self.grid_size, self.padding = patch_grid(self.size, self.patch_size, self.stride)
        self.num_patches = math.prod(self.grid_size)
        self.proj = nn.Conv2d(1, dim, kernel_size=self.patch_size, stride=self.stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, dim))
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def embed_patches(self, spec: Tensor) -> Tensor:
        """(B, F, T) -> (B, N, D): one projected vector per patch, before [CLS] and positions."""
        if spec.ndim != 3 or tuple(spec.shape[1:]) != self.size:
            raise ValueError(
                f"expected a spectrogram of shape (B, {self.size[0]}, {self.size[1]}) (B, mel bands, frames), "
                f"got {tuple(spec.shape)}"
            )
        # A NaN/inf waveform gives a NaN spectrogram and silently NaN logits; log(mel + eps) of
        # finite audio is always finite, so this only rejects bad input.
        if not torch.isfinite(spec).all():
            bad = int((~torch.isfinite(spec)).flatten(1).any(1).sum())
            raise ValueError(
                f"{bad} of {spec.shape[0]} spectrograms hold NaN or infinite values (NaN/inf audio?); "
                "expected finite waveforms"
            )
        x = F.pad(spec, (0, self.padding[1], 0, self.padding[0]))  # (B, F + pad_f, T + pad_t)
        x = self.proj(x.unsqueeze(1))  # (B, D, Gf, Gt)
        return x.flatten(2).transpose(1, 2)  # (B, N, D), row-major over (Gf, Gt)

    def forward(self, spec: Tensor) -> Tensor:
        """(B, F, T) log-mel spectrogram -> (B, 1 + N, D) tokens, [CLS] first, positions added."""
        x = self.embed_patches(spec)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        return x + self.pos_embed.to(x.dtype)

    def patch_map(self, values: Tensor) -> Tensor:
        """Spread per-patch values back onto the spectrogram: each cell gets the mean of the patches
        covering it (for drawing attention over a spectrogram).

        Args:
            values: (B, N), row-major over the grid.

        Returns:
            (B, F, T).
        """
        n_cells = self.patch_size[0] * self.patch_size[1]
        patches = values.float()[:, :, None].expand(-1, -1, n_cells)  # (B, N, Pf*Pt): each patch constant
        return unpatchify(patches, self.size, self.patch_size, self.stride)
