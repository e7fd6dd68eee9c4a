"""Where and how the benchmark measures: the runtime (device, threads, precision), interleaved
A/B timing, and the machine's own limits (matmul FLOP/s, memory bandwidth) measured in the same run.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from anyformer.core.linear import ONEDNN_AVAILABLE, onednn_matmul_t


@dataclass(frozen=True)
class Runtime:
    """The settings every measurement of one run shares."""

    device: str = "cpu"
    """``cpu`` (fp32) or ``cuda`` (bf16 autocast)."""
    threads: int = 2
    """CPU threads for intra-op parallelism."""
    repeats: int = 5
    """Interleaved repeats per measurement; the median is reported."""
    calls: int = 3
    """Calls timed together per repeat (training steps)."""
    compile: bool = False
    """Also time ``torch.compile``d anyformer training against eager."""

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"Runtime.device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("Runtime.device='cuda' but torch.cuda.is_available() is False")
        if min(self.threads, self.repeats, self.calls) < 1:
            raise ValueError("Runtime.threads, repeats and calls must be >= 1")

    @property
    def dtype(self) -> torch.dtype:
        """The precision matmuls run in: the MFU denominator is measured at this dtype."""
        return torch.bfloat16 if self.device == "cuda" else torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], runtime: Runtime, calls: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, taking turns every repeat so that all of them
    see the same machine state; one untimed warm-up call each first. The order rotates every
    repeat (A B C, B C A, C A B, ...) so that no function always runs right after the same one."""
    for fn in fns.values():
        fn()
    runtime.sync()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for repeat in range(runtime.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            runtime.sync()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in times.items()}


def matmul_probes(runtime: Runtime, size: int) -> tuple[dict[str, Callable[[], object]], float]:
    """Large (size x size) @ (size x size) matmuls at ``runtime.dtype``, by name, and their FLOPs:
    timed beside the training steps, the fastest is the MFU denominator for the same minutes of the
    machine. On the CPU both of torch's fp32 GEMM libraries are measured, ``torch.mm`` (MKL) and
    oneDNN (what ``anyformer.core.linear.Linear`` calls): the machine's limit is the faster one, and on AMD
    CPUs that is not MKL."""
    a = torch.randn(size, size, device=runtime.device, dtype=runtime.dtype)
    b = torch.randn(size, size, device=runtime.device, dtype=runtime.dtype)
    dtype = "bf16" if runtime.dtype == torch.bfloat16 else "fp32"
    probes: dict[str, Callable[[], object]] = {f"torch.mm {dtype}": lambda: torch.mm(a, b)}
    if runtime.device == "cpu" and ONEDNN_AVAILABLE:
        b_t = b.t().contiguous()  # oneDNN's linear computes a @ w.T
        probes[f"oneDNN {dtype}"] = lambda: onednn_matmul_t(a, b_t)
    return probes, 2.0 * size**3


def copy_probe(runtime: Runtime, n_bytes: int) -> tuple[Callable[[], object], float]:
    """A large tensor copy and the bytes it moves (each read once and written once): the
    memory bandwidth that bounds a batch-1 decoding step."""
    src = torch.empty(n_bytes // 4, device=runtime.device, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2.0 * src.numel() * 4
