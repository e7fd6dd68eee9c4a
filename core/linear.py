"""``Linear``: an ``nn.Linear`` whose fp32 CPU matmuls run on oneDNN instead of MKL.

Why: torch sends an fp32 CPU matmul to MKL, and MKL takes a generic AVX2 path on AMD CPUs. On
the Zen 5 EPYC this suite is benchmarked on, oneDNN's JIT kernels (the ones torch.compile's
CPU freezing uses) run the same GEMMs about twice as fast: 337 against 170 GFLOP/s for a
2048^3 product on 2 threads, and a batch-1 decoding step's matrix-vector products, which
stream the weights from memory, in 1.3 ms instead of 3.3 ms (6 layers, D=384). Same
parameters, same state dict, same fp32 arithmetic (results agree with ``F.linear`` to fp32
rounding); only the kernel differs.

oneDNN costs ~10 us more per call than MKL, so products too small to gain (``ONEDNN_MIN_MACS``,
``ONEDNN_MIN_WEIGHT``) stay on MKL. Everywhere else (a GPU, autocast, other dtypes, or a torch
built without oneDNN) it is exactly ``nn.Linear``. Under ``torch.compile`` the product is the
opaque operator ``anyformer::onednn_linear``, so the compiled graph keeps the oneDNN kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

ONEDNN_MIN_MACS = 2**20
"""Products of at least this many multiply-adds (rows x in x out) go to oneDNN..."""
ONEDNN_MIN_WEIGHT = 2**17
"""...and so do those whose weight has at least this many entries (512 KiB in fp32): a batch-1
step reads such a matrix from memory, where oneDNN streams it ~2x faster than MKL. Below both,
MKL's lower per-call cost wins (a 1 x 128 x 512 product: 6 us against 16 us)."""


def onednn_matmul_t(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a @ b.T (+ bias)`` on oneDNN: a (..., K), b (N, K) -> (..., N). Strided operands are fine."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def _onednn_linear_works() -> bool:
    """Whether this torch has oneDNN's linear with the signature used here: it is the operator
    torch.compile's CPU freezing emits, not a documented API, so a torch that renamed it falls
    back to MKL instead of failing."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        return bool(onednn_matmul_t(torch.ones(2, 3), torch.ones(4, 3)).eq(3).all())
    except (RuntimeError, TypeError):
        return False


ONEDNN_AVAILABLE = _onednn_linear_works()


def _linear_backward(
    grad_out: Tensor, x: Tensor, weight: Tensor, needs_grad: tuple[bool, ...], has_bias: bool, matmul_t
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of ``x @ weight.T + bias``, the two products by ``matmul_t``."""
    grad_x = grad_weight = grad_bias = None
    if needs_grad[0]:
        grad_x = matmul_t(grad_out, weight.t(), None)  # (..., N) @ (N, K) -> (..., K)
    grad_rows = grad_out.reshape(-1, grad_out.shape[-1])  # (M, N)
    if needs_grad[1]:
        rows = x.reshape(-1, x.shape[-1])  # (M, K)
        # oneDNN reads a strided second operand in place but first copies a strided first operand to
        # row-major, and a transposing copy of M rows is slow (6.6 ms for 2048 x 1536): the smaller
        # of the two goes first.
        if rows.shape[1] < grad_rows.shape[1]:
            grad_weight = matmul_t(rows.t(), grad_rows.t(), None).t()  # ((K, M) @ (M, N))^T -> (N, K)
        else:
            grad_weight = matmul_t(grad_rows.t(), rows.t(), None)  # (N, M) @ (M, K) -> (N, K)
    if has_bias and needs_grad[2]:
        grad_bias = grad_rows.sum(0)
    return grad_x, grad_weight, grad_bias


class _OneDNNLinear(torch.autograd.Function):
    """Eager ``x @ W^T + b`` with the backward's two products on oneDNN as well (a Function costs
    ~10 us less per call than the custom operator below)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_matmul_t(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        return _linear_backward(grad_out, x, weight, ctx.needs_input_grad, ctx.has_bias, onednn_matmul_t)


@torch.library.custom_op("anyformer::onednn_linear", mutates_args=())
def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias`` on oneDNN as one operator that torch.compile leaves whole: its CPU
    lowering of oneDNN's own linear needs the weight frozen into the graph, a training graph's is not."""
    return onednn_matmul_t(x, weight, bias)


@onednn_linear.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _setup_context(ctx, inputs: tuple[Tensor, Tensor, Tensor | None], output: Tensor) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    x, weight = ctx.saved_tensors
    return _linear_backward(grad_out, x, weight, ctx.needs_input_grad, ctx.has_bias, onednn_linear)


onednn_linear.register_autograd(_backward, setup_context=_setup_context)


def uses_onednn(x: Tensor, weight: Tensor) -> bool:
    """Whether ``Linear`` runs this product on oneDNN: fp32 on the CPU without autocast, and big
    enough (``ONEDNN_MIN_MACS`` or ``ONEDNN_MIN_WEIGHT``) to repay oneDNN's per-call cost."""
    if not (ONEDNN_AVAILABLE and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32):
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    input_size, weight_size = x.numel(), weight.numel()
    if not input_size or not weight_size:
        return False  # oneDNN has no primitive for an empty product, and nothing to gain
    return weight_size >= ONEDNN_MIN_WEIGHT or (input_size // weight.shape[1]) * weight_size >= ONEDNN_MIN_MACS


class Linear(nn.Linear):
    """``nn.Linear`` with the fp32 CPU matmuls on oneDNN (see the module docstring for why)."""

    def forward(self, x: Tensor) -> Tensor:
        if not uses_onednn(x, self.weight):
            return F.linear(x, self.weight, self.bias)
        if torch.compiler.is_compiling():
            return onednn_linear(x, self.weight, self.bias)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _OneDNNLinear.apply(x, self.weight, self.bias)
        return onednn_matmul_t(x, self.weight, self.bias)  # inference: no autograd node to build
