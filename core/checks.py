"""Input checks that models run on every call, cheap wherever the tensors live."""

from __future__ import annotations

import torch
from torch import Tensor


def check_index_range(ids: Tensor, size: int, name: str = "token ids") -> None:
    """Raise if an entry of ``ids`` falls outside ``[0, size)``: a clear error instead of an opaque
    failure inside the embedding table that ``ids`` index.

    On the CPU the error names the range seen (a ``ValueError``). Elsewhere the check is an
    asynchronous device assert with the same message: reading the range back on the host would make
    the CPU wait for the GPU at every training step and every decoded token, emptying the queue of
    kernels that keeps a small model fast.
    """
    if not ids.numel() or torch.compiler.is_compiling():
        return  # while compiling or exporting, a data-dependent check would split the graph / stop torch.export
    if ids.device.type == "cpu":
        low, high = ids.aminmax()
        if bool((low < 0) | (high >= size)):
            raise ValueError(f"{name} must be in [0, {size}), got range [{low}, {high}]")
        return
    torch._assert_async(((ids >= 0) & (ids < size)).all(), f"{name} must be in [0, {size})")
