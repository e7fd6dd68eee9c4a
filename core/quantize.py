"""Weight-only storage for decoding: the Linear weights in bf16 or int8, everything else in fp32.

Why: a batch-1 decoding step is a chain of matrix-vector products, each of which reads its whole
weight matrix from memory for one row of input, so the step's time follows the bytes of weight
it reads. Storing the weights in bf16 halves those bytes, in int8 (one scale per output channel,
symmetric, as LLM.int8()'s weight-only baseline and gpt-fast do) quarters them. The residual
stream, norms, attention and the KV cache stay fp32: only the weights are rounded.

Only for inference: the modules hold buffers, not parameters, and have no backward.

The int8 product is ``torch.ops.aten._weight_int8pack_mm`` (bf16 rows x int8 weight, scaled per
output channel): torch's own CPU kernel for int8 weight-only GEMV, the one torchao's int8
weight-only layout lowers to under ``torch.compile``. torchao's eager tensor-subclass path adds
Python dispatch per call, which at batch 1 costs more than the bytes it saves, so the kernel is
called directly here. A torch without that operator (or a device it does not cover) falls back
to multiplying by the dequantized weight: same numbers, no speed-up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyformer.core.decoding import GenerationConfig, generate

WEIGHT_DTYPES = ("fp32", "bf16", "int8")
"""What ``--dtype`` accepts: how the Linear weights are stored for decoding."""

INT8_PACK_MAX_ROWS = 16
"""Products of at most this many rows use the int8 GEMV kernel, whose time grows with each row;
longer ones (a prompt's prefill, a large batch) dequantize the weight to bf16 and run one bf16
GEMM, a fixed cost that the kernel passes at a few tens of rows (on a 2-core Zen 4 EPYC, a
384 -> 1536 product: the crossover lies between 16 and 64 rows)."""


def _int8_pack_mm_works() -> bool:
    """Whether this torch has the int8 weight-only CPU kernel with the signature used here (a
    private operator: a torch that renamed it falls back to the dequantized product)."""
    if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        return False
    try:
        rows, weight = torch.ones(1, 16, dtype=torch.bfloat16), torch.ones(8, 16, dtype=torch.int8)
        out = torch.ops.aten._weight_int8pack_mm(rows, weight, torch.ones(8, dtype=torch.bfloat16))
        return bool(out.float().eq(16).all())
    except (RuntimeError, TypeError):
        return False


INT8_PACK_AVAILABLE = _int8_pack_mm_works()


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8: ``weight ~= q * scale[:, None]``, q in [-127, 127].

    Returns:
        (N, K) int8 ``q`` and (N,) fp32 ``scale`` (a zero row gets scale 1, so q = 0 reproduces it).
    """
    absmax = weight.detach().float().abs().amax(dim=1)  # (N,)
    scale = torch.where(absmax > 0, absmax / 127.0, torch.ones_like(absmax))
    q = torch.round(weight.detach().float() / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class WeightOnlyLinear(nn.Module):
    """``x @ W^T + b`` with ``W`` stored in bf16 or int8; input and output keep the caller's dtype.

    The product runs in bf16 (its inputs rounded to bf16, accumulated in fp32 by the kernels);
    the bias, kept in fp32, is added after.
    """

    def __init__(self, linear: nn.Linear, dtype: str) -> None:
        super().__init__()
        if dtype not in ("bf16", "int8"):
            raise ValueError(f"WeightOnlyLinear stores bf16 or int8 weights, got {dtype!r}")
        self.dtype_name = dtype
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if dtype == "int8":
            q, scale = quantize_int8(linear.weight)
            self.register_buffer("weight", q)
            self.register_buffer("scale", scale.to(torch.bfloat16))
        else:
            self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16).clone())
            self.scale = None
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def dequantized(self) -> Tensor:
        """The stored weight as a bf16 (N, K) matrix."""
        if self.scale is None:
            return self.weight
        return self.weight.to(torch.bfloat16) * self.scale[:, None]

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, K)
        gemv = rows.shape[0] <= INT8_PACK_MAX_ROWS and x.device.type == "cpu"
        if self.scale is not None and INT8_PACK_AVAILABLE and gemv:
            out = torch.ops.aten._weight_int8pack_mm(rows.contiguous(), self.weight, self.scale)
        else:
            out = F.linear(rows, self.dequantized())
        out = out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight={self.dtype_name}"


KEEP_FP32 = ("lm_head",)
"""Linears left in fp32 by default: the head that produces the logits. Its output is what greedy
decoding compares, and rounding it (bf16 products return bf16) flips near-ties between tokens;
on a character GPT, storing every Linear but the head in int8 kept the greedy tokens of 32
prompts far closer to fp32's than storing the head too. bitsandbytes' int8 integration in
transformers leaves the LM head unquantized by default for the same reason."""


def store_weights(model: nn.Module, dtype: str, keep_fp32: tuple[str, ...] = KEEP_FP32) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`WeightOnlyLinear` of ``dtype``.

    ``fp32`` leaves the model as it is. Linears whose attribute name is in ``keep_fp32`` stay
    as they are; a head tied to an embedding keeps sharing it.

    Returns:
        ``model`` itself, in eval mode.
    """
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight dtype must be one of {list(WEIGHT_DTYPES)}, got {dtype!r}")
    model.eval()
    if dtype == "fp32":
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and name not in keep_fp32:
                setattr(parent, name, WeightOnlyLinear(child, dtype))
    return model


def weight_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one batch-1 decoding step reads: every Linear's weight (and scales and bias)
    and every norm's parameters, each tensor once (a tied head counts once); an embedding table is
    read one row at a time and does not count."""
    seen: dict[int, int] = {}
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.LayerNorm, nn.RMSNorm, WeightOnlyLinear)):
            tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
            for tensor in tensors:
                seen[id(tensor)] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


@torch.no_grad()
def greedy_agreement(reference: nn.Module, candidate: nn.Module, prompts: Tensor, new_tokens: int) -> float:
    """Share of the first ``new_tokens`` greedy positions where ``candidate`` picks ``reference``'s token.

    Position by position over every prompt row (B, T): a model that drifts off at position j and
    never returns scores j / new_tokens for that row, so early divergence costs the most.
    """
    cfg = GenerationConfig("greedy", max_new_tokens=new_tokens)
    expected = generate(reference, prompts, cfg)[:, prompts.shape[1] :]
    got = generate(candidate, prompts, cfg)[:, prompts.shape[1] :]
    return expected.eq(got).float().mean().item()


@torch.no_grad()
def mean_next_token_loss(model: nn.Module, windows: Tensor) -> float:
    """Mean next-token cross-entropy (nats) of (B, T) token windows, teacher-forced in one pass."""
    logits = model(windows[:, :-1]).float()  # (B, T-1, V)
    return F.cross_entropy(logits.transpose(1, 2), windows[:, 1:]).item()
