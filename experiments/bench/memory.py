"""Peak memory of a training step, each model measured in a fresh Python process.

CPU: the peak resident set over two optimizer steps (the second one holds AdamW's state) minus
the resident set just before the model is built. On Linux the peak is ``VmHWM``, reset to the
current size through ``/proc/self/clear_refs`` at the start (``getrusage``'s maxrss survives
``exec``, so a child of a big process would inherit its parent's peak); elsewhere maxrss. CUDA:
``torch.cuda.max_memory_allocated`` over the same span. tracemalloc would miss both, since it
does not see tensor storage.

    python -m anyformer.experiments.bench.memory gpt-cpu transformers --device cpu --threads 2   # prints bytes
    python -m anyformer.experiments.bench.memory gpt:8,256,6,6,384,65 minimal   # any GPT shape: B,T,L,H,D,V
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from anyformer.experiments.bench.peers import GPT_PEERS, VIT_PEERS
from anyformer.experiments.bench.report import Row
from anyformer.experiments.bench.shapes import GPT_SHAPES, VIT_SHAPES, GPTShape, ViTShape
from anyformer.experiments.bench.timing import Runtime
from anyformer.experiments.bench.train import gpt_batch, train_step, vit_batch

MIB = 2**20


STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` size (VmRSS, VmHWM), which Linux gives in KiB."""
    for line in STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{STATUS} has no {field} line")


def _start_cpu_peak() -> int:
    """Restart peak tracking here; returns the current resident bytes (the baseline)."""
    if STATUS.exists() and CLEAR_REFS.exists():
        CLEAR_REFS.write_text("5")  # resets VmHWM to the current VmRSS
        return _status_bytes("VmRSS")
    return _maxrss_bytes()


def _cpu_peak() -> int:
    return _status_bytes("VmHWM") if STATUS.exists() and CLEAR_REFS.exists() else _maxrss_bytes()


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


TINY_GPT = GPTShape(batch=2, context=8, n_layers=1, n_heads=2, dim=16, vocab=8)
TINY_VIT = ViTShape(batch=2, image_size=8, channels=3, patch_size=4, dim=16, depth=1, n_heads=2)


def _warm_up(build: Callable, shape: GPTShape | ViTShape, batch: Callable, runtime: Runtime) -> None:
    """Two steps of the same library's model at a tiny size, so that one-off costs (imports,
    the autograd engine, kernel workspaces, a library's lazy set-up) fall before the baseline."""
    step = train_step(build(shape), *batch(shape), runtime)
    step()
    step()


GPT_SPEC = "gpt:"


def gpt_spec(shape: GPTShape) -> str:
    """A GPT shape outside ``GPT_SHAPES`` as a name :func:`measure_here` takes: ``gpt:B,T,L,H,D,V``."""
    return GPT_SPEC + ",".join(str(n) for n in (shape.batch, shape.context, shape.n_layers, shape.n_heads,
                                                shape.dim, shape.vocab))  # fmt: skip


def measure_here(shape_name: str, peer: str, runtime: Runtime) -> int:
    """Peak bytes of two training steps of ``peer`` at ``shape_name`` (a name of ``GPT_SHAPES`` or
    ``VIT_SHAPES``, or a :func:`gpt_spec`), in this process."""
    torch.set_num_threads(runtime.threads)
    torch.manual_seed(0)
    if shape_name.startswith(GPT_SPEC):
        sizes = (int(n) for n in shape_name[len(GPT_SPEC) :].split(","))
        shape, builders, batch = GPTShape(*sizes), GPT_PEERS, gpt_batch
    elif shape_name in GPT_SHAPES:
        shape, builders, batch = GPT_SHAPES[shape_name], GPT_PEERS, gpt_batch
    elif shape_name in VIT_SHAPES:
        shape, builders, batch = VIT_SHAPES[shape_name], VIT_PEERS, vit_batch
    else:
        raise ValueError(f"no training shape named {shape_name!r}; known: {[*GPT_SHAPES, *VIT_SHAPES]}")
    if peer not in builders:
        raise ValueError(f"no peer named {peer!r} for {shape_name}; known: {list(builders)}")
    _warm_up(builders[peer], TINY_GPT if isinstance(shape, GPTShape) else TINY_VIT, batch, runtime)
    inputs, targets = batch(shape)
    if runtime.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _start_cpu_peak()
    step = train_step(builders[peer](shape), inputs, targets, runtime)
    step()
    step()
    runtime.sync()
    return (torch.cuda.max_memory_allocated() if runtime.device == "cuda" else _cpu_peak()) - before


def measure_in_subprocess(shape_name: str, peer: str, runtime: Runtime) -> int:
    """Peak bytes of ``peer``'s training step, measured by a fresh interpreter."""
    command = [
        sys.executable, "-m", "anyformer.experiments.bench.memory", shape_name, peer,
        "--device", runtime.device, "--threads", str(runtime.threads),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(runtime.threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory measurement of {peer} at {shape_name} failed:\n{result.stderr[-2000:]}")
    return int(result.stdout.strip().splitlines()[-1])


def memory_rows(shape_name: str, peers: list[str], runtime: Runtime) -> list[Row]:
    """anyformer's peak training memory beside each peer's (ratio > 1: anyformer needs less)."""
    mib = {peer: measure_in_subprocess(shape_name, peer, runtime) / MIB for peer in ["anyformer", *peers]}
    return [
        Row(shape_name, "train peak memory", "MiB", mib["anyformer"], peer, mib[peer], higher_is_better=False)
        for peer in peers
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", help=f"one of {[*GPT_SHAPES, *VIT_SHAPES]} or {GPT_SPEC}B,T,L,H,D,V")
    parser.add_argument("peer")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(measure_here(args.shape, args.peer, Runtime(device=args.device, threads=args.threads)))


if __name__ == "__main__":
    main()
