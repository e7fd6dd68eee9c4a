"""The profile a bench run writes beside its table (``--out-profile`` without ``--profile``): every row
below its target, and the measurement that explains it.

A training or decoding row is explained by torch.profiler's operator shares of its shape's case
(``bench.profile_cases``: the same steps, profiled); a whole-fit row by the fit's own accounting
(``bench.fit``: Lightning's SimpleProfiler, the step's parts, data loading, checkpoints, the rest).
"""

from __future__ import annotations

from anyformer.experiments.bench.fit import FitTiming, render_fits
from anyformer.experiments.bench.profile_cases import ProfileCase, profile_cases, render_case
from anyformer.experiments.bench.report import Row
from anyformer.experiments.bench.shapes import ALL_SHAPES, GPT_SHAPES
from anyformer.experiments.bench.timing import Runtime

FIT_MEASURE = "whole fit"


def below_target(rows: list[Row]) -> list[Row]:
    """The rows whose ok column says NO."""
    return [row for row in rows if row.target is not None and not row.target.met(row.ratio)]


def is_fit_row(row: Row) -> bool:
    return row.measure.startswith(FIT_MEASURE)


def shapes_to_profile(rows: list[Row]) -> list[str]:
    """The shapes (in bench order) whose operator profile explains a NO row."""
    shapes = {row.shape for row in below_target(rows) if not is_fit_row(row)}
    return [name for name in ALL_SHAPES if name in shapes]


def render_explanations(rows: list[Row], cases: list[ProfileCase], fits: list[FitTiming], header: str) -> str:
    """``header``, the list of NO rows with where each is explained, then those sections."""
    missed = below_target(rows)
    lines = [header, "", "## Rows below their target", ""]
    if not missed:
        lines.append("Every row with a target meets it.")
    for row in missed:
        where = "Whole fits below" if is_fit_row(row) else f"the {row.shape} section below"
        if "bf16" in row.measure and row.shape in GPT_SHAPES:
            where += " (its steps are profiled in fp32 only)"
        lines.append(
            f"- {row.shape}, {row.measure}: {row.ratio:.2f} against {row.peer}, target {row.target}: see {where}."
        )
    covered = {case.shape for case in cases}
    for case in cases:
        lines += ["", *render_case(case)]
    missed_fits = {row.shape for row in missed if is_fit_row(row)}
    fits = [fit for fit in fits if fit.shape in missed_fits]
    if fits:
        lines += ["", render_fits(fits)]
    lost = sorted({row.shape for row in missed if not is_fit_row(row)} - covered)
    if lost:
        lines += ["", f"Not profiled (not a CPU training or decoding case): {', '.join(lost)}."]
    return "\n".join(lines) + "\n"


def explain(rows: list[Row], fits: list[FitTiming], runtime: Runtime, steps: int, header: str) -> str:
    """Profile the cases behind ``rows``' NO rows (``steps`` steps each) and render the explanations."""
    cases = profile_cases(shapes_to_profile(rows), runtime, steps) if runtime.device == "cpu" else []
    return render_explanations(rows, cases, fits, header)
