"""anyformer beside its peers, every target in one table.

    python -m anyformer.experiments.bench [--quick] [--device cuda] [--only gpt-cpu,vit-tiny] [--out FILE.md]
    python -m anyformer.experiments.bench --profile [--only gpt-cpu,gpt-gen] [--out-profile FILE.md]
    python -m anyformer.experiments.bench --only fit,scaling --out FILE.md   # whole fits; the scaling sweep

Training steps (forward + backward + AdamW) against transformers' GPT-2, x-transformers, a
minimal hand-written GPT and timm's ViT; MFU against a large matmul measured in the same run;
KV-cache decoding (greedy, beam, batched sampling) against transformers' ``generate()`` and
against the memory-bandwidth bound; peak training memory, each model in a fresh process.
``fit``: ``anyformer gpt fit`` of the main job (gpt-cpu) and at gpt-small, its tokens/s against the raw
step of the same model and where the rest of its time goes (bench/fit.py). ``scaling``: step time, peak
memory and attention's share against sequence length and width, with a plot beside ``--out``
(bench/scaling.py). With ``--out-profile`` the run also profiles the cases behind every row below its
target and writes them there (bench/explain.py).
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
import sys
from pathlib import Path

import torch

from anyformer.core.train import hardware
from anyformer.core.train.atomic import atomic_write_text
from anyformer.core.train.run_record import cpu_model
from anyformer.experiments.bench.explain import explain
from anyformer.experiments.bench.fit import fit_rows, fit_timings, render_fits
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
from anyformer.experiments.bench.scaling import FULL_GRID, QUICK_GRID, plot_scaling, render_scaling, scaling_points
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
SECTIONS = ("fit", "scaling")
"""Selectable by ``--only`` beside the shapes: the whole fits (gpt-cpu and gpt-small) and the scaling sweep."""
FIT_SHAPES = ["gpt-cpu", "gpt-small"]
SCALING_PLOT = "bench_scaling.png"  # written beside --out


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
        help=f"comma-separated, from {','.join(ALL_SHAPES + SECTIONS)} (default: all; on the CPU all but "
        f"{','.join(GPU_ONLY_SHAPES)})",
    )
    parser.add_argument("--out", type=Path, help="also write the table as markdown to this file")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats per measurement (default 5; --quick 1)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd anyformer rows (slow to compile)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows (one process per model)")
    parser.add_argument("--profile", action="store_true", help="profile where each step's time goes instead")
    parser.add_argument(
        "--out-profile",
        type=Path,
        help="with --profile: write the profile as markdown to this file; without: profile the cases behind "
        "every row below its target and write them there",
    )
    parser.add_argument("--profile-steps", type=int, help="with --profile: steps profiled per case (default 5)")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv  # for the header of the table
    default = default_shapes(args.device) + (() if args.profile else SECTIONS)
    only = ",".join(default) if args.only is None else args.only
    args.only = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in ALL_SHAPES + SECTIONS]
    if unknown or not args.only:
        parser.error(f"--only: unknown or empty {unknown or args.only}; choose from {', '.join(ALL_SHAPES + SECTIONS)}")
    if not args.profile and args.profile_steps is not None:
        parser.error("--profile-steps goes with --profile")
    if args.out_profile and args.device != "cpu":
        parser.error("--out-profile profiles CPU steps: drop --device cuda")
    if args.profile and [name for name in args.only if name in SECTIONS]:
        parser.error(f"--profile profiles shapes: {', '.join(SECTIONS)} are measured by a plain run")
    if args.profile and (args.out or args.compile or args.device != "cpu"):
        parser.error("--profile profiles eager CPU steps: drop --out (use --out-profile), --compile and --device cuda")
    args.profile_steps = 5 if args.profile_steps is None else args.profile_steps
    if args.profile_steps < 1:
        parser.error(f"--profile-steps must be >= 1, got {args.profile_steps}")
    return args


def make_runtime(args: argparse.Namespace) -> Runtime:
    repeats = args.repeats or (1 if args.quick else 5)
    return Runtime(
        device=args.device, threads=args.threads, repeats=repeats, calls=1 if args.quick else 3, compile=args.compile
    )


def run(args: argparse.Namespace, runtime: Runtime) -> tuple[list[Row], str]:
    """Measure the shapes ``args`` selects; returns the rows and a header saying how they were measured."""
    torch.set_num_threads(runtime.threads)
    matmul_size = 1024 if args.quick else (8192 if runtime.device == "cuda" else 2048)
    rows: list[Row] = []
    for name in args.only:
        if name in SECTIONS:
            continue  # run_sections
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


def run_sections(args: argparse.Namespace, runtime: Runtime) -> tuple[list[Row], list[str], list]:
    """The whole fits and the scaling sweep, where ``args.only`` selects them: their rows for the main
    table, their markdown sections, and the fits' timings (which the profile explains)."""
    rows, sections, fits = [], [], []
    if "fit" in args.only:
        fits = fit_timings(FIT_SHAPES, runtime, args.quick)
        rows += fit_rows(fits)
        if fits:
            sections.append(render_fits(fits))
    if "scaling" in args.only:
        grid = QUICK_GRID if args.quick else FULL_GRID
        sweep_runtime = dataclasses.replace(runtime, calls=1)  # steps of tens of ms and more: one per turn
        points = scaling_points(grid, sweep_runtime, memory=not args.no_memory)
        plot = None
        if args.out is not None:
            plot_scaling(points, args.out.parent / SCALING_PLOT)
            plot = SCALING_PLOT
        sections.append(render_scaling(points, grid, plot))
    return rows, sections, fits


def cpu_name() -> str:
    """The CPU model (Linux's /proc/cpuinfo) and core count, for the table's header."""
    signature = hardware.cpu_signature()
    family = f"family {signature['family']} model {signature['model']}, " if signature["family"] is not None else ""
    isa = " ".join(signature["isa"]) or "none of " + " ".join(hardware.ISA_FLAGS)
    units = "with" if hardware.has_bf16_units() else "without"
    return f"{cpu_model()}, {family}{os.cpu_count()} cores; ISA: {isa}; {units} bf16 units"


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


def write(path: Path, text: str) -> None:
    """``text`` to ``path`` in one piece (its folder made), and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    print(f"\nwrote {path}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.profile:
        report = run_profile(args)
        print(report, end="")
        if args.out_profile:
            write(args.out_profile, report)
        return
    runtime = make_runtime(args)
    rows, head = run(args, runtime)
    more_rows, sections, fits = run_sections(args, runtime)
    rows += more_rows
    print(head, end="\n\n")
    print(render_text(rows))
    for section in sections:
        print("\n" + section)
    if args.out:
        write(args.out, render_markdown(rows, head, sections))
    if args.out_profile:
        write(args.out_profile, explain(rows, fits, runtime, args.profile_steps, profile_header(args, runtime)))


if __name__ == "__main__":
    main()
