"""The tables of ``anyformer report``: cells from the run logs, seed groups, equal-time reads, marks.

A table cell is a run fact or a metric:

- ``params``, ``wall_s`` (fit seconds, WallClock), ``step``, ``device`` (GPU or CPU threads),
  ``threads``, ``status``: from run.json (an evaluation run has no params, wall_s or step);
- any other key (``val_bpc``, ``test_acc``, ``gen_ppl``, ...): the run's final value, from run.json's
  metrics, else the last value in metrics.csv.

A table with a ``reference`` row may have ``<metric>_max_gap`` columns: a row's largest relative gap
``|m - m_ref| / |m_ref|`` from the reference over the validations both logged at the same ``step``,
as a percentage (``—`` for the reference itself, which is the yardstick, and when no step is common).
A seed group's curve there is the mean of its finished runs at the steps all of them logged, so a
group row compares mean curves and a per-seed row one seed's curve with the reference's mean.

A table with ``at_wall_s`` reads every row at equal wall-clock time instead: the last validation
row of metrics.csv whose ``wall_s`` is within the budget (seconds, or ``shortest``: the smallest
last-validation ``wall_s`` among the table's rows); ``wall_s`` and ``step`` are then that validation's,
and a metric it did not log (``test_*``) is empty.

Runs of one seed group (``group:`` in the comparison) make one row, ``mean ± std (n)`` over its
finished runs (sample std), with the per-seed rows in a folded table below. A row made from a dirty
tree is marked ``†``, one whose code changed since its commit ``(stale)``
(:mod:`anyformer.experiments.report_git`), each explained under the table.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyformer.experiments.budget import BUDGET_STATUS, ended_by_budget
from anyformer.experiments.comparison import GAP_SUFFIX, SHORTEST, Run, TableSpec
from anyformer.experiments.report_git import describe_changes, dirty

MISSING = "—"
DIRTY_MARK, STALE_MARK = "†", "(stale)"


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
    validations: list[dict[str, float]] = field(default_factory=list)
    """Every metrics.csv row that logged ``wall_s`` (a validation), its non-empty columns."""
    stale: tuple[str, ...] = ()
    """The files of the code it exercises (its own and that of the runs it reads) that commits after
    the run's changed (set by the report); empty while the run describes the code."""
    reads_newer: tuple[str, ...] = ()
    """The runs it reads (``after``) that ended after it started: rerun since, so it read an older
    version of them; and, as ``"B → C"``, a run C that a run B it reads read before C was rerun (set by
    the report)."""

    @property
    def outdated(self) -> bool:
        """Whether the report marks it stale: changed code or config, or a run it reads rerun since."""
        return bool(self.stale or self.reads_newer)

    @property
    def backed(self) -> bool:
        return self.problem is None


def read_metrics_csv(
    path: Path, metric: str
) -> tuple[dict[str, float], list[tuple[int, float | None, float]], list[dict[str, float]]]:
    """Last value of every column, the (step, wall_s, value) points of ``metric``, and the validation rows."""
    last, curve, validations = {}, [], []
    if not path.is_file():
        return last, curve, validations
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            values = {key: float(value) for key, value in row.items() if key and value}
            last.update(values)
            if "wall_s" in values:
                validations.append(values)
            if metric in values:
                curve.append((int(values["step"]), values.get("wall_s"), values[metric]))
    return last, curve, validations


def _device(record: dict[str, Any]) -> str:
    machine = record["machine"]
    return machine["gpu"] or f"CPU, {machine['torch_threads']} threads"


TEXT_FACTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "device": _device,
    # The CPU beside each row where a table sets hosts side by side (the same budget buys different
    # epochs on different CPUs); other tables name it once under the table.
    "cpu": lambda record: _cpu(record["machine"]),
    "threads": lambda record: str(record["machine"]["torch_threads"]),
    "status": lambda record: BUDGET_STATUS if ended_by_budget(record) else str(record["status"]),
}
NUMBER_FACTS = {"params": ",", "wall_s": ".0f", "step": "d"}
"""Run facts that are numbers -> their format; a metric's is ``.4f``."""


def budget(table: TableSpec, results: list[RunResult]) -> float | None:
    """The wall-clock budget of an ``at_wall_s`` table, None for an end-of-run table (or no timed row)."""
    if table.at_wall_s != SHORTEST:
        return table.at_wall_s
    ends = [
        max(row["wall_s"] for row in result.validations) for result in results if result.backed and result.validations
    ]
    return min(ends) if ends else None


def at_budget(result: RunResult, seconds: float) -> dict[str, float]:
    """The run's last validation row with ``wall_s <= seconds``; empty when none is that early."""
    within = [row for row in result.validations if row["wall_s"] <= seconds]
    return max(within, key=lambda row: row["wall_s"]) if within else {}


def value(result: RunResult, column: str, seconds: float | None = None) -> float | None:
    """A number-valued cell of a backed run: a metric or a NUMBER_FACTS fact, at the end or at ``seconds``."""
    if seconds is not None and (column not in NUMBER_FACTS or column in ("wall_s", "step")):
        return at_budget(result, seconds).get(column)
    if column in NUMBER_FACTS:
        return result.record.get(column)
    return result.record["metrics"].get(column, result.last_logged.get(column))


def _number(column: str, number: float) -> str:
    form = NUMBER_FACTS.get(column, ".4f")
    return format(int(number) if form == "d" else number, form)


def cell(result: RunResult, column: str, seconds: float | None = None) -> str:
    """The text of one table cell (fixed formats, so reports diff cleanly)."""
    if column in TEXT_FACTS:
        return TEXT_FACTS[column](result.record)
    number = value(result, column, seconds)
    return MISSING if number is None else _number(column, number)


def group_cell(members: list[RunResult], column: str, seconds: float | None = None) -> str:
    """A seed group's cell: the members' shared text, else ``mean ± std (n)`` of their numbers."""
    texts = [cell(result, column, seconds) for result in members]
    if column in TEXT_FACTS or (column in NUMBER_FACTS and len(set(texts)) == 1):
        return texts[0] if len(set(texts)) == 1 else " / ".join(dict.fromkeys(texts))
    numbers = [number for result in members if (number := value(result, column, seconds)) is not None]
    if not numbers:
        return MISSING
    form = NUMBER_FACTS.get(column, ".4f").replace("d", ".0f")
    if len(numbers) == 1:  # one seed has no spread to show (a std of 0 would claim one)
        return f"{numbers[0]:{form}} (1)"
    return f"{statistics.fmean(numbers):{form}} ± {statistics.stdev(numbers):{form}} ({len(numbers)})"


def mean_curve(results: list[RunResult], metric: str) -> dict[int, float]:
    """Step -> the mean ``metric`` of the finished runs' validations, at the steps all of them logged it."""
    curves = [
        {int(row["step"]): row[metric] for row in result.validations if metric in row}
        for result in results
        if result.backed
    ]
    steps = sorted(set.intersection(*(set(curve) for curve in curves))) if curves else []
    return {step: statistics.fmean(curve[step] for curve in curves) for step in steps}


def max_gap(curve: dict[int, float], reference: dict[int, float]) -> float | None:
    """The largest ``|m - m_ref| / |m_ref|`` over the steps both curves hold (a zero m_ref skipped), else None."""
    gaps = [abs(value - reference[step]) / abs(reference[step]) for step, value in curve.items() if reference.get(step)]
    return max(gaps) if gaps else None


def gap_cell(members: list[RunResult], column: str, reference: list[RunResult]) -> str:
    """A ``<metric>_max_gap`` cell: the max_gap of the members' mean curve from the reference's, in %."""
    metric = column.removesuffix(GAP_SUFFIX)
    gap = max_gap(mean_curve(members, metric), mean_curve(reference, metric))
    return MISSING if gap is None else f"{100 * gap:.2f}%"


SUMMARY_LABELS = {"mean": "**mean**", "worst": "**worst**"}
SUMMARY_FUNCTIONS: dict[str, Callable[[list[float]], float]] = {"mean": statistics.fmean, "worst": min}


def summary_row(kind: str, results: list[RunResult], columns: tuple[str, ...], seconds: float | None) -> str:
    """A ``mean`` or ``worst`` row over the finished runs: each metric column's mean or minimum, with
    ``(k of n)`` when only k of the n runs have finished; run facts (params, device, ...) stay empty."""
    backed = [result for result in results if result.backed]
    cells = []
    for column in columns:
        numbers = [] if column in TEXT_FACTS or column in NUMBER_FACTS or column.endswith(GAP_SUFFIX) else [
            number for result in backed if (number := value(result, column, seconds)) is not None
        ]  # fmt: skip
        text = MISSING if not numbers else _number(column, SUMMARY_FUNCTIONS[kind](numbers))
        cells.append(
            text if not numbers or len(numbers) == len(results) else f"{text} ({len(numbers)} of {len(results)})"
        )
    return f"| {SUMMARY_LABELS[kind]} | " + " | ".join(cells) + " |"


def _label(name: str, members: list[RunResult]) -> str:
    backed = [result for result in members if result.backed]
    marks = [DIRTY_MARK] if any(dirty(result.record) for result in backed) else []
    marks += [STALE_MARK] if any(result.outdated for result in backed) else []
    return " ".join([name, *marks])


Reference = tuple[str, list[RunResult]]
"""A table's reference row: its label (a run or a seed group) and its runs."""


def _row(
    name: str, members: list[RunResult], columns: tuple[str, ...], seconds: float | None, reference: Reference | None
) -> str:
    backed = [result for result in members if result.backed]

    def one(column: str) -> str:
        if column.endswith(GAP_SUFFIX):
            return MISSING if reference is None or name == reference[0] else gap_cell(backed, column, reference[1])
        return cell(backed[0], column, seconds) if len(members) == 1 else group_cell(backed, column, seconds)

    cells = [one(column) for column in columns] if backed else [members[0].problem] + [MISSING] * (len(columns) - 1)
    return f"| {_label(name, members)} | " + " | ".join(cells) + " |"


def _header(columns: tuple[str, ...]) -> list[str]:
    return ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]


def _footnotes(results: list[RunResult], seconds: float | None, table: TableSpec) -> list[str]:
    backed = [result for result in results if result.backed]
    lines = []
    if table.reference is not None and (gaps := [column for column in table.columns if column.endswith(GAP_SUFFIX)]):
        lines.append(
            f"{', '.join(gaps)}: the largest |m − m_ref| / |m_ref| over the validations logged at the same step "
            f"by the row and by {table.reference}; a seed group's curve is the mean of its finished runs at each "
            "step, and a per-seed row is that run's curve against the reference's."
        )
    if seconds is not None:
        how = "the shortest run's last validation" if table.at_wall_s == SHORTEST else "the table's budget"
        lines.append(
            f"At equal wall-clock time: each row is its last validation with wall_s ≤ {seconds:.0f} s ({how}); "
            "wall_s and step are that validation's, and metrics logged only at the end are empty."
        )
    if any(dirty(result.record) for result in backed):
        lines.append(
            f"{DIRTY_MARK} made from a working tree with uncommitted changes (run.json `git.dirty`): "
            "its commit alone does not reproduce it; rerun it from a clean tree."
        )
    if stale := sorted({path for result in backed for path in result.stale}):
        lines.append(
            f"{STALE_MARK} code its task runs or its config (or those of a run it reads) changed in a commit made "
            "after the run's commit "
            f"({describe_changes(stale)}): the numbers may no longer describe the code; rerun it."
        )
    if newer := sorted({name for result in backed for name in result.reads_newer}):
        chain = " (A → B: B was rerun after A, which it reads, read it)" if any("→" in name for name in newer) else ""
        lines.append(
            f"{STALE_MARK} a run it reads ({', '.join(newer)}) was rerun after it started{chain}: its numbers come "
            "from the older version of that run; rerun it."
        )
    return lines


def _date(iso: str) -> str:
    return iso.replace("T", " ")[:16] + " UTC"


def _machine(record: dict[str, Any]) -> str:
    machine = record["machine"]
    gpu = machine["gpu"] or "no GPU"
    return (
        f"{_cpu(machine)}, {machine['cores']} cores, {machine['torch_threads']} torch threads, {gpu} "
        f"({machine['platform']}, torch {machine['torch']})"
    )


def _cpu(machine: dict[str, Any]) -> str:
    """The CPU's name, and its family, model and ISA flags where the record has them (runs recorded
    before ``cpu_signature`` existed name the CPU only)."""
    signature = machine.get("cpu_signature") or {}
    if signature.get("family") is None:
        return machine["cpu"]
    isa = " ".join(signature.get("isa") or []) or "no AVX2"
    return f"{machine['cpu']} (family {signature['family']} model {signature['model']}; {isa})"


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
    backed = [result for result in results if result.backed]
    if not backed:
        return ["No run of this table has finished yet."]
    started = min(result.record["started"] for result in backed)
    ended = max(result.record["ended"] for result in backed)
    return [
        f"- Commit: {_grouped(backed, _commit)}",
        f"- Machine: {_grouped(backed, _machine)}",
        f"- Dates: {_date(started)} to {_date(ended)}",
    ]


def table_items(
    table: TableSpec, results: dict[str, RunResult], groups: dict[str, str]
) -> list[tuple[str, list[RunResult]]]:
    """The table's rows as (label, runs): a run alone, or a seed group at the place of its first run.

    A table that lists one run of a group (e.g. the seed shared with another comparison) shows that
    run under its own name: the group's name would claim its other seeds.
    """
    listed = [groups.get(name, name) for name in table.rows]
    items: dict[str, list[RunResult]] = {}
    for name, label in zip(table.rows, listed, strict=True):
        items.setdefault(label if listed.count(label) > 1 else name, []).append(results[name])
    return list(items.items())


def render_table(table: TableSpec, results: dict[str, RunResult], groups: dict[str, str] | None = None) -> list[str]:
    """``### title``, the table, its per-seed rows (folded), its footnotes and its stamp.

    Args:
        groups: Run name -> seed group, for the runs that have one.
    """
    rows = [results[name] for name in table.rows]
    items = table_items(table, results, groups or {})
    reference = next(((label, members) for label, members in items if label == table.reference), None)
    seconds = budget(table, rows)
    if table.at_wall_s is not None and seconds is None:
        seconds = float("nan")  # no timed row: every timed cell is empty
    lines = [f"### {table.title}", "", *_header(table.columns)]
    lines += [_row(label, members, table.columns, seconds, reference) for label, members in items]
    lines += [summary_row(kind, rows, table.columns, seconds) for kind in table.summary]
    lines.append("")
    if any(len(members) > 1 for _, members in items):
        lines += ["<details><summary>Per-seed rows</summary>", "", *_header(table.columns)]
        grouped = [result for _, members in items if len(members) > 1 for result in members]
        lines += [_row(result.spec.name, [result], table.columns, seconds, reference) for result in grouped]
        lines += ["", "</details>", ""]
    if footnotes := _footnotes(rows, None if seconds != seconds else seconds, table):
        lines += [line for footnote in footnotes for line in (footnote, "")]
    return [*lines, *stamp(rows), ""]
