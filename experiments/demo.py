"""``anyformer demo``: the main job, the whole suite at a tiny size, offline.

Runs ``experiments/demo.yaml`` (every task, and the cheap baselines, on data that needs no
download) through the experiment runner, so an interrupted demo resumes and a finished one is
not retrained; then prints one output per task from the trained checkpoints (a generated sample,
a classified sentence, a translation, a classified image and clip, Decision-Transformer returns at
two targets) and writes the comparative table to ``runs/demo/RESULTS.md``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from anyformer.core.cli.errors import ArgumentParser, reports_usage_errors
from anyformer.core.train.atomic import atomic_write_text
from anyformer.core.train.run_record import command_line, cpu_model
from anyformer.experiments import report, runner
from anyformer.experiments.comparison import RunSpec, load_comparison

PROG = "anyformer demo"
DEMO_FILE = Path(__file__).with_name("demo.yaml")
OUT_DIR = Path("runs/demo")  # inputs the outputs are made from, and RESULTS.md


def _ckpt(run: str) -> str:
    return str(runner.RUNS_DIR / run / "checkpoints" / "last.ckpt")


def write_inputs(out_dir: Path) -> tuple[Path, Path]:
    """A held-out 8x8 digit as a PNG and an eSpeak-synthesized spoken digit as a WAV file."""
    import soundfile
    from PIL import Image

    from anyformer.speech.synth import synthesize_digits
    from anyformer.vision.data import load_digits_tensors

    out_dir.mkdir(parents=True, exist_ok=True)
    _, _, test_images, test_labels = load_digits_tensors()
    image_path = out_dir / f"digit_{int(test_labels[0])}.png"
    Image.fromarray(test_images[0, 0].numpy(), mode="L").save(image_path)
    # seed 99: voices and noise the training set (seed 0 of speech_synthetic.yaml) never drew
    waves, labels = synthesize_digits(1, seed=99)
    clip_path = out_dir / f"spoken_{labels[7]}.wav"
    soundfile.write(clip_path, waves[7].numpy(), 8000)
    return image_path, clip_path


def output_commands(image: Path, clip: Path) -> list[tuple[str, list[str]]]:
    """(what it shows, ``anyformer`` arguments) of the output printed for each task."""
    return [
        ("GPT: a sample", ["generate", "--ckpt", _ckpt("demo_gpt"), "--prompt", "The ", "--max-new-tokens", "120",
                           "--strategy", "top-k", "--seed", "0"]),
        ("BERT: two sentences classified (code vs prose)",
         ["classify", "--ckpt", _ckpt("demo_bert_classify"), "--top-k", "1", ">>> x = [1, 2, 3]",
          "It returns a list."]),
        ("seq2seq: a translation into pseudo-French",
         ["translate", "--ckpt", _ckpt("demo_seq2seq"), "the value of the attribute is returned"]),
        ("ViT: a held-out digit image", ["classify", "--ckpt", _ckpt("demo_vit"), "--top-k", "3", str(image)]),
        ("speech: a spoken digit from an unseen voice",
         ["classify", "--ckpt", _ckpt("demo_speech"), "--top-k", "3", str(clip)]),
        ("Decision Transformer: CartPole returns at two target returns",
         ["rollout", "--ckpt", _ckpt("demo_dt"), "--targets", "100,500", "--episodes", "3", "--seed", "0"]),
    ]  # fmt: skip


def write_table(comparison, out_dir: Path, elapsed_s: float) -> Path:
    """The comparison's tables from the runs' logs, as markdown in ``out_dir/RESULTS.md``, with the
    wall time of this ``anyformer demo`` (finished runs it skipped count as nothing) and the CPU."""
    results = {
        spec.name: report.load_result(spec, runner.RUNS_DIR, comparison.plot)
        for spec in comparison.runs
        if isinstance(spec, RunSpec)
    }
    lines = [f"# {comparison.title}", "", comparison.description or "", ""]
    lines += [
        f"`anyformer demo` took {elapsed_s:.0f} s on {cpu_model()} ({os.cpu_count()} cores), outputs included.",
        "",
    ]
    for table in comparison.tables:
        lines += report.render_table(table, results)
    path = out_dir / "RESULTS.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    return parser


@reports_usage_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    comparison = load_comparison(DEMO_FILE)
    steps = runner.plan(comparison, runner.RUNS_DIR)
    start = time.monotonic()
    print(f"# {PROG}: {comparison.title} ({len(steps)} steps)", flush=True)
    for number, step in enumerate(steps, 1):
        elapsed = time.monotonic() - start
        print(f"\n[{number}/{len(steps)}] {elapsed:5.0f} s  {step.action:<6} {step.label} ({step.reason})", flush=True)
        print(f"    {command_line(step.argv)}", flush=True)
        if args.dry_run or step.action == "skip":
            continue
        if step.creates is not None:
            Path(step.creates).parent.mkdir(parents=True, exist_ok=True)
        if (status := runner.execute(step)) != 0:
            print(f"{PROG}: {step.label} failed (exit status {status}); rerun to resume", file=sys.stderr)
            return 1
    if args.dry_run:
        return 0
    image, clip = write_inputs(OUT_DIR)
    from anyformer.core.cli.main import main as anyformer

    status = 0
    for title, command in output_commands(image, clip):
        print(f"\n## {title}\n$ {command_line(['anyformer', *command])}", flush=True)
        status = max(status, anyformer(command))
    table = write_table(comparison, OUT_DIR, time.monotonic() - start)
    print(f"\n{table.read_text()}\nwrote {table} ({time.monotonic() - start:.0f} s in all)")
    return status
