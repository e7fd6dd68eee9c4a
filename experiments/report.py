"""``anyformer report``: result tables and learning curves, generated from the run logs alone.

For every comparison in ``experiments/comparisons/`` it reads ``runs/<name>/run.json`` (written by
``anyformer.core.train.callbacks.RunRecord``) and ``runs/<name>/metrics.csv`` (CSVLogger) of each declared run and
writes one section of ``RESULTS.md`` plus one ``<comparison>.png``. Nothing depends on the time of
the report itself (the stamps are the runs' own dates), so rerunning gives the same bytes.

``runs/`` holds checkpoints and is not committed, so the report keeps the logs it used (run.json,
metrics.csv, figure.png: kilobytes) in ``experiments/results/runs/<name>/``, which is. A run that
``runs/`` does not back (absent on a fresh clone, or rerunning) is read from that archive, so a
clean checkout regenerates the same tables from the committed logs alone.

The tables (cells, seed groups, equal-time reads, dirty and stale marks) are built in
:mod:`anyformer.experiments.report_tables`, the figure in :mod:`anyformer.experiments.report_plots`,
and whether a run is stale is asked of git in :mod:`anyformer.experiments.report_git`.

Evaluation runs (``command:`` entries, e.g. ``anyformer decode-eval``) are rows like any other: their
tool writes run.json itself.

A run without a finished record made by the declared command is listed as not run, never filled in.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from anyformer.core.cli.errors import ArgumentParser, UsageError, reports_usage_errors
from anyformer.core.train import run_record
from anyformer.core.train.atomic import atomic_open, atomic_write_text
from anyformer.core.train.run_record import command_line, same_command
from anyformer.experiments.budget import ran_its_course
from anyformer.experiments.comparison import (
    COMPARISONS_DIR,
    Comparison,
    Run,
    RunSpec,
    all_comparisons,
)
from anyformer.experiments.report_git import Git, code_paths
from anyformer.experiments.report_plots import plot_curves
from anyformer.experiments.report_tables import MISSING, RunResult, read_metrics_csv, render_table, stamp

__all__ = ["MISSING", "RESULTS_FILE", "main", "write_report"]

RESULTS_FILE = "RESULTS.md"
SUITE = "suite"  # the comparison whose tables the README shows
README_START, README_END = "<!-- suite-table:start -->", "<!-- suite-table:end -->"
ARCHIVE_DIR = "runs"  # under the report's output folder: experiments/results/runs/<name>/


ARCHIVED_FILES = (run_record.RUN_FILE, "metrics.csv", run_record.FIGURE_FILE, run_record.SAMPLES_FILE)
"""What the archive keeps of a run folder: its record, its logged metrics, its figure and its samples."""
SHOWN_SAMPLES = 5
"""Prompts of a comparison's ``samples`` runs shown side by side."""


def _load_from(spec: Run, run_dir: Path, metric: str) -> RunResult:
    record = run_record.read_record(run_dir)
    if record is None:
        return RunResult(spec, None, "not run")
    if not ran_its_course(record):
        return RunResult(spec, record, f"not finished ({record.get('status')})")
    if not same_command(record.get("argv", []), spec.argv()):
        return RunResult(spec, record, "not run (its folder holds another command's run)")
    last, curve, validations = read_metrics_csv(run_dir / "metrics.csv", metric)
    return RunResult(spec, record, None, last, curve, folder=run_dir, validations=validations)


def load_result(spec: Run, runs_dir: Path, metric: str, archive_dir: Path | None = None) -> RunResult:
    """The run's logs from ``runs_dir``, else from ``archive_dir`` when only the archive backs the row."""
    live = _load_from(spec, runs_dir / spec.name, metric)
    if live.problem is None or archive_dir is None:
        return live
    archived = _load_from(spec, archive_dir / spec.name, metric)
    if archived.problem is None or live.record is None:
        return archived
    return live


def archive_runs(results: dict[str, RunResult], runs_dir: Path, archive_dir: Path) -> list[Path]:
    """Copy the archived files of every row backed by ``runs_dir`` into ``archive_dir/<name>/``.

    Returns:
        The files whose bytes changed.
    """
    written = []
    for name, result in results.items():
        if result.problem is not None or result.folder != runs_dir / name:
            continue
        for file_name in ARCHIVED_FILES:
            source, target = result.folder / file_name, archive_dir / name / file_name
            if not source.is_file():
                target.unlink(missing_ok=True)  # e.g. an old figure the new run no longer draws
                continue
            data = source.read_bytes()
            if not target.is_file() or target.read_bytes() != data:
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_open(target) as file:
                    file.write(data)
                written.append(target)
    return written


def render_figures(comparison: Comparison, results: dict[str, RunResult], figure_files: dict[str, str]) -> list[str]:
    """A heading and, per figure run, the command that drew it, its image and its stamp (or why it is missing)."""
    if not comparison.figures:
        return []
    lines = ["### Figures", ""]
    for name in comparison.figures:
        result = results[name]
        lines += [f"{name}: `{command_line(result.spec.argv())}`", ""]
        if name in figure_files:
            lines += [f"![{name}]({figure_files[name]})", "", *stamp([result]), ""]
        else:
            lines += [f"Not drawn yet: {result.problem or 'no figure in its run folder'}.", ""]
    return lines


def copy_figures(comparison: Comparison, results: dict[str, RunResult], out_dir: Path) -> dict[str, str]:
    """Copy each finished figure run's ``figure.png`` to ``out_dir/<name>.png``; remove stale copies.

    Returns:
        Figure run name -> file name (in ``out_dir``) of the figures copied.
    """
    copied = {}
    for name in comparison.figures:
        result, target = results[name], out_dir / f"{name}.png"
        source = result.folder / run_record.FIGURE_FILE if result.folder is not None else None
        if result.problem is None and source is not None and source.is_file():
            data = source.read_bytes()
            if not target.is_file() or target.read_bytes() != data:
                with atomic_open(target) as file:
                    file.write(data)
            copied[name] = target.name
        else:
            target.unlink(missing_ok=True)  # a figure whose run is no longer backed must not stay
    return copied


def _cell(text: str) -> str:
    """Text as one Markdown table cell: on one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|") or " "


def render_samples(comparison: Comparison, results: dict[str, RunResult]) -> list[str]:
    """The first :data:`SHOWN_SAMPLES` prompts of the ``samples`` runs, one column per run (each
    continuation with the judge's probability of positive), or why a run has none."""
    if not comparison.samples:
        return []
    columns: dict[str, list[dict]] = {}
    missing = []
    for name in comparison.samples:
        result = results[name]
        path = result.folder / run_record.SAMPLES_FILE if result.folder is not None else None
        if result.problem is None and path is not None and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()[:SHOWN_SAMPLES]
            columns[name] = [json.loads(line) for line in lines]
        else:
            missing.append(f"{name}: {result.problem or 'no samples in its run folder'}")
    lines = ["### Samples", ""]
    if columns:
        names = list(columns)
        lines += [f"| prompt | {' | '.join(names)} |", "|---" * (len(names) + 1) + "|"]
        for row in range(min(len(samples) for samples in columns.values())):
            picked = [columns[name][row] for name in names]
            cells = [f"{_cell(sample['continuation'])} ({sample['judge']:.2f})" for sample in picked]
            lines.append(f"| {_cell(columns[names[0]][row]['prompt'])} | {' | '.join(cells)} |")
        lines += ["", "(judge's probability of positive)", ""]
    lines += [f"Not sampled yet: {item}." for item in missing]
    return lines + ([""] if missing else [])


def exercised(result: RunResult, results: dict[str, RunResult]) -> tuple[str, ...]:
    """The tasks (and tools) whose code a run's numbers depend on: its own, and those of the runs it
    reads (``after``: a rollout's numbers are the Decision Transformer's as much as the tool's, a DeiT
    student's are its teacher's too)."""
    tasks = [str(result.record.get("task"))] if result.record else []
    read = [results[name].record for name in result.spec.after if name in results]
    tasks += [str(record.get("task")) for record in read if record]
    return tuple(dict.fromkeys(tasks))


def mark_stale(results: dict[str, RunResult], git: Git) -> None:
    """Set each backed run's ``stale``: what changed in its exercised code and config since its commit,
    then, in declared order (a run reads only earlier ones), what changed in the runs it reads (their
    stale files) and which of them ended after it started (rerun since: it read an older version), down
    the whole chain of runs it reads."""
    for result in results.values():
        if result.backed:
            result.stale = git.stale(result.record, code_paths(*exercised(result, results), root=git.root))
    for result in results.values():
        if not result.backed:
            continue
        read = [results[name] for name in result.spec.after if name in results and results[name].backed]
        inherited = [path for other in read for path in other.stale]
        rerun = [other.spec.name for other in read if other.record["ended"] > result.record["started"]]
        # A run read through another one: "dpo → policy" when the DPO model this evaluation reads was
        # trained on a policy that was rerun since; the evaluation's numbers are as old as the DPO's.
        rerun += [f"{other.spec.name} → {name}" for other in read for name in other.reads_newer]
        result.stale = tuple(sorted({*result.stale, *inherited}))
        result.reads_newer = tuple(dict.fromkeys(rerun))


def seed_groups(comparison: Comparison) -> dict[str, str]:
    """Run name -> seed group, for the comparison's runs that have one."""
    return {spec.name: spec.group for spec in comparison.runs if spec.group}


def render_comparison(
    comparison: Comparison,
    results: dict[str, RunResult],
    plot_file: str | None,
    figure_files: dict[str, str] | None = None,
) -> str:
    lines = [f"## {comparison.name}: {comparison.title}", ""]
    if comparison.description:
        lines += [comparison.description, ""]
    lines += [f"Run it all (finished runs are skipped): `anyformer experiment {comparison.name}`. One by one:", ""]
    lines += [f"    {command_line(setup.argv())}" for setup in comparison.setup]
    for spec in comparison.runs:
        lines.append(f"    {command_line(spec.argv())}")
        if isinstance(spec, RunSpec) and "test" in spec.then:
            lines.append(f"    {command_line(spec.test_argv())}")
    lines.append("")
    for table in comparison.tables:
        lines += render_table(table, results, seed_groups(comparison))
    if plot_file is not None:
        alt = f"{comparison.plot} of {comparison.name} at equal steps, at equal wall-clock time, and final values"
        lines += [f"![{alt}]({plot_file})", ""]
    else:
        lines += [f"No {comparison.plot} learning curve logged yet.", ""]
    lines += render_figures(comparison, results, figure_files or {})
    lines += render_samples(comparison, results)
    return "\n".join(lines)


def readme_with_suite(readme: str, tables: list[str], link: str) -> str | None:
    """``readme`` with the text between the suite-table markers replaced by ``tables``; None without markers."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        return None
    block = [README_START, f"<!-- generated by `anyformer report` from the suite's runs; see {link} -->", ""]
    block += [line.replace("### ", "#### ", 1) if line.startswith("### ") else line for line in tables]
    return readme[:start] + "\n".join(block).rstrip("\n") + "\n\n" + readme[end:]


def write_report(
    comparisons: list[Comparison],
    runs_dir: Path,
    out_dir: Path,
    readme: Path | None = None,
    archive_dir: Path | None = None,
) -> list[Path]:
    """Write RESULTS.md and one PNG per comparison that has curves; return the files written.

    The logs of rows backed by ``runs_dir`` are copied to ``archive_dir`` (default
    ``out_dir/runs``), and rows that ``runs_dir`` does not back are read from there.

    With ``readme`` holding the suite-table markers, the suite comparison's tables (with their
    commands' stamps) replace the text between them, so the README shows the same generated table.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    archive_dir = out_dir / ARCHIVE_DIR if archive_dir is None else archive_dir
    git = Git.of(Path.cwd())
    sections, written, suite_tables = [], [], []
    for comparison in comparisons:
        results = {spec.name: load_result(spec, runs_dir, comparison.plot, archive_dir) for spec in comparison.runs}
        if git is not None:
            mark_stale(results, git)
        written += archive_runs(results, runs_dir, archive_dir)
        groups = seed_groups(comparison)
        if comparison.name == SUITE:
            suite_tables = [line for table in comparison.tables for line in render_table(table, results, groups)]
        png = out_dir / f"{comparison.name}.png"
        if plot_curves(comparison, results, png, groups):
            written.append(png)
        else:
            png.unlink(missing_ok=True)  # a stale figure would show runs no longer backed
        figures = copy_figures(comparison, results, out_dir)
        written += [out_dir / file for file in figures.values()]
        sections.append(render_comparison(comparison, results, png.name if png in written else None, figures))
    header = [
        "# Results",
        "",
        "Generated by `anyformer report` from the run logs (`runs/<run>/run.json`, `runs/<run>/metrics.csv`) of",
        "the comparisons declared in `experiments/comparisons/`. Do not edit: rerun the experiment and the report.",
        f"The logs behind every row are kept in `{ARCHIVE_DIR}/` beside this file, so a fresh clone regenerates it.",
        f"Empty cells ({MISSING}) are metrics a run does not log; runs not finished by the declared command are",
        "listed as such, never filled in. A row marked † was made from a tree with uncommitted changes; one marked",
        "(stale) ran before a commit that changed the code of its task (`core/`, or a module of its domain that the",
        "task imports) or the settings of its config, or reads a run (a teacher, a pretrained model) that is stale or",
        "was rerun after it started: rerun those.",
        "Seeds of one setting are one row, mean ± std (n), with the per-seed rows folded below the table.",
        "",
    ]
    results_md = out_dir / RESULTS_FILE
    atomic_write_text(results_md, "\n".join(itertools.chain(header, sections)).rstrip("\n") + "\n")
    written.insert(0, results_md)
    if readme is not None and readme.is_file() and suite_tables:
        link = results_md.as_posix()
        updated = readme_with_suite(readme.read_text(encoding="utf-8"), suite_tables, link)
        if updated is not None and updated != readme.read_text(encoding="utf-8"):
            atomic_write_text(readme, updated)
            written.append(readme)
    return written


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="anyformer report",
        description="Regenerate RESULTS.md and the learning-curve PNGs from the run logs of every comparison.",
    )
    parser.add_argument("--runs", default="runs", help="folder holding the run folders")
    parser.add_argument(
        "--out",
        default="experiments/results",
        help=f"folder for RESULTS.md, the PNGs and the archived logs ({ARCHIVE_DIR}/)",
    )
    parser.add_argument("--comparisons", default=str(COMPARISONS_DIR), help="folder of comparison YAML files")
    parser.add_argument(
        "--readme", default="README.md", help=f"file whose {README_START} ... {README_END} block gets the suite tables"
    )
    return parser


@reports_usage_errors("anyformer report")
def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    comparisons = all_comparisons(args.comparisons)
    if not comparisons:
        raise UsageError(f"--comparisons {args.comparisons} holds no comparison (*.yaml) files")
    for path in write_report(comparisons, Path(args.runs), Path(args.out), Path(args.readme)):
        print(f"wrote {path}")
    return 0
