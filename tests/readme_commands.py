"""README.md's shell commands, read from its ```bash blocks, and the tiny settings the test runs them on.

:func:`readme_lines` gives every command line of the bash blocks in README order (``\\``
continuations joined, ``# comments`` dropped, a leading ``VAR=value`` split off as the command's
environment). :func:`classify` sorts each into ``run`` (an ``anyformer`` command), ``skip`` (an
``anyformer`` command matched by :data:`SKIP`, with the reason) or ``not run`` (a line of another
program matched by :data:`NOT_RUN`: installing and ``make`` are CI's own job); a line that is none
of these is an error, so a new README command is run by default and a new kind of line is noticed.
:func:`tiny` appends the settings that keep one command to seconds.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from anyformer.core.cli.main import packaged
from anyformer.core.cli.tasks import TASKS
from tests.test_configs import SHRINK

README = Path(__file__).resolve().parents[1] / "README.md"
ENV_PREFIX = re.compile(r"^[A-Z_][A-Z0-9_]*=")

SKIP: dict[str, str] = {
    "...": "a placeholder for the rest of a command, not a command",
    "http://mirror.example/anyformer": "a placeholder mirror host (tests/core/data/test_fetch.py serves a mirror)",
    "hf:gpt2": "downloads GPT-2 from the Hugging Face Hub (tests/text/test_hf.py loads tiny local models)",
    "experiments/text/gpt2_finetune_shakespeare.yaml": "starts from hf:gpt2, a Hub download "
    "(tests/test_configs.py runs it on a tiny local model)",
    "experiments/text/bert_base_finetune_sst2.yaml": "starts from hf:bert-base-uncased, a Hub download "
    "(tests/test_configs.py runs it on a tiny local model)",
    "experiments/vision/vit_tiny_finetune_cifar10.yaml": "downloads timm weights and CIFAR-10 (tests/test_configs.py "
    "runs it on a tiny local model)",
    "timm:vit_tiny_patch16_224": "downloads timm weights from the Hub (tests/vision/test_timm.py: tiny local files)",
    "--trainer.strategy ddp": "DDP starts its workers by re-running sys.argv, which in-process is pytest; "
    "tests/reliability/test_ddp.py runs it in subprocesses",
    "anyformer app": "starts a web server that serves until stopped (tests/test_app.py serves the page on tiny "
    "checkpoints and drives every tab in headless Chromium)",
}
"""A word of an ``anyformer`` command or of its environment (or, with a space, a part of the command as
written) -> why the test does not run it."""

NOT_RUN: dict[tuple[str, ...], str] = {
    ("python3", "-m", "venv"): "installing is CI's own job (.ci/run -> make install)",
    (".venv/bin/pip", "install"): "installing is CI's own job (.ci/run -> make install)",
    ("make",): "a Makefile target: CI runs make test; test_make_targets_named_in_the_readme_exist checks it exists",
    ("python", "-m", "anyformer.experiments.bench"): "the benchmark, minutes long (tests/experiments cover it)",
}
"""The first words of a line that is not an ``anyformer`` command -> why the test does not run it."""

FIT_TINY = [
    "--trainer.max_steps=2",
    "--trainer.val_check_interval=2",  # one validation, at the last step: it writes last.ckpt
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
SHRINK_MORE: dict[str, list[str]] = {
    # `anyformer translate --eval-set` decodes 1,000 test sentences twice (greedy, beam), each to the
    # target window when the model is untrained: a 16-token window and one layer take seconds, not a minute.
    "seq2seq_multi30k": [
        "--data.max_target_len=16",
        "--model.config.encoder.n_layers=1",
        "--model.config.decoder.n_layers=1",
    ],
}
"""Config name -> overrides beyond test_configs.SHRINK, for what README's later commands do with the run."""
TEST_TINY = ["--trainer.limit_test_batches=2", "--trainer.enable_progress_bar=false"]
TOOL_TINY: dict[str, list[str]] = {
    "generate": ["--max-new-tokens", "5"],
    "decode-eval": ["--prompts", "2", "--prompt-tokens", "8", "--new-tokens", "4"],
    "rollout": ["--episodes", "1", "--max-steps", "20"],
    "collect": ["--episodes", "4"],
    "translate": ["--beams", "2"],  # the sentence and, with --eval-set, 1,000 test sentences
    "experiment": ["--dry-run"],
    "demo": ["--dry-run"],
    "report": ["--out", "results", "--readme", "README.md"],  # into the test's folder, not the repository's
    "preferences": ["--prompts", "8", "--samples", "2", "--new-tokens", "8"],
    "preference-eval": ["--prompts", "4", "--new-tokens", "8"],
}
"""Tool -> options set (replaced where the command has them, else appended)."""


@dataclass
class Line:
    number: int
    """Line of README.md where the command starts."""
    text: str
    """The command as written (continuations joined, comment dropped)."""
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    """The words after the environment prefix, program first."""

    @property
    def anyformer(self) -> bool:
        return self.argv[:1] == ["anyformer"]


def readme_lines(text: str | None = None) -> list[Line]:
    """Every command line of README.md's ```bash blocks, in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    lines, block, pending, start = [], False, "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not block:
            block = raw.strip() == "```bash"
            continue
        if raw.strip() == "```":
            block = False
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        words, pending = shlex.split(pending + raw, comments=True), ""
        if not words:
            continue
        env = {}
        while words and ENV_PREFIX.match(words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        lines.append(Line(start, " ".join(map(shlex.quote, words)), env, words))
    return lines


def skip_reason(line: Line) -> str | None:
    """Why ``line`` is not run (:data:`SKIP`, :data:`NOT_RUN`), or None: it is run."""
    if line.anyformer:
        words = [*line.argv, *line.env.values()]
        for key, reason in SKIP.items():
            if key in words or (" " in key and key in line.text):
                return reason
        return None
    for prefix, reason in NOT_RUN.items():
        if tuple(line.argv[: len(prefix)]) == prefix:
            return reason
    raise AssertionError(
        f"README.md:{line.number}: {line.text!r} is neither an `anyformer` command nor in NOT_RUN: "
        "add it to tests/readme_commands.py"
    )


def option(argv: list[str], name: str) -> str | None:
    """The value of ``name`` in ``argv`` (``--name value`` or ``--name=value``; the last wins)."""
    value = None
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif word.startswith(name + "="):
            value = word.split("=", 1)[1]
    return value


def with_options(argv: list[str], options: list[str]) -> list[str]:
    """``argv`` with ``options`` (``--name value`` pairs or flags) replacing its own, or appended."""
    out, i = list(argv), 0
    while i < len(options):
        name = options[i]
        has_value = i + 1 < len(options) and not options[i + 1].startswith("--")
        if name in out and has_value:
            out[out.index(name) + 1] = options[i + 1]
        elif name not in out:
            out += options[i : i + 1 + has_value]
        i += 1 + has_value
    return out


def config_of(argv: list[str]) -> tuple[Path, dict] | None:
    """The ``--config`` file of a task command (as the CLI finds it) and its contents; None
    without one (or when it does not exist: the command itself then fails, naming it)."""
    name = option(argv, "--config")
    path = packaged(name) if name else None
    if path is None or not path.is_file():
        return None
    return path, yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def task_command(argv: list[str]) -> bool:
    """``anyformer <task> fit|validate|test|predict ...``."""
    return len(argv) > 2 and argv[1] in TASKS


def tiny(argv: list[str]) -> list[str]:
    """``argv`` (``anyformer ...``) on tiny settings: two training steps, small data and outputs."""
    if task_command(argv):
        found = config_of(argv)
        stem = found[0].stem if found else ""
        shrink = [*SHRINK.get(stem, []), *SHRINK_MORE.get(stem, [])]
        return [*argv, *(FIT_TINY if argv[2] == "fit" else TEST_TINY), *shrink]
    return with_options(argv, TOOL_TINY.get(argv[1], []))


def run_name(argv: list[str]) -> str | None:
    """The ``runs/`` folder a ``fit`` writes (``--run-name``, else the config's name), or None."""
    if not task_command(argv) or argv[2] != "fit":
        return None
    name = option(argv, "--run-name")
    found = config_of(argv)
    return name or (found[0].stem if found else argv[1])


def _strings(value: object) -> list[str]:
    """Every string inside a parsed YAML value (nested mappings and lists)."""
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return [value] if isinstance(value, str) else []


def runs_needed(argv: list[str]) -> set[str]:
    """The ``runs/NAME`` folders a command reads: its ``runs/NAME/...`` arguments and any its config
    names (``data.init_from``, ``data.pairs``, ``data.policy``, ...)."""
    words = list(argv)
    if task_command(argv) and (found := config_of(argv)):
        words += _strings(found[1])
    return {match.group(1) for word in words for match in re.finditer(r"\bruns/([\w.-]+)/", word)}
