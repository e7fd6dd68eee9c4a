"""``anyformer report``: result tables and learning curves, generated from the run logs alone.

For every comparison in ``experiments/comparisons/`` it reads ``runs/<name>/run.json`` (written by
``anyformer.core.train.callbacks.RunRecord``) and ``runs/<name>/metrics.csv`` (CSVLogger) of each declared run and
writes one section of ``RESULTS.md`` plus one ``<comparison>.png``. Nothing depends on the time of
the report itself (the stamps are the runs' own dates), so rerunning gives the same bytes.

``runs/`` holds checkpoints and is not committed, so the report keeps the logs it used (run.json,
metrics.csv, figure.png: kilobytes) in ``experiments/results/runs/<name>/``, which is. A run that
``runs/`` does not back (absent on a fresh clone, or rerunning) is read from that archive, so a
clean checkout regenerates the same tables from the committed logs alone.

A table cell is a run fact or a metric:

- ``params``, ``wall_s`` (fit seconds, WallClock), ``step``, ``device`` (GPU or CPU threads),
  ``threads``, ``status``: from run.json (an evaluation run has no params, wall_s or step);
- any other key (``val_bpc``, ``test_acc``, ``gen_ppl``, ...): the run's final value, from run.json's
  metrics, else the last value in metrics.csv.

Evaluation runs (``command:`` entries, e.g. ``anyformer decode-eval``) are rows like any other: their
tool writes run.json itself.

A run without a finished record made by the declared command is listed as not run, never filled in.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyformer.core.cli.errors import ArgumentParser, UsageError, reports_usage_errors
from anyformer.core.train import run_record
from anyformer.core.train.atomic import atomic_open, atomic_write_text
from anyformer.core.train.run_record import command_line, same_command
from anyformer.experiments.comparison import (
    COMPARISONS_DIR,
    Comparison,
    Run,
    RunSpec,
    TableSpec,
    all_comparisons,
)

RESULTS_FILE = "RESULTS.md"
SUITE = "suite"  # the comparison whose tables the README shows
README_START, README_END = "<!-- suite-table:start -->", "<!-- suite-table:end -->"
MISSING = "—"
ARCHIVE_DIR = "runs"  # under the report's output folder: experiments/results/runs/<name>/


@dataclass
class RunResult:
    """What the logs hold about one declared run."""

    spec: Run
    record: dict[str, Any] | None
    problem: str | None
    """Why the run cannot back a table row (``not run``, ``not finished (failed)``, ...), else None."""
    last_logged: dict[str, float] = field(default_factory=dict)
    """Column of metrics.csv -> its last non-empty value."""
    curve: list[tuple[int, float | None, float]] = field(default_factory=list)
    """(step, wall_s, value) of every logged value of the plotted metric."""
    folder: Path | None = None
    """The run folder the logs were read from (``runs/<name>`` or its archived copy)."""


def read_metrics_csv(path: Path, metric: str) -> tuple[dict[str, float], list[tuple[int, float | None, float]]]:
    """Last value of every column, and the (step, wall_s, value) points of ``metric``."""
    last, curve = {}, []
    if not path.is_file():
        return last, curve
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            last.update({key: float(value) for key, value in row.items() if key and value})
            if row.get(metric):
                wall = float(row["wall_s"]) if row.get("wall_s") else None
                curve.append((int(float(row["step"])), wall, float(row[metric])))
    return last, curve


ARCHIVED_FILES = (run_record.RUN_FILE, "metrics.csv", run_record.FIGURE_FILE)
"""What the archive keeps of a run folder: its record, its logged metrics and its figure."""


def _load_from(spec: Run, run_dir: Path, metric: str) -> RunResult:
    record = run_record.read_record(run_dir)
    if record is None:
        return RunResult(spec, None, "not run")
    if record.get("status") != "finished":
        return RunResult(spec, record, f"not finished ({record.get('status')})")
    if not same_command(record.get("argv", []), spec.argv()):
        return RunResult(spec, record, "not run (its folder holds another command's run)")
    last, curve = read_metrics_csv(run_dir / "metrics.csv", metric)
    return RunResult(spec, record, None, last, curve, folder=run_dir)


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


def _device(record: dict[str, Any]) -> str:
    machine = record["machine"]
    return machine["gpu"] or f"CPU, {machine['torch_threads']} threads"


def _fact(key: str, form: str) -> Callable[[dict[str, Any]], str]:
    """The record's ``key`` formatted by ``form``; MISSING where the run has none (an evaluation)."""
    return lambda record: MISSING if record.get(key) is None else format(record[key], form)


FACTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "params": _fact("params", ","),
    "wall_s": _fact("wall_s", ".0f"),
    "step": _fact("step", "d"),
    "device": _device,
    "threads": lambda record: str(record["machine"]["torch_threads"]),
    "status": lambda record: str(record["status"]),
}


def cell(result: RunResult, column: str) -> str:
    """The text of one table cell (fixed formats, so reports diff cleanly)."""
    if column in FACTS:
        return FACTS[column](result.record)
    value = result.record["metrics"].get(column, result.last_logged.get(column))
    return MISSING if value is None else f"{value:.4f}"


def _date(iso: str) -> str:
    return iso.replace("T", " ")[:16] + " UTC"


def _machine(record: dict[str, Any]) -> str:
    machine = record["machine"]
    gpu = machine["gpu"] or "no GPU"
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads, {gpu} "
        f"({machine['platform']}, torch {machine['torch']})"
    )


def _commit(record: dict[str, Any]) -> str:
    git = record["git"]
    if git["commit"] is None:
        return "unknown (not a git checkout)"
    return f"`{git['commit'][:10]}`" + (" + uncommitted changes" if git["dirty"] else "")


def _grouped(results: list[RunResult], describe: Callable[[dict[str, Any]], str]) -> str:
    """One value if every run shares it, else each value followed by its runs."""
    groups: dict[str, list[str]] = {}
    for result in results:
        groups.setdefault(describe(result.record), []).append(result.spec.name)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{value} ({', '.join(names)})" for value, names in groups.items())


def stamp(results: list[RunResult]) -> list[str]:
    """Commit, machine and dates of the runs behind a table."""
    backed = [result for result in results if result.problem is None]
    if not backed:
        return ["No run of this table has finished yet."]
    started = min(result.record["started"] for result in backed)
    ended = max(result.record["ended"] for result in backed)
    return [
        f"- Commit: {_grouped(backed, _commit)}",
        f"- Machine: {_grouped(backed, _machine)}",
        f"- Dates: {_date(started)} to {_date(ended)}",
    ]


def render_table(table: TableSpec, results: dict[str, RunResult]) -> list[str]:
    rows = [results[name] for name in table.rows]
    lines = [f"### {table.title}", "", "| run | " + " | ".join(table.columns) + " |"]
    lines.append("|---" * (len(table.columns) + 1) + "|")
    for result in rows:
        if result.problem is None:
            cells = [cell(result, column) for column in table.columns]
        else:
            cells = [result.problem] + [MISSING] * (len(table.columns) - 1)
        lines.append(f"| {result.spec.name} | " + " | ".join(cells) + " |")
    return [*lines, "", *stamp(rows), ""]


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
        lines += render_table(table, results)
    if plot_file is not None:
        lines += [f"![{comparison.plot} learning curves of {comparison.name}]({plot_file})", ""]
    else:
        lines += [f"No {comparison.plot} learning curve logged yet.", ""]
    lines += render_figures(comparison, results, figure_files or {})
    return "\n".join(lines)


def plot_curves(comparison: Comparison, results: dict[str, RunResult], path: Path) -> bool:
    """Draw the plotted metric of every backed run against steps and against wall-clock seconds.

    Returns:
        False (and writes nothing) when no backed run logged the metric.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no display needed

    curves = {name: result.curve for name, result in results.items() if result.problem is None and result.curve}
    if not curves:
        return False
    figure = Figure(figsize=(11, 4), layout="constrained")
    by_step, by_wall = figure.subplots(1, 2, sharey=True)
    for name, curve in curves.items():
        by_step.plot([step for step, _, _ in curve], [value for _, _, value in curve], marker=".", label=name)
        timed = [(wall, value) for _, wall, value in curve if wall is not None]
        by_wall.plot([wall for wall, _ in timed], [value for _, value in timed], marker=".", label=name)
    by_step.set(xlabel="step", ylabel=comparison.plot)
    by_wall.set(xlabel="wall-clock seconds of fit (wall_s)")
    by_step.legend(fontsize="small")
    figure.suptitle(f"{comparison.name}: {comparison.title}")
    with atomic_open(path) as file:
        figure.savefig(file, format="png", dpi=100, metadata={"Software": None})  # no version stamp in the file
    return True


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
    sections, written, suite_tables = [], [], []
    for comparison in comparisons:
        results = {spec.name: load_result(spec, runs_dir, comparison.plot, archive_dir) for spec in comparison.runs}
        written += archive_runs(results, runs_dir, archive_dir)
        if comparison.name == SUITE:
            suite_tables = [line for table in comparison.tables for line in render_table(table, results)]
        png = out_dir / f"{comparison.name}.png"
        if plot_curves(comparison, results, png):
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
        "listed as such, never filled in.",
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
