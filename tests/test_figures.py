"""Measured figures live only in generated files (RESULTS.md, bench*.md, profile.md, README's suite block).

A YAML header says what a config trains, how to run it and where its result appears; README prose
links to the generated files. A number that a run measures (an accuracy, a BLEU, a loss, a time, a
speed-up, a percentage) typed anywhere else goes stale the day the code changes, so this test
scans every YAML comment under ``experiments/`` and README.md outside its generated suite block and
its fenced code blocks, and fails on what looks measured:

- a decimal number within a few words of a metric word (accuracy, acc, BLEU, loss, bpc, ppl,
  perplexity, MFU, return, ``val_*``, ``test_*``), either side;
- a percentage (``94%``);
- a duration (``70 s``, ``2 min``, ``1.5 h``, ``3.9 ms``) or a ratio (``1.6x``, ``2x faster``);
- a "Measured ..." line.

Settings stay allowed: hyper-parameters (``lr 3e-4``, ``dropout 0.1``), sizes (``8x8``, ``12 x 64``),
counts of steps or epochs, dates and versions carry no metric word, unit or ``x`` suffix. Published
figures of others are allowed on a line starting ``reference:`` that names its source.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METRIC = r"(?:accuracy|acc|bleu|loss|bpc|ppl|perplexity|mfu|returns?|val_\w+|test_\w+)"
NUMBER = r"\d+\.\d+"
MEASURED = [
    ("metric figure", re.compile(rf"\b{METRIC}\b[^.;:\n]{{0,24}}?(?<![\w.-]){NUMBER}\b", re.IGNORECASE)),
    ("metric figure", re.compile(rf"(?<![\w.-]){NUMBER}\s*{METRIC}\b", re.IGNORECASE)),
    ("percentage", re.compile(r"\d(?:\.\d+)?\s?%")),
    ("duration", re.compile(r"(?<![\w.:-])\d+(?:[.,]\d+)?\s?(?:ms|s|sec|seconds|min|minutes|h|hours)\b(?![-=])")),
    ("ratio", re.compile(r"(?<![\w.])\d+(?:\.\d+)?x\b(?!\d)")),
    ("measured line", re.compile(r"\bmeasured\b[^.]*\d", re.IGNORECASE)),
]
REFERENCE = re.compile(r"^\s*(?:#\s*)?reference:", re.IGNORECASE)
SUITE_START, SUITE_END = "<!-- suite-table:start -->", "<!-- suite-table:end -->"


def measured(line: str) -> list[str]:
    """What in ``line`` looks like a measured figure: ``kind: text`` for each hit; none on a reference line."""
    if REFERENCE.match(line):
        return []
    return [f"{kind}: {hit.group(0)!r}" for kind, pattern in MEASURED for hit in pattern.finditer(line)]


def yaml_comments(text: str) -> list[tuple[int, str]]:
    """(line number, comment text) of every YAML comment: whole-line or after `` #``."""
    comments = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if stripped.startswith("#"):
            comments.append((number, stripped[1:].strip()))
        elif " #" in line:
            comments.append((number, line.split(" #", 1)[1].strip()))
    return comments


def readme_prose(text: str) -> list[tuple[int, str]]:
    """(line number, line) of README outside the generated suite block and fenced code blocks."""
    prose, fenced, generated = [], False, False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(SUITE_START) or line.startswith(SUITE_END):
            generated = line.startswith(SUITE_START)
        elif line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and not generated:
            prose.append((number, line))
    return prose


YAMLS = sorted(path for path in (ROOT / "experiments").rglob("*.yaml") if "results" not in path.parts)


@pytest.mark.parametrize("path", YAMLS, ids=lambda path: str(path.relative_to(ROOT)))
def test_a_yaml_header_quotes_no_measured_figure(path):
    hits = [f"{path.name}:{n}: {hit}" for n, line in yaml_comments(path.read_text()) for hit in measured(line)]
    assert not hits, "measured figures belong in RESULTS.md (link its section instead):\n" + "\n".join(hits)


def test_readme_quotes_figures_only_in_the_generated_block():
    text = (ROOT / "README.md").read_text()
    hits = [f"README.md:{n}: {hit}" for n, line in readme_prose(text) for hit in measured(line)]
    assert not hits, "link RESULTS.md / bench.md instead of quoting figures:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "line",
    [
        "val_bpc 1.48 after 2,000 steps",
        "test BLEU beam-4 39.4, greedy 11.8",
        "reaches 97.5% on MNIST",
        "About 3 x 3 min on 2 CPU cores",
        "trains in 75 s instead of 101 s",
        "1.49x faster than transformers",
        "2.545 bpc",
        "Measured 2026-12-03 on a 2-core AMD EPYC",
    ],
)
def test_measured_figures_are_found(line):
    assert measured(line)


@pytest.mark.parametrize(
    "line",
    [
        "lr 3e-4, weight decay 0.1, dropout 0.1, 2,000 steps, batch 12 x 64 tokens",
        "scikit-learn's 8x8 digits, 10 epochs, patch 4",
        "Generated 2026-12-03; torch 2.14.1, Python 3.11",
        "reference: ViT-Ti/16 reaches 75.5 top-1 on ImageNet (Touvron et al. 2021, DeiT, Table 1)",
        "# reference: GPT-2 small val loss 3.12 on OpenWebText (nanoGPT README)",
        "validation every 200 steps; max_steps=400; label smoothing 0.1",
        "See [RESULTS.md](experiments/results/RESULTS.md#multi30k-multi30k-de-en-translation-400-steps)",
    ],
)
def test_settings_and_references_are_not_figures(line):
    assert not measured(line)
