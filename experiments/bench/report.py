"""One table of results: every row compares anyformer with one peer (or a machine limit)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

COLUMNS = ("shape", "measure", "unit", "anyformer", "peer", "peer value", "ratio", "target", "ok")


@dataclass(frozen=True)
class Target:
    """A goal for a row's ratio: ``ratio >= minimum``."""

    minimum: float

    def met(self, ratio: float) -> bool:
        return ratio >= self.minimum

    def __str__(self) -> str:
        return f">= {self.minimum:g}"


@dataclass(frozen=True)
class Row:
    """anyformer's value beside a peer's; ``ratio`` > 1 always means anyformer is better."""

    shape: str
    measure: str
    unit: str
    ours: float
    peer: str
    theirs: float
    higher_is_better: bool = True
    target: Target | None = None
    ratio_override: float | None = None
    """For rows whose ratio is not ours/theirs (MFU: achieved FLOP/s over the machine's peak)."""

    @property
    def ratio(self) -> float:
        if self.ratio_override is not None:
            return self.ratio_override
        num, den = (self.ours, self.theirs) if self.higher_is_better else (self.theirs, self.ours)
        return num / den if den else math.nan

    def cells(self) -> tuple[str, ...]:
        ok = "" if self.target is None else ("yes" if self.target.met(self.ratio) else "NO")
        return (
            self.shape, self.measure, self.unit, number(self.ours), self.peer, number(self.theirs),
            f"{self.ratio:.2f}", str(self.target or ""), ok,
        )  # fmt: skip


def number(value: float) -> str:
    """A value as the bench's tables show it: no exponent, three significant digits below 100, n/a for NaN."""
    if math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def render_text(rows: list[Row]) -> str:
    """A fixed-width table for the terminal."""
    table = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    right = {3, 5, 6}  # numbers
    lines = [
        "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def render_markdown(rows: list[Row], header: str, sections: Sequence[str] = ()) -> str:
    """``header`` (how and where it was measured), the table as GitHub markdown, then ``sections``
    (markdown of their own: the whole fits, the scaling sweep)."""
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    for section in sections:
        lines += ["", section]
    return "\n".join(lines) + "\n"
