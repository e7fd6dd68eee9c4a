"""Whether a fit ran its whole course: it reached max_steps/max_epochs, or it used up its wall-clock budget.

A budgeted config (issue 24's vision fits) makes Lightning's ``trainer.max_time`` the experiment's budget
and sizes ``max_epochs`` so the schedule ends inside it on the host it was tuned on. On a slower host the
Timer ends the fit at max_time, before max_epochs, and the run record says ``stopped``; yet that fit did
what its command asks, train for the budget, so the report shows it and the runner neither resumes it
nor holds back the runs that read it (a DeiT student after its time-capped teacher). A fit stopped for
any other reason (early stopping, a callback) is still no result.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

MAX_TIME = "--trainer.max_time"
BUDGET_STATUS = "max_time"
"""The status cell of a fit that its wall-clock budget ended (its record says ``stopped``)."""


def seconds(value: Any) -> float | None:
    """Lightning's ``max_time`` as seconds: ``"DD:HH:MM:SS"`` or a dict of timedelta's fields; None if unset."""
    if value is None:
        return None
    if isinstance(value, dict):
        return timedelta(**value).total_seconds()
    days, hours, minutes, secs = (int(part) for part in str(value).split(":"))
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=secs).total_seconds()


def _override(argv: list[str]) -> str | None:
    """The last ``--trainer.max_time`` of a command line (``=value`` or a separate value), else None."""
    found = None
    for position, arg in enumerate(argv):
        if arg.startswith(f"{MAX_TIME}="):
            found = arg.split("=", 1)[1]
        elif arg == MAX_TIME and position + 1 < len(argv):
            found = argv[position + 1]
    return found


def max_time_s(record: dict[str, Any], root: Path = Path(".")) -> float | None:
    """The fit's ``trainer.max_time`` in seconds, from its command's ``--config`` files (later ones win,
    read from ``root``, where the command ran) and its overrides; None without one or if unreadable."""
    value = None
    try:
        for config in record.get("config") or []:
            trainer = (yaml.safe_load((root / config).read_text()) or {}).get("trainer") or {}
            value = trainer.get("max_time", value)
        override = _override(record.get("argv") or [])
        if override is not None:
            value = yaml.safe_load(override)
        return seconds(value)
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return None


def ended_by_budget(record: dict[str, Any], root: Path = Path(".")) -> bool:
    """Whether a ``stopped`` fit ran for its whole ``max_time`` (so the Timer, not something else, ended it)."""
    budget = max_time_s(record, root) if record.get("status") == "stopped" else None
    return budget is not None and (record.get("wall_s") or 0.0) >= budget


def ran_its_course(record: dict[str, Any] | None, root: Path = Path(".")) -> bool:
    """Whether a fit's record is a result: ``finished``, or ended by its wall-clock budget."""
    return record is not None and (record.get("status") == "finished" or ended_by_budget(record, root))
