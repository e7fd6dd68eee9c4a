"""README.md's commands work as written, in README order, from a fresh folder (issue 21, point 5).

Every ``anyformer ...`` line of README.md's ```bash blocks runs in-process
(``anyformer.core.cli.main.main``) in one empty folder that sits beside ``../shared/data`` (a link
to ``$ANYFORMER_DATA``), as a clone sits beside it in CI, so later commands read what earlier ones
made (``runs/<name>/checkpoints/last.ckpt``, ``data/cartpole_mixed.npz``). The test appends tiny
settings per kind of command (``tests/readme_commands.py``: two training steps, test_configs.py's
data shrinking, fewer episodes, prompts and tokens, ``--dry-run`` for comparisons and reports into
the folder); it does not change what a command names. Each must exit with status 0, and a
``fit`` must leave ``runs/<name>/checkpoints/last.ckpt`` and a tool the file it was told to write
(``--out``, ``--attention-map``). Commands on real data are skipped with a reason when
``$ANYFORMER_DATA`` lacks that data, and so are the commands that read their checkpoints.
``pytest -rP tests/test_readme_commands.py`` prints every command with its status and time.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
import traceback
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anyformer.core.cli.main import main as cli_main
from tests.helpers import SHARED_DATA
from tests.readme_commands import (
    NOT_RUN,
    README,
    SKIP,
    config_of,
    option,
    readme_lines,
    run_name,
    runs_needed,
    skip_reason,
    task_command,
    tiny,
)
from tests.test_configs import REAL_DATA

IGNORED_ENV = {"OMP_NUM_THREADS": "the test keeps its process's thread count"}
"""Environment prefixes of README commands not applied in-process, and why."""
OUTPUTS = ("--out", "--attention-map")
"""Options naming a file (or folder) the command must have written."""


def make_inputs(folder: Path) -> None:
    """The user's own files README's commands name: ``image.png`` (a 28x28 grey image) and
    ``clip.wav`` (half a second of 8 kHz audio, a falling tone)."""
    pixels = (np.add.outer(np.arange(28), np.arange(28)) * 4).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(folder / "image.png")
    t = np.arange(4000) / 8000
    samples = (0.3 * np.sin(2 * np.pi * (600 - 400 * t) * t) * 32767).astype("<i2")
    with wave.open(str(folder / "clip.wav"), "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(8000)
        clip.writeframes(samples.tobytes())


def missing_data(argv: list[str]) -> str | None:
    """Why ``argv`` cannot run here for lack of a real dataset, or None."""
    sources = []
    if task_command(argv) and (found := config_of(argv)):
        sources.append((found[1].get("data") or {}).get("source"))
    if argv[1:3] == ["data", "fetch"]:
        sources += argv[3:]
    if eval_set := option(argv, "--eval-set"):  # DATASET:SPLIT[:SRC-TGT]
        sources.append(eval_set.split(":")[0])
    for source in sources:
        needed = REAL_DATA.get(source) if isinstance(source, str) else None
        if needed and not (SHARED_DATA and Path(SHARED_DATA, needed).exists()):
            return f"reads {needed} of $ANYFORMER_DATA, which is unset or lacks it"
    for word in argv:
        if word.startswith("../shared/data/") and not Path(word).exists():
            return f"reads {word}: $ANYFORMER_DATA is unset or lacks it"
    return None


def record_as_written(run_dir: Path, argv: list[str]) -> None:
    """Make ``run_dir/run.json`` name the README command (``argv``) rather than the test's tiny
    version of it, as if the user had typed it: ``anyformer experiment`` refuses a run folder made by
    another command, and README's fits must be the ones its comparisons expect."""
    path = run_dir / "run.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["argv"] = list(argv)
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")


def run(argv: list[str]) -> tuple[int, str]:
    """``anyformer argv[1:]`` in-process -> (exit status, traceback of an exception or '')."""
    try:
        return cli_main(argv[1:]), ""
    except SystemExit as exit_info:  # argparse, --help, --print_config
        return (exit_info.code if isinstance(exit_info.code, int) else 1), ""
    except Exception:  # a bug: keep its traceback for the report
        return 1, traceback.format_exc()


def test_every_readme_line_is_run_or_skipped_for_a_stated_reason():
    lines = readme_lines()
    assert sum(line.anyformer for line in lines) >= 30, "README.md's bash blocks hold fewer commands than expected"
    reasons = [skip_reason(line) for line in lines]  # a line of an unknown program fails here
    # No stale entry: each skip and not-run rule still matches a README line.
    for key in SKIP:
        assert any(reason == SKIP[key] for reason in reasons), f"SKIP[{key!r}] matches no README command"
    for prefix in NOT_RUN:
        assert any(tuple(line.argv[: len(prefix)]) == prefix for line in lines), f"NOT_RUN {prefix} is unused"


def test_readme_parsing_joins_continuations_and_drops_comments_and_env():
    text = '```bash\nX=1 Y=2 anyformer a --b "c d" \\\n    --e 5   # note\n```\n```\nanyformer no\n```\n'
    (line,) = readme_lines(text)
    assert (line.number, line.env, line.argv) == (2, {"X": "1", "Y": "2"}, ["anyformer", "a", "--b", "c d", "--e", "5"])


def test_make_targets_named_in_the_readme_exist():
    makefile = README.with_name("Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.MULTILINE))
    named = {(line.number, line.argv[1]) for line in readme_lines() if line.argv[0] == "make" and len(line.argv) > 1}
    missing = sorted(f"README.md:{number}: make {target}" for number, target in named if target not in targets)
    assert not missing, f"Makefile has no such target: {missing}"


def test_readme_commands_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(README, clone / "README.md")  # `anyformer report --readme README.md` rewrites this copy
    if SHARED_DATA:
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "data").symlink_to(Path(SHARED_DATA).resolve(), target_is_directory=True)
    make_inputs(clone)
    monkeypatch.setenv("ANYFORMER_OFFLINE", "1")
    made: dict[str, str] = {}  # runs/NAME -> "ran" or why not
    rows, failures = [], []
    start = time.perf_counter()
    with contextlib.chdir(clone):
        for line in readme_lines():
            reason = skip_reason(line)
            if not line.anyformer:
                continue
            reason = reason or missing_data(line.argv)
            for name in sorted(runs_needed(line.argv) if reason is None else ()):
                if made.get(name, "ran") != "ran":
                    reason = f"needs runs/{name}: {made[name]}"
            produced = run_name(line.argv)
            if reason is not None:
                rows.append((line.number, "skipped", 0.0, line.text, reason))
                if produced:
                    made[produced] = f"README.md:{line.number} was skipped"
                continue
            argv = tiny(line.argv)
            with monkeypatch.context() as patch:
                for name, value in line.env.items():
                    if name not in IGNORED_ENV:
                        patch.setenv(name, value)
                began = time.perf_counter()
                code, trace = run(argv)
                seconds = time.perf_counter() - began
            output = capsys.readouterr()
            problem = f"exit status {code}" if code else ""
            expected = [f"runs/{produced}/checkpoints/last.ckpt"] if produced else []
            expected += [value for name in OUTPUTS if (value := option(line.argv, name))]
            if not problem and (absent := [path for path in expected if not Path(path).exists()]):
                problem = f"exit status 0 but did not write {absent}"
            if produced:
                made[produced] = f"README.md:{line.number} failed" if problem else "ran"
                if not problem:
                    record_as_written(Path("runs", produced), line.argv)
            rows.append((line.number, "FAILED" if problem else "ran", seconds, line.text, problem))
            if problem:
                tail = "\n".join((trace or output.err or output.out).strip().splitlines()[-15:])
                failures.append(
                    f"README.md:{line.number}: {line.text}\n  ran as: {' '.join(argv)}\n  {problem}\n{tail}"
                )
    total = time.perf_counter() - start
    for number, status, seconds, text, why in rows:
        print(f"{number:4d} {status:8s} {seconds:6.1f}s  {text}" + (f"\n{'':22s}-> {why}" if why else ""))
    counts = {status: sum(row[1] == status for row in rows) for status in ("ran", "skipped", "FAILED")}
    print(f"total {total:.1f}s: {counts}")
    assert not failures, "README commands that fail:\n\n" + "\n\n".join(failures)
