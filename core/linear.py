"""``Linear``: an ``nn.Linear`` whose fp32 CPU matmuls run on oneDNN instead of MKL.

Why: torch sends an fp32 CPU matmul to MKL, and MKL takes a generic AVX2 path on AMD CPUs. On
the Zen 5 EPYC this suite is benchmarked on, oneDNN's JIT kernels (the ones torch.compile's
CPU freezing uses) run the same GEMMs about twice as fast: 337 against 170 GFLOP/s for a
2048^3 product on 2 threads, and a batch-1 decoding step's matrix-vector products in less than
half the time. Same parameters, same state dict, same fp32 arithmetic (results agree with
``F.linear`` to fp32 rounding); only the kernel differs. Everywhere else (a GPU, autocast, other
dtypes, under ``torch.compile``, or a torch built without oneDNN) it is exactly ``nn.Linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_matmul_t(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ b.T (+ bias)`` on oneDNN: a (..., K), b (N, K) -> (..., N). Strided operands are fine."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b, with the backward's two GEMMs on oneDNN as well."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_matmul_t(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_matmul_t(grad_out, weight.t())  # (..., N) @ (N, K) -> (..., K)
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])  # (M, N)
        if ctx.needs_input_grad[1]:
            rows = x.reshape(-1, x.shape[-1])  # (M, K)
            grad_weight = _onednn_matmul_t(grad_rows.t(), rows.t())  # (N, M) @ (M, K) -> (N, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


def uses_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether ``Linear`` runs this input on oneDNN: fp32 on the CPU, no autocast, not compiling
    (the compiler picks its own kernels and cannot trace into a custom autograd function cheaply)."""
    return (
        ONEDNN_AVAILABLE
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


class Linear(nn.Linear):
    """``nn.Linear`` with the fp32 CPU matmuls on oneDNN (see the module docstring for why)."""

    def forward(self, x: Tensor) -> Tensor:
        if not uses_onednn(x, self.weight):
            return F.linear(x, self.weight, self.bias)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _OneDNNLinear.apply(x, self.weight, self.bias)
        return _onednn_matmul_t(x, self.weight, self.bias)  # inference: no autograd node to build
