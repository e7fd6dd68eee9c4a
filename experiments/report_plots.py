"""The figure of a comparison in ``anyformer report``: one PNG, three panels side by side.

1. the plotted metric against steps (equal steps),
2. the same curves against wall-clock seconds of the fit (equal time), with a dashed line at the
   budget of every ``at_wall_s`` table,
3. each run's final value as a bar; a seed group is one bar, its mean, with a ± std error bar and
   its seeds as dots.

The runs of a seed group share one colour. No pyplot (no global state, no display) and no version
stamp in the file, so the bytes depend only on the logs.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from anyformer.core.train.atomic import atomic_open
from anyformer.experiments.comparison import Comparison
from anyformer.experiments.report_tables import RunResult, budget, value


def _items(comparison: Comparison, results: dict[str, RunResult], groups: dict[str, str]) -> dict[str, list[RunResult]]:
    """Label -> the backed runs it stands for (a run, or a seed group), in the comparison's order."""
    items: dict[str, list[RunResult]] = {}
    for spec in comparison.runs:
        result = results[spec.name]
        if result.backed:
            items.setdefault(groups.get(spec.name, spec.name), []).append(result)
    return items


def plot_curves(comparison: Comparison, results: dict[str, RunResult], path: Path, groups: dict[str, str]) -> bool:
    """Draw the comparison's figure (module docstring) into ``path``.

    Args:
        groups: Run name -> seed group, for the runs that have one.

    Returns:
        False (and writes nothing) when no backed run logged the plotted metric.
    """
    from matplotlib.figure import Figure

    metric = comparison.plot
    items = _items(comparison, results, groups)
    if not any(result.curve for members in items.values() for result in members):
        return False
    figure = Figure(figsize=(15, 4), layout="constrained")
    by_step, by_wall, bars = figure.subplots(1, 3, gridspec_kw={"width_ratios": [3, 3, 2]})
    by_wall.sharey(by_step)
    finals: list[tuple[str, str, list[float]]] = []
    for i, (label, members) in enumerate(items.items()):
        color = f"C{i % 10}"
        for j, result in enumerate(members):
            curve = result.curve
            name = label if j == 0 else None
            by_step.plot([step for step, _, _ in curve], [v for _, _, v in curve], ".-", color=color, label=name)
            timed = [(wall, v) for _, wall, v in curve if wall is not None]
            by_wall.plot([wall for wall, _ in timed], [v for _, v in timed], ".-", color=color, label=name)
        numbers = [number for result in members if (number := value(result, metric)) is not None]
        if numbers:
            finals.append((label, color, numbers))
    for table in comparison.tables:
        seconds = budget(table, [results[name] for name in table.rows])
        if seconds is not None:
            by_wall.axvline(seconds, color="gray", linestyle="--", linewidth=1)
            by_wall.annotate(f"{table.title[:40]}", (seconds, 1), xycoords=("data", "axes fraction"),
                             rotation=90, va="top", ha="right", fontsize="x-small", color="gray")  # fmt: skip
    by_step.set(xlabel="step", ylabel=metric, title="at equal steps")
    by_wall.set(xlabel="wall-clock seconds of fit (wall_s)", title="at equal wall-clock time")
    by_step.legend(fontsize="small")
    positions = range(len(finals))
    means = [statistics.fmean(numbers) for _, _, numbers in finals]
    stds = [statistics.stdev(numbers) if len(numbers) > 1 else 0.0 for _, _, numbers in finals]
    bars.bar(positions, means, yerr=stds, capsize=4, color=[color for _, color, _ in finals], alpha=0.8)
    for position, (_, _, numbers) in zip(positions, finals, strict=True):
        if len(numbers) > 1:
            bars.plot([position] * len(numbers), numbers, "k.", markersize=4)
    bars.set_xticks(list(positions), [label for label, _, _ in finals], rotation=30, ha="right", fontsize="small")
    bars.set(ylabel=f"final {metric}", title="final value (seeds: mean ± std)")
    figure.suptitle(f"{comparison.name}: {comparison.title}")
    with atomic_open(path) as file:
        figure.savefig(file, format="png", dpi=100, metadata={"Software": None})  # no version stamp in the file
    return True
