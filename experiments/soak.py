"""``anyformer soak``: a long fit that validates, checkpoints and logs, with its memory sampled.

Runs ``anyformer <task> fit`` (by default the tiny GPT of ``experiments/text/gpt_demo.yaml``, a
validation and a ``last.ckpt`` every ``--val-every`` steps, a metrics row every 10) for ``--minutes``
of wall clock (``--trainer.max_time``; ``max_steps`` is 10^9, so the schedule stays at its peak), in a
child process whose resident memory (the fit and its DataLoader workers, read from ``/proc``) is
sampled every ``--interval-s`` seconds. Written to ``runs/<run-name>/``: ``soak.csv`` (elapsed_s,
rss_mb per sample), ``soak.log`` (the fit's output) and ``run.json`` with the metrics a comparison
table shows (``anyformer.core.train.run_record.record_evaluation``):

- ``rss_start_mb``: the first sample after the warm-up (the first ``--warmup`` share of the samples:
  imports, the first validation and checkpoint), the baseline;
- ``rss_end_mb``, ``rss_max_mb``; ``rss_growth_mb`` = end - start;
- ``rss_slope_mb_per_h``: least-squares slope of the samples after the warm-up (a leak shows as a
  steady positive slope, noise as a slope near 0);
- ``minutes``, ``samples``, ``steps`` (the fit's last step) and ``fit_status`` (0 when it ended well).

The fit itself is ``runs/<run-name>_fit/``. Usage (the lead's 30-minute run; ``--minutes 1`` to try it)::

    OMP_NUM_THREADS=1 anyformer soak --minutes 30 --run-name soak_gpt
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from anyformer.core.cli.errors import ArgumentParser, UsageError, reports_usage_errors
from anyformer.core.train import run_record

DEFAULT_CONFIG = Path(__file__).resolve().parent / "text" / "gpt_demo.yaml"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") / 1024


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MiB (Linux ``/proc``; 0 once it is gone)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # field 4: ppid
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent and child not in tree]
        tree.update(children)
        frontier += children
    total_kb = 0.0
    for member in tree:
        try:
            total_kb += int((Path("/proc") / str(member) / "statm").read_text().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            continue
    return total_kb / 1024


def slope_per_hour(times_s: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` over ``times_s``, per hour (0 for fewer than two samples)."""
    n = len(times_s)
    if n < 2:
        return 0.0
    mean_t, mean_v = sum(times_s) / n, sum(values) / n
    spread = sum((t - mean_t) ** 2 for t in times_s)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in zip(times_s, values)) / spread * 3600


def summarize(samples: list[tuple[float, float]], warmup: float) -> dict[str, float]:
    """The memory metrics (module docstring) of ``(elapsed_s, rss_mb)`` samples."""
    if not samples:
        raise UsageError("the fit ended before the first memory sample; run it longer or sample more often")
    settled = samples[min(int(len(samples) * warmup), len(samples) - 1) :]
    times, rss = [t for t, _ in settled], [r for _, r in settled]
    return {
        "rss_start_mb": rss[0],
        "rss_end_mb": rss[-1],
        "rss_max_mb": max(r for _, r in samples),
        "rss_growth_mb": rss[-1] - rss[0],
        "rss_slope_mb_per_h": slope_per_hour(times, rss),
        "samples": len(samples),
    }


def fit_command(args, fit_name: str) -> list[str]:
    seconds = max(1, round(args.minutes * 60))
    max_time = f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return [
        sys.executable, "-m", "anyformer.core.cli.main", args.task, "fit", "--config", args.config,
        "--run-name", fit_name, "--trainer.max_time", max_time, "--trainer.max_steps", str(10**9),
        "--trainer.max_epochs", "-1", "--trainer.val_check_interval", str(args.val_every),
        "--trainer.check_val_every_n_epoch", "null", "--trainer.log_every_n_steps", "10",
        "--trainer.enable_progress_bar", "false", *args.overrides,
    ]  # fmt: skip


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="anyformer soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock length of the fit (default 30)")
    parser.add_argument("--interval-s", type=float, default=5.0, help="seconds between memory samples (default 5)")
    parser.add_argument("--warmup", type=float, default=0.1, help="share of the samples before the baseline")
    parser.add_argument("--task", default="gpt", help="the task to fit (default gpt)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="its config (default the tiny GPT demo)")
    parser.add_argument("--val-every", type=int, default=200, help="steps between validations and checkpoints")
    parser.add_argument("--run-name", required=True, help="runs/<name>/ gets the report; the fit is <name>_fit")
    parser.add_argument("overrides", nargs="*", help="more fit options, after `--` (e.g. -- --data.batch_size 8)")
    return parser


@reports_usage_errors("anyformer soak")
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    typed = ["anyformer", "soak", *argv]
    run_dir = run_record.evaluation_dir(args.run_name, typed)
    if args.minutes <= 0 or args.interval_s <= 0 or not 0 <= args.warmup < 1:
        raise UsageError("--minutes and --interval-s must be > 0 and --warmup in [0, 1)")
    started = run_record.utc_now()
    fit_name = f"{args.run_name}_fit"
    run_dir.mkdir(parents=True, exist_ok=True)
    samples: list[tuple[float, float]] = []
    with (run_dir / "soak.log").open("w") as log:
        child = subprocess.Popen(fit_command(args, fit_name), stdout=log, stderr=subprocess.STDOUT)
        begin = time.monotonic()
        try:
            while child.poll() is None:
                time.sleep(args.interval_s)
                rss = tree_rss_mb(child.pid)
                if child.poll() is None and rss > 0:
                    samples.append((time.monotonic() - begin, rss))
        finally:
            if child.poll() is None:
                child.kill()
            status = child.wait()
    with (run_dir / "soak.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["elapsed_s", "rss_mb"])
        writer.writerows((f"{t:.1f}", f"{r:.1f}") for t, r in samples)
    metrics = summarize(samples, args.warmup)
    fit_record = run_record.read_record(Path("runs") / fit_name) or {}
    metrics |= {"minutes": args.minutes, "steps": float(fit_record.get("step") or 0), "fit_status": float(status)}
    run_record.record_evaluation(run_dir, typed, metrics, started, run_record.utc_now())
    for name, value in metrics.items():
        print(f"{name} {value:.2f}")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
