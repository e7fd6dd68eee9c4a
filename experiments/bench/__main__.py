"""anyformer beside its peers, every target in one table.

    python -m anyformer.experiments.bench [--quick] [--device cuda] [--only gpt-cpu,vit-tiny] [--out FILE.md]
    python -m anyformer.experiments.bench --profile [--only gpt-cpu,gpt-gen] [--out-profile FILE.md]

Training steps (forward + backward + AdamW) against transformers' GPT-2, x-transformers, a
minimal hand-written GPT and timm's ViT; MFU against a large matmul measured in the same run;
KV-cache decoding (greedy, beam, batched sampling) against transformers' ``generate()`` and
against the memory-bandwidth bound; peak training memory, each model in a fresh process.
Contenders take turns within each measurement (A, B, A, B, ...) and the median is reported,
so a busy machine slows all of them alike; read the ratios, not the absolute numbers.
On ``--device cuda`` everything runs under bf16 autocast and MFU is against bf16 matmul.

``--profile`` measures nothing against a target: it runs torch.profiler over a few warm steps
of each case (training steps; one decoded token at batch 1) and writes, per implementation,
where the step's CPU time goes: matmuls, elementwise kernels, views and copies, the autograd
engine, the optimizer and the time outside any operator.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
from pathlib import Path

import torch

from anyformer.core.train import hardware
from anyformer.core.train.atomic import atomic_write_text
from anyformer.experiments.bench.generation import generation_rows
from anyformer.experiments.bench.memory import memory_rows
from anyformer.experiments.bench.profile_cases import (
    DECODE_PROMPT,
    DECODE_SKIP,
    TRAIN_SKIP,
    profile_cases,
    render_profile,
)
from anyformer.experiments.bench.report import Row, render_markdown, render_text
from anyformer.experiments.bench.shapes import (
    ALL_SHAPES,
    GENERATION_SHAPES,
    GPT_SHAPES,
    GPU_ONLY_SHAPES,
    VIT_SHAPES,
    default_shapes,
)
from anyformer.experiments.bench.timing import Runtime
from anyformer.experiments.bench.train import gpt_train_rows, vit_train_rows

QUICK_NEW_TOKENS = (8, 32)  # --quick: generation lengths that keep a smoke run to seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m anyformer.experiments.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="1 repeat, short generations: a smoke test, not figures")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--only",
        help=f"comma-separated, from {','.join(ALL_SHAPES)} (default: all; on the CPU all but "
        f"{','.join(GPU_ONLY_SHAPES)})",
    )
    parser.add_argument("--out", type=Path, help="also write the table as markdown to this file")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats per measurement (default 5; --quick 1)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd anyformer rows (slow to compile)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows (one process per model)")
    parser.add_argument("--profile", action="store_true", help="profile where each step's time goes instead")
    parser.add_argument("--out-profile", type=Path, help="with --profile: write the profile as markdown to this file")
    parser.add_argument("--profile-steps", type=int, help="with --profile: steps profiled per case (default 5)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv  # for the header of the table
    only = ",".join(default_shapes(args.device)) if args.only is None else args.only
    args.only = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in ALL_SHAPES]
    if unknown or not args.only:
        parser.error(f"--only: unknown or empty {unknown or args.only}; choose from {', '.join(ALL_SHAPES)}")
    if not args.profile and (args.out_profile or args.profile_steps is not None):
        parser.error("--out-profile and --profile-steps go with --profile")
    if args.profile and (args.out or args.compile or args.device != "cpu"):
        parser.error("--profile profiles eager CPU steps: drop --out (use --out-profile), --compile and --device cuda")
    args.profile_steps = 5 if args.profile_steps is None else args.profile_steps
    if args.profile_steps < 1:
        parser.error(f"--profile-steps must be >= 1, got {args.profile_steps}")
    return args


def run(args: argparse.Namespace) -> tuple[list[Row], str]:
    """Measure what ``args`` selects; returns the rows and a header saying how they were measured."""
    repeats = args.repeats or (1 if args.quick else 5)
    runtime = Runtime(
        device=args.device, threads=args.threads, repeats=repeats, calls=1 if args.quick else 3, compile=args.compile
    )
    torch.set_num_threads(runtime.threads)
    matmul_size = 1024 if args.quick else (8192 if runtime.device == "cuda" else 2048)
    rows: list[Row] = []
    for name in args.only:
        if name in GPT_SHAPES:
            rows += gpt_train_rows(name, GPT_SHAPES[name], runtime, matmul_size)
            if not args.no_memory:
                rows += memory_rows(name, ["transformers", "x-transformers", "minimal"], runtime)
        elif name in VIT_SHAPES:
            rows += vit_train_rows(name, VIT_SHAPES[name], runtime)
            if not args.no_memory:
                rows += memory_rows(name, ["timm"], runtime)
        else:
            shape = GENERATION_SHAPES[name]
            if args.quick:
                shape = dataclasses.replace(shape, new_tokens=QUICK_NEW_TOKENS)
            rows += generation_rows(name, shape, runtime, quick=args.quick)
    return rows, header(args, runtime)


def cpu_name() -> str:
    """The CPU model (Linux's /proc/cpuinfo) and core count, for the table's header."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    name = names[0] if names else platform.processor() or platform.machine()
    signature = hardware.cpu_signature()
    family = f"family {signature['family']} model {signature['model']}, " if signature["family"] is not None else ""
    isa = " ".join(signature["isa"]) or "none of " + " ".join(hardware.ISA_FLAGS)
    units = "with" if hardware.has_bf16_units() else "without"
    return f"{name}, {family}{os.cpu_count()} cores; ISA: {isa}; {units} bf16 units"


def header(args: argparse.Namespace, runtime: Runtime) -> str:
    device = torch.cuda.get_device_name() if runtime.device == "cuda" else cpu_name()
    precision = "bf16 autocast" if runtime.device == "cuda" else "fp32"
    return "\n".join(
        [
            f"# anyformer benchmark{' (--quick: smoke test, not figures)' if args.quick else ''}",
            "",
            f"Command: `python -m anyformer.experiments.bench {' '.join(args.argv)}`".rstrip(),
            f"Measured {datetime.date.today()}: torch {torch.__version__}, {runtime.device} ({device}), {precision}, "
            f"{runtime.threads} CPU threads, median of {runtime.repeats} interleaved repeats.",
            "ratio > 1 means anyformer is better: throughput ours/peer; memory and ms/token peer/ours; "
            "MFU and bounds achieved/limit.",
        ]
    )


def profile_header(args: argparse.Namespace, runtime: Runtime) -> str:
    return "\n".join(
        [
            "# anyformer profile: where each step's time goes",
            "",
            f"Command: `python -m anyformer.experiments.bench {' '.join(args.argv)}`".rstrip(),
            f"Measured {datetime.date.today()}: torch {torch.__version__}, cpu ({cpu_name()}), fp32, "
            f"{runtime.threads} CPU threads, torch.profiler over {args.profile_steps} steps per implementation after "
            f"{TRAIN_SKIP + 1} unprofiled training steps, or after a {DECODE_PROMPT}-token prompt and "
            f"{DECODE_SKIP} unprofiled decoded tokens.",
            "",
            "Self CPU time: an operator's time minus the operators it calls, so the operators add up to the time "
            "spent in them; wall minus that is time outside any operator (Python, module calls, the profiler's "
            "bookkeeping). The profiler adds a few microseconds per operator call, so read the shares and the "
            "operator counts (exact whatever the machine's load) rather than the absolute times.",
        ]
    )


def run_profile(args: argparse.Namespace) -> str:
    """Profile what ``args.only`` selects; returns the markdown report."""
    runtime = Runtime(device=args.device, threads=args.threads, repeats=1, calls=1)
    torch.set_num_threads(runtime.threads)
    cases = profile_cases(args.only, runtime, args.profile_steps)
    return render_profile(cases, profile_header(args, runtime))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.profile:
        report = run_profile(args)
        print(report, end="")
        if args.out_profile:
            args.out_profile.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(args.out_profile, report)
            print(f"\nwrote {args.out_profile}")
        return
    rows, head = run(args)
    print(head, end="\n\n")
    print(render_text(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, render_markdown(rows, head))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
