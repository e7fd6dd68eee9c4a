"""Preference pairs and their JSONL file, the format ``anyformer preferences`` writes and ``anyformer dpo``
reads (a file of human preferences in the same format works the same way).

One JSON object per line (blank lines are skipped)::

    {"prompt": "the movie is", "chosen": " a delight .\\n", "rejected": " a mess .\\n",
     "scores": {"chosen": 0.97, "rejected": 0.04}}

- ``prompt``: the text the policy continues (it reads it after a newline: the start of a sentence).
- ``chosen``, ``rejected``: the preferred and the dispreferred continuation, exactly as they follow
  the prompt (a leading space where a new word starts; a trailing newline where the sentence ended).
- ``scores``: optional, the reward of each continuation (``anyformer preferences``: the reward model's
  probability of ``positive``); ``null`` or absent for preferences without a score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyformer.core.cli.errors import UsageError
from anyformer.core.train.atomic import atomic_open

EXPECTED = (
    'one JSON object per line: {"prompt": str, "chosen": str, "rejected": str, '
    '"scores": {"chosen": number, "rejected": number} or null (optional)}'
)


class PairsFormatError(UsageError):
    """A pairs file that cannot be read: the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a preferred (``chosen``) and a dispreferred (``rejected``) continuation."""

    prompt: str
    chosen: str
    rejected: str
    chosen_score: float | None = None
    rejected_score: float | None = None

    def to_json(self) -> dict[str, Any]:
        scores = None
        if self.chosen_score is not None and self.rejected_score is not None:
            scores = {"chosen": self.chosen_score, "rejected": self.rejected_score}
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected, "scores": scores}


def write_pairs(path: str | Path, pairs: Iterable[PreferencePair]) -> int:
    """Write ``pairs`` as JSONL (atomically: a reader never sees half a file); returns how many."""
    count = 0
    with atomic_open(path, "w", encoding="utf-8") as file:
        for pair in pairs:
            file.write(json.dumps(pair.to_json(), ensure_ascii=False) + "\n")
            count += 1
    return count


def _pair(where: str, record: Any) -> PreferencePair:
    if not isinstance(record, dict):
        raise PairsFormatError(f"{where}: found a JSON {type(record).__name__}; expected {EXPECTED}")
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(record.get(key), str):
            found = "missing" if key not in record else f"a {type(record[key]).__name__}"
            raise PairsFormatError(f"{where}: {key!r} is {found}; expected {EXPECTED}")
    unknown = sorted(set(record) - {"prompt", "chosen", "rejected", "scores"})
    if unknown:
        raise PairsFormatError(f"{where}: unknown key(s) {unknown}; expected {EXPECTED}")
    scores = record.get("scores")
    if scores is None:
        return PreferencePair(record["prompt"], record["chosen"], record["rejected"])
    valid = (
        isinstance(scores, dict)
        and set(scores) == {"chosen", "rejected"}
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scores.values())
    )
    if not valid:
        raise PairsFormatError(f"{where}: 'scores' is {json.dumps(scores)}; expected {EXPECTED}")
    return PreferencePair(
        record["prompt"], record["chosen"], record["rejected"], float(scores["chosen"]), float(scores["rejected"])
    )


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Every pair of a JSONL file.

    Raises:
        PairsFormatError: the file is missing, not UTF-8, has no pair, or a line is not a pair
            (the message names ``FILE:LINE`` and the expected format).
    """
    path = Path(path)
    if not path.is_file():
        raise PairsFormatError(f"pairs file {path} does not exist; expected {EXPECTED}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise PairsFormatError(f"{path} is not UTF-8 text ({err}); expected {EXPECTED}") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise PairsFormatError(
                f"{where}: not JSON ({err.msg} at column {err.colno}); expected {EXPECTED}"
            ) from None
        pairs.append(_pair(where, record))
    if not pairs:
        raise PairsFormatError(f"{path} holds no pair; expected {EXPECTED}")
    return pairs
