"""A comparison: the runs of one experiment and the tables built from them.

``experiments/comparisons/<NAME>.yaml`` is read here; ``anyformer experiment NAME`` runs it and
``anyformer report`` turns its tables into ``experiments/results/RESULTS.md``. The schema is
documented in the header of every comparison file; in short::

    title: text                       # section heading in RESULTS.md
    description: text                 # optional paragraph under it
    plot: val_loss                    # optional: metric of the learning-curve PNG (default val_loss)
    setup:                            # optional: commands that create inputs the runs need,
      - command: anyformer collect ...   # skipped when the file `creates` names exists
        creates: data/file.npz
    runs:
      - name: run_name                # folder runs/<name>/ (a plain name; shared by comparisons)
        task: gpt                     # a task of `anyformer --help`
        config: experiments/....yaml
        overrides: [--key=value, ...] # optional CLI arguments after the config
        then: [test]                  # optional: `anyformer <task> test` on last.ckpt after the fit
        group: name                   # optional: runs sharing a group differ only by seed; a table
                                      # shows them as one row, mean ± std (n), per-seed rows folded
        after: [run_name]             # optional: earlier runs whose output the fit reads (a DeiT
                                      # student's teacher): it waits for them, and reruns from scratch
                                      # when one of them is newer
      - name: eval_name               # an evaluation run: instead of task/config, a command of a tool
        command: anyformer decode-eval --ckpt runs/run_name/checkpoints/last.ckpt ...
        after: [run_name]             # optional: earlier runs it reads (rerun when one of them is newer)
        group: name                   # optional: the same evaluation of each run of a fit's seed group
    tables:
      - title: text
        rows: [run_name, ...]         # optional: default every run, in order
        columns: [val_loss, params, wall_s, device]   # metric keys or run facts (see anyformer.experiments.report)
        at_wall_s: shortest           # optional: read each row at equal wall-clock time instead of at
                                      # its end: the last validation with wall_s <= a budget, seconds
                                      # or `shortest` (the smallest last-validation wall_s of the rows)
        summary: [mean, worst]        # optional: rows under the runs, the mean and the minimum of each
                                      # metric column over them (e.g. leave-one-speaker-out folds)
        reference: run_name           # optional: a row of the table (a run or a seed group) that the
                                      # `<metric>_max_gap` columns compare every row's curve with
    figures: [eval_name, ...]         # optional: evaluation runs that draw runs/<name>/figure.png
                                      # (`anyformer attention ... --run-name`); the report shows them
    samples: [eval_name, ...]         # optional: `anyformer preference-eval` runs whose first samples
                                      # the report shows side by side, one column per run

Seeds: a group's runs must have the same task and config and the same overrides except
``--seed_everything`` (checked here), so a group is a repeat, never two settings averaged. A group of
evaluation runs is the same command applied to each seed of one training group: each member runs
``after`` exactly one run of that group, a different one, and the commands are equal once that run's
name is taken out of them (e.g. a rollout of every seed's checkpoint). A table's ``rows`` may name a
group instead of listing its runs.

An evaluation run is ``<command> --run-name <name>``; its tool (one of anyformer.core.cli.tasks.EVALUATION_TOOLS)
writes ``runs/<name>/run.json`` with its metrics itself (``anyformer.core.train.run_record.record_evaluation``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from anyformer.core.cli.errors import UsageError
from anyformer.core.cli.main import packaged
from anyformer.core.cli.tasks import EVALUATION_TOOLS, TASKS, TOOLS

COMPARISONS_DIR = Path("experiments/comparisons")
"""Where comparisons are looked up, as written in commands and reports: relative to the current
folder, else inside the installed package (:func:`packaged`)."""
THEN_STEPS = ("test",)
SEED_OPTION = "--seed_everything"
"""The only override in which the runs of a group may differ."""
SUMMARIES = ("mean", "worst")
"""Summary rows a table may add under its runs."""
GAP_SUFFIX = "_max_gap"
"""A column ``<metric>_max_gap``: the largest relative gap of a row's ``<metric>`` from the table's
``reference`` over the validations both logged at the same step (anyformer.experiments.report_tables)."""
SHORTEST = "shortest"
"""``at_wall_s: shortest``: the budget is the smallest last-validation wall_s among a table's rows."""
FIGURE_TOOL = "attention"
"""The evaluation tool whose runs draw ``runs/<name>/figure.png``."""
SAMPLES_TOOL = "preference-eval"
"""The evaluation tool whose runs write ``runs/<name>/samples.jsonl``."""


@dataclass(frozen=True)
class RunSpec:
    """One training run of a comparison."""

    name: str
    """Run folder name under ``runs/``."""
    task: str
    """Task trained (``anyformer <task> fit``)."""
    config: str
    """The experiment YAML, relative to the repository root."""
    overrides: tuple[str, ...] = ()
    """Extra CLI arguments, after the config."""
    then: tuple[str, ...] = ()
    """Steps after the fit, from THEN_STEPS."""
    group: str | None = None
    """Seed group: runs of one group differ only by ``--seed_everything``."""
    after: tuple[str, ...] = ()
    """Runs of the same comparison whose output the fit reads (a teacher's checkpoint), which must have
    finished first; a fit that ran before one of them ended no longer matches it."""

    def fit_argv(self) -> list[str]:
        """The fit command, starting with ``anyformer``."""
        return ["anyformer", self.task, "fit", "--config", self.config, "--run-name", self.name, *self.overrides]

    def argv(self) -> list[str]:
        """The command whose ``run.json`` backs this run: the fit."""
        return self.fit_argv()

    def checkpoint(self, runs_dir: str | Path = "runs") -> Path:
        return Path(runs_dir) / self.name / "checkpoints" / "last.ckpt"

    def test_argv(self) -> list[str]:
        """``anyformer <task> test`` on the fit's last checkpoint, same config and overrides."""
        argv = ["anyformer", self.task, "test", "--config", self.config, "--run-name", self.name, *self.overrides]
        return [*argv, "--ckpt_path", str(self.checkpoint())]


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation run of a comparison: an ``anyformer <tool>`` command that records its metrics."""

    name: str
    """Run folder name under ``runs/``."""
    command: tuple[str, ...]
    """The command as declared, ``("anyformer", tool, ...)``, without ``--run-name``."""
    after: tuple[str, ...] = ()
    """Runs of the same comparison it reads, which must have finished first."""
    group: str | None = None
    """Seed group: the same evaluation of each seed of the training group of its ``after`` run."""

    def argv(self) -> list[str]:
        """The command run, and recorded in ``run.json``: the declared one plus ``--run-name``."""
        return [*self.command, "--run-name", self.name]


Run = RunSpec | EvalSpec
"""A run of a comparison: a training run or an evaluation run."""


@dataclass(frozen=True)
class SetupStep:
    """A command that creates a file the runs need (e.g. a collected dataset)."""

    command: str
    creates: str

    def argv(self) -> list[str]:
        return shlex.split(self.command)


@dataclass(frozen=True)
class TableSpec:
    """A results table: one row per run, one column per metric key or run fact."""

    title: str
    rows: tuple[str, ...]
    """Run names, in order (a group named in the YAML is expanded to its runs)."""
    columns: tuple[str, ...]
    at_wall_s: float | str | None = None
    """None: every row at its end; seconds or SHORTEST: every row at its last validation within that budget."""
    summary: tuple[str, ...] = ()
    """Rows added under the runs, each over the runs' numbers: ``mean`` and/or ``worst`` (the minimum),
    e.g. the mean and the worst held-out speaker of a leave-one-speaker-out table."""
    reference: str | None = None
    """The row (a run, or a seed group) that GAP_SUFFIX columns measure every other row against."""


@dataclass(frozen=True)
class Comparison:
    """Runs, and the tables and learning-curve plot made from them."""

    name: str
    title: str
    runs: tuple[Run, ...]
    tables: tuple[TableSpec, ...]
    description: str = ""
    plot: str = "val_loss"
    setup: tuple[SetupStep, ...] = field(default=())
    figures: tuple[str, ...] = ()
    """Evaluation runs whose ``runs/<name>/figure.png`` the report copies beside RESULTS.md."""
    samples: tuple[str, ...] = ()
    """Evaluation runs whose ``runs/<name>/samples.jsonl`` the report shows side by side."""

    def group(self, name: str) -> str | None:
        """The seed group of run ``name``, None when it has none."""
        return self.run(name).group

    def run(self, name: str) -> Run:
        for spec in self.runs:
            if spec.name == name:
                return spec
        raise UsageError(f"comparison {self.name!r} has no run {name!r}; its runs: {[r.name for r in self.runs]}")


def _keys(where: str, mapping: Any, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(mapping, dict):
        raise UsageError(f"{where} must be a mapping with keys {sorted(required | optional)}, got {mapping!r}")
    missing, unknown = required - mapping.keys(), mapping.keys() - required - optional
    if missing or unknown:
        problem = f"lacks {sorted(missing)}" if missing else f"has unknown keys {sorted(unknown)}"
        raise UsageError(f"{where} {problem}; expected keys {sorted(required)} and optionally {sorted(optional)}")
    return mapping


def _str_list(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UsageError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def _tool_runs(where: str, value: Any, runs: list[Run], tool: str) -> tuple[str, ...]:
    """``value`` (a comparison's ``figures`` or ``samples``) checked to name ``anyformer <tool>`` runs of it."""
    names = _str_list(where, value)
    made = {run.name for run in runs if isinstance(run, EvalSpec) and run.command[1:2] == (tool,)}
    if not_made := [name for name in names if name not in made]:
        raise UsageError(
            f"{where} {not_made} are not `anyformer {tool}` runs of this comparison (those are {sorted(made)})"
        )
    return names


def _run_name(where: str, raw: dict[str, Any]) -> str:
    name = str(raw["name"])
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"{where}.name {name!r} must be a plain folder name (no '/', not hidden)")
    return name


def _run_spec(where: str, raw: Any, root: Path, earlier: list[str]) -> RunSpec:
    raw = _keys(where, raw, {"name", "task", "config"}, {"overrides", "then", "group", "after"})
    name, task, config = _run_name(where, raw), str(raw["task"]), str(raw["config"])
    if task not in TASKS:
        raise UsageError(f"{where}.task {task!r} is not one of {sorted(TASKS)}")
    if not (root / config).is_file() and not (root == Path(".") and packaged(config).is_file()):
        raise UsageError(f"{where}.config {config} does not exist (relative to {root}, nor in the package)")
    then = _str_list(f"{where}.then", raw.get("then", []))
    if set(then) - set(THEN_STEPS):
        raise UsageError(f"{where}.then {list(then)} may only hold {list(THEN_STEPS)}")
    overrides = _str_list(f"{where}.overrides", raw.get("overrides", []))
    group, after = _group_name(where, raw.get("group")), _after(where, raw, earlier)
    return RunSpec(name, task, config, overrides, then, group, after)


def _after(where: str, raw: dict[str, Any], earlier: list[str]) -> tuple[str, ...]:
    """A run's ``after``: runs it reads, which must be listed before it (so a plan runs them first)."""
    after = _str_list(f"{where}.after", raw.get("after", []))
    if unknown := [run for run in after if run not in earlier]:
        raise UsageError(f"{where}.after {unknown} must name runs listed before it ({earlier})")
    return after


def _group_name(where: str, group: Any) -> str | None:
    if group is not None and (not isinstance(group, str) or not group):
        raise UsageError(f"{where}.group must be a non-empty name, got {group!r}")
    return group


def _without_seed(spec: RunSpec) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    """What the runs of a seed group must share: task, config, then-steps and overrides but the seed."""
    overrides, skip_next = [], False
    for arg in spec.overrides:
        if skip_next:
            skip_next = False
        elif arg == SEED_OPTION:
            skip_next = True
        elif not arg.startswith(f"{SEED_OPTION}="):
            overrides.append(arg)
    return spec.task, spec.config, spec.then, tuple(overrides)


def _without_read_run(spec: EvalSpec) -> tuple[str, ...]:
    """An evaluation's command with the name of the run it reads replaced by a placeholder."""
    (read,) = spec.after
    # Whole names only: `dt_me` must not match inside `dt_me_seed1`.
    name = re.compile(rf"(?<![\w.-]){re.escape(read)}(?![\w.-])")
    return tuple(name.sub("<run>", arg) for arg in spec.command)


def _check_evaluation_group(where: str, group: str, members: list[EvalSpec], groups: dict[str, list[Run]]) -> None:
    """An evaluation group is one command applied to each seed of one training group (module docstring)."""
    names = [spec.name for spec in members]
    if any(len(spec.after) != 1 for spec in members):
        raise UsageError(f"{where}: each evaluation run of group {group!r} ({names}) must run `after` exactly one run")
    read = [spec.after[0] for spec in members]
    group_of = {run.name: name for name, runs in groups.items() for run in runs}
    read_groups = {group_of.get(name) for name in read}
    if len(set(read)) != len(read) or len(read_groups) != 1 or None in read_groups:
        raise UsageError(
            f"{where}: the evaluation runs of group {group!r} ({names}) must each read a different run of one "
            f"training seed group, got after {read}"
        )
    if len({_without_read_run(spec) for spec in members}) > 1:
        raise UsageError(
            f"{where}: the evaluation runs of group {group!r} ({names}) must run the same command but for "
            "the run they read"
        )


def _groups(where: str, runs: list[Run]) -> dict[str, list[str]]:
    """Group name -> its runs, in order; every group's runs differ only by seed."""
    groups: dict[str, list[Run]] = {}
    for spec in runs:
        if spec.group is not None:
            groups.setdefault(spec.group, []).append(spec)
    names = {spec.name for spec in runs}
    training = {g: members for g, members in groups.items() if all(isinstance(s, RunSpec) for s in members)}
    for group, members in groups.items():
        if group in names:
            raise UsageError(f"{where}: group {group!r} must not be the name of a run")
        if group not in training:
            if not all(isinstance(spec, EvalSpec) for spec in members):
                raise UsageError(f"{where}: group {group!r} mixes training runs and evaluation runs")
            _check_evaluation_group(where, group, members, training)
        elif len({_without_seed(spec) for spec in members}) > 1:
            raise UsageError(
                f"{where}: the runs of group {group!r} ({[spec.name for spec in members]}) must differ only by "
                f"{SEED_OPTION} (same task, config, then and other overrides)"
            )
    return {group: [spec.name for spec in members] for group, members in groups.items()}


def _at_wall_s(where: str, value: Any) -> float | str | None:
    if value is None or value == SHORTEST:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise UsageError(f"{where}.at_wall_s must be a positive number of seconds or {SHORTEST!r}, got {value!r}")
    return float(value)


def _reference(where: str, table: dict[str, Any], rows: tuple[str, ...], groups: dict[str, list[str]]) -> str | None:
    """The table's ``reference``: a row of it (a run, or a seed group), required by GAP_SUFFIX columns."""
    reference, gaps = table.get("reference"), [c for c in table["columns"] if str(c).endswith(GAP_SUFFIX)]
    if reference is None:
        if gaps:
            raise UsageError(f"{where}.columns {gaps} compare rows with a reference run: add `reference: <run>`")
        return None
    group_of = {run: group for group, members in groups.items() for run in members}
    labels = list(dict.fromkeys(group_of.get(run, run) for run in rows))
    if not isinstance(reference, str):
        raise UsageError(f"{where}.reference must be the name of a row of the table ({labels}), got {reference!r}")
    if reference in group_of and reference not in labels:
        raise UsageError(
            f"{where}.reference {reference!r} is a run of seed group {group_of[reference]!r}, "
            "which the table shows as one row: name the group"
        )
    if reference not in labels:
        raise UsageError(f"{where}.reference {reference!r} must name a row of the table: one of {labels}")
    if gaps and table.get("at_wall_s") is not None:
        raise UsageError(f"{where}.columns {gaps} compare whole curves and cannot be read at_wall_s")
    return reference


def _eval_spec(where: str, raw: dict[str, Any], earlier: list[str]) -> EvalSpec:
    raw = _keys(where, raw, {"name", "command"}, {"after", "group"})
    name, command = _run_name(where, raw), str(raw["command"])
    if not command.startswith("anyformer "):
        raise UsageError(f"{where}.command must be an `anyformer <tool> ...` command, got {command!r}")
    try:
        argv = shlex.split(command)
    except ValueError as err:  # an unclosed quote
        raise UsageError(f"{where}.command {command!r} cannot be split into arguments: {err}") from None
    tool = argv[1] if len(argv) > 1 else ""
    if tool not in TOOLS:
        hint = "; a training run has task and config instead of command" if tool in TASKS else ""
        raise UsageError(f"{where}.command: {tool!r} is not an anyformer tool ({sorted(TOOLS)}){hint}")
    if tool not in EVALUATION_TOOLS:
        needed = list(EVALUATION_TOOLS)
        raise UsageError(f"{where}.command: `anyformer {tool}` records no run; an evaluation run needs one of {needed}")
    if any(arg == "--run-name" or arg.startswith("--run-name=") for arg in argv):
        raise UsageError(f"{where}.command must not hold --run-name: `--run-name {name}` is added to it")
    return EvalSpec(name, tuple(argv), _after(where, raw, earlier), _group_name(where, raw.get("group")))


def _run(where: str, raw: Any, root: Path, earlier: list[str]) -> Run:
    """A training run, or an evaluation run when the entry has a ``command``."""
    if isinstance(raw, dict) and "command" in raw:
        return _eval_spec(where, raw, earlier)
    return _run_spec(where, raw, root, earlier)


def load_comparison(path: str | Path, root: str | Path = ".") -> Comparison:
    """Read and check a comparison YAML; run configs are resolved against ``root``.

    Raises:
        UsageError: a missing file, a bad key or value, an unknown task, a config that does not
            exist, an evaluation command that is not a recording tool's, a run ``after`` a run not
            listed before it, a duplicate run name, a table row that is not one of the runs, a
            table reference that is not one of its rows (or gap columns without one), a
            figure that is not an ``anyformer attention`` run of the comparison, or samples of a
            run that is not an ``anyformer preference-eval`` run of it.
    """
    path, root = Path(path), Path(root)
    if not path.is_file():
        raise UsageError(f"comparison file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UsageError(f"{path} is not valid YAML: {err}") from err
    raw = _keys(str(path), raw, {"title", "runs", "tables"}, {"description", "plot", "setup", "figures", "samples"})
    if not isinstance(raw["runs"], list) or not raw["runs"]:
        raise UsageError(f"{path}: runs must be a non-empty list")
    runs: list[Run] = []
    for i, run in enumerate(raw["runs"]):
        runs.append(_run(f"{path}: runs[{i}]", run, root, [earlier.name for earlier in runs]))
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise UsageError(f"{path}: run names must be unique, got {names}")
    groups = _groups(str(path), runs)
    tables = []
    for i, table in enumerate(raw["tables"] or []):
        where = f"{path}: tables[{i}]"
        table = _keys(where, table, {"title", "columns"}, {"rows", "at_wall_s", "summary", "reference"})
        listed = _str_list(f"{where}.rows", table.get("rows", names))
        if unknown := [row for row in listed if row not in names and row not in groups]:
            raise UsageError(
                f"{where}.rows {unknown} are not runs ({names}) or groups ({sorted(groups)}) of this comparison"
            )
        rows = tuple(run for row in listed for run in groups.get(row, [row]))
        columns = _str_list(f"{where}.columns", table["columns"])
        if not columns:
            raise UsageError(f"{where}.columns must name at least one column")
        summary = _str_list(f"{where}.summary", table.get("summary") or [])
        if bad := [kind for kind in summary if kind not in SUMMARIES]:
            raise UsageError(f"{where}.summary {bad} must be among {list(SUMMARIES)}")
        at_wall_s, reference = _at_wall_s(where, table.get("at_wall_s")), _reference(where, table, rows, groups)
        tables.append(TableSpec(str(table["title"]), rows, columns, at_wall_s, summary, reference))
    setup = []
    for i, step in enumerate(raw.get("setup") or []):
        step = _keys(f"{path}: setup[{i}]", step, {"command", "creates"}, set())
        if not str(step["command"]).startswith("anyformer "):
            raise UsageError(f"{path}: setup[{i}].command must be an `anyformer ...` command, got {step['command']!r}")
        setup.append(SetupStep(str(step["command"]), str(step["creates"])))
    figures = _tool_runs(f"{path}: figures", raw.get("figures") or [], runs, FIGURE_TOOL)
    samples = _tool_runs(f"{path}: samples", raw.get("samples") or [], runs, SAMPLES_TOOL)
    return Comparison(
        name=path.stem,
        title=str(raw["title"]),
        runs=tuple(runs),
        tables=tuple(tables),
        description=str(raw.get("description", "")).strip(),
        plot=str(raw.get("plot", "val_loss")),
        setup=tuple(setup),
        figures=figures,
        samples=samples,
    )


def comparison_path(name: str, folder: str | Path = COMPARISONS_DIR) -> Path:
    """``NAME`` -> ``<folder>/NAME.yaml`` (:func:`packaged`); a path to a YAML file is taken as is."""
    if name.endswith((".yaml", ".yml")):
        return packaged(name)
    path = packaged(Path(folder) / f"{name}.yaml")
    if not path.is_file():
        known = sorted(p.stem for p in packaged(folder).glob("*.yaml"))
        raise UsageError(f"no comparison {name!r}: {path} does not exist; known comparisons: {known}")
    return path


def all_comparisons(folder: str | Path = COMPARISONS_DIR, root: str | Path = ".") -> list[Comparison]:
    """Every comparison in ``folder`` (:func:`packaged`), sorted by name."""
    return [load_comparison(path, root) for path in sorted(packaged(folder).glob("*.yaml"))]
