"""Comparison YAML files: the repository's load, and mistakes in one are clear errors."""

import dataclasses
import importlib
import re
from pathlib import Path

import pytest
import yaml

from anyformer.core.cli.errors import UsageError
from anyformer.core.cli.tasks import TASKS, TOOLS
from anyformer.core.config import TransformerConfig
from anyformer.core.train.run_record import same_command
from anyformer.experiments.comparison import EvalSpec, RunSpec, all_comparisons, load_comparison

REPO = Path(__file__).resolve().parents[2]


def test_every_repository_comparison_loads_with_existing_configs_and_known_fields():
    comparisons = all_comparisons(REPO / "experiments/comparisons", root=REPO)
    assert {c.name for c in comparisons} >= {"gpt_shakespeare", "gpt_ablations", "suite"}
    transformer_fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    commands: dict[str, list[str]] = {}
    for comparison in comparisons:
        for run in comparison.runs:
            if isinstance(run, EvalSpec):  # its tool's own parser accepts the command (flags spelt right)
                module = importlib.import_module(TOOLS[run.command[1]][0].split(":")[0])
                module.build_parser().parse_args(run.argv()[2:])
            else:
                assert (REPO / run.config).is_file() and run.task in TASKS
            for override in getattr(run, "overrides", ()):  # a misspelt ablation field would only fail at run time
                if override.startswith("--model.config.transformer."):
                    assert override.split(".")[3].split("=")[0] in transformer_fields, override
            # A run shared by comparisons is one folder: it must be the same command everywhere.
            assert same_command(commands.setdefault(run.name, run.argv()), run.argv()), run.name


def test_every_repository_run_that_reads_another_runs_folder_runs_after_it():
    """A run reading a checkpoint or file of another run (a DeiT teacher, a pretrained BERT, DPO's pairs)
    must wait for it and be rerun when it is: ``after`` names every ``runs/<name>/`` its settings mention."""
    for comparison in all_comparisons(REPO / "experiments/comparisons", root=REPO):
        for run in comparison.runs:
            if isinstance(run, EvalSpec):
                text = " ".join(run.command)
            else:  # the settings, not the comments (a header's example commands name the run's own folder)
                text = yaml.safe_dump(yaml.safe_load((REPO / run.config).read_text())) + " ".join(run.overrides)
            read = set(re.findall(r"\bruns/([\w.-]+)/", text)) - {run.name}
            assert read <= set(run.after), f"{comparison.name}: {run.name} reads {sorted(read - set(run.after))}"


def _write(tmp_path: Path, **changes) -> Path:
    (tmp_path / "a.yaml").write_text("seed_everything: 1\n")
    raw = {
        "title": "t",
        "runs": [
            {"name": "one", "task": "gpt", "config": "a.yaml"},
            {"name": "two", "task": "gpt", "config": "a.yaml"},
        ],
        "tables": [{"title": "x", "columns": ["val_loss"]}],
    }
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(raw | changes))
    return path


def test_defaults_and_commands(tmp_path):
    comparison = load_comparison(_write(tmp_path), root=tmp_path)
    assert comparison.name == "cmp" and comparison.plot == "val_loss"
    assert comparison.tables[0].rows == ("one", "two")  # every run by default
    run = comparison.runs[0]
    assert run.fit_argv() == ["anyformer", "gpt", "fit", "--config", "a.yaml", "--run-name", "one"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"runs": [{"name": "one", "task": "nope", "config": "a.yaml"}]}, r"runs\[0\]\.task 'nope' is not one of"),
        ({"runs": [{"name": "one", "task": "gpt", "config": "b.yaml"}]}, r"runs\[0\]\.config b\.yaml does not exist"),
        ({"runs": [{"name": "a/b", "task": "gpt", "config": "a.yaml"}]}, "must be a plain folder name"),
        ({"runs": [{"name": "one", "task": "gpt", "config": "a.yaml", "then": ["x"]}]}, r"then \['x'\] may only"),
        ({"runs": [{"name": "one", "task": "gpt", "config": "a.yaml", "extra": 1}]}, r"unknown keys \['extra'\]"),
        ({"tables": [{"title": "x", "rows": ["three"], "columns": ["a"]}]}, r"rows \['three'\] are not runs"),
        ({"tables": [{"title": "x", "columns": []}]}, "must name at least one column"),
        ({"setup": [{"command": "rm -rf /", "creates": "x"}]}, "must be an `anyformer ...` command"),
        ({"tables": [{"title": "x", "columns": ["val_loss_max_gap"]}]}, r"tables\[0\]\.columns .* add `reference"),
        (
            {"tables": [{"title": "x", "rows": ["one"], "columns": ["val_loss_max_gap"], "reference": "two"}]},
            r"cmp\.yaml: tables\[0\]\.reference 'two' must name a row of the table: one of \['one'\]",
        ),
        (
            {"tables": [{"title": "x", "columns": ["val_loss_max_gap"], "reference": "one", "at_wall_s": 5}]},
            "compare whole curves and cannot be read at_wall_s",
        ),
    ],
)
def test_mistakes_are_one_clear_error(tmp_path, changes, message):
    with pytest.raises(UsageError, match=message):
        load_comparison(_write(tmp_path, **changes), root=tmp_path)


EVAL = {"name": "three", "command": "anyformer rollout --ckpt runs/one/checkpoints/last.ckpt --targets 1,2"}


def test_an_entry_with_a_command_is_an_evaluation_run(tmp_path):
    runs = [{"name": "one", "task": "gpt", "config": "a.yaml"}, EVAL | {"after": ["one"]}]
    comparison = load_comparison(_write(tmp_path, runs=runs), root=tmp_path)
    fit, evaluation = comparison.runs
    assert isinstance(fit, RunSpec) and fit.argv() == fit.fit_argv()
    assert evaluation == EvalSpec(
        "three", ("anyformer", "rollout", "--ckpt", "runs/one/checkpoints/last.ckpt", "--targets", "1,2"), ("one",)
    )
    assert evaluation.argv()[-2:] == ["--run-name", "three"]
    assert comparison.tables[0].rows == ("one", "three")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (EVAL | {"command": "python -m evil"}, r"runs\[1\]\.command must be an `anyformer <tool> \.\.\.` command"),
        (EVAL | {"command": "anyformer nope --x"}, r"'nope' is not an anyformer tool"),
        (EVAL | {"command": "anyformer gpt fit --config a.yaml"}, "a training run has task and config instead"),
        (EVAL | {"command": "anyformer generate --ckpt x"}, r"`anyformer generate` records no run; .* needs one of"),
        (EVAL | {"command": "anyformer rollout --run-name x"}, "must not hold --run-name"),
        (EVAL | {"command": "anyformer rollout --ckpt 'x"}, "cannot be split into arguments"),
        (EVAL | {"after": ["two"]}, r"after \['two'\] must name runs listed before it \(\['one'\]\)"),
        (EVAL | {"after": ["three"]}, r"after \['three'\] must name runs listed before it"),
        (EVAL | {"then": ["test"]}, r"unknown keys \['then'\]"),
    ],
)
def test_evaluation_run_mistakes_are_one_clear_error(tmp_path, entry, message):
    runs = [
        {"name": "one", "task": "gpt", "config": "a.yaml"},
        entry,
        {"name": "two", "task": "gpt", "config": "a.yaml"},
    ]
    with pytest.raises(UsageError, match=message):
        load_comparison(_write(tmp_path, runs=runs), root=tmp_path)


def test_a_training_run_may_read_earlier_runs(tmp_path):
    student = {"name": "student", "task": "vit", "config": "a.yaml", "after": ["teacher"]}
    runs = [{"name": "teacher", "task": "vision-cnn", "config": "a.yaml"}, student]
    teacher, read = load_comparison(_write(tmp_path, runs=runs), root=tmp_path).runs
    assert teacher.after == () and read.after == ("teacher",) and read.argv() == read.fit_argv()
    with pytest.raises(UsageError, match=r"runs\[0\]\.after \['teacher'\] must name runs listed before it \(\[\]\)"):
        load_comparison(_write(tmp_path, runs=[student, runs[0]]), root=tmp_path)


def test_duplicate_run_names_are_rejected(tmp_path):
    run = {"name": "one", "task": "gpt", "config": "a.yaml"}
    with pytest.raises(UsageError, match="run names must be unique"):
        load_comparison(_write(tmp_path, runs=[run, run]), root=tmp_path)


def test_same_command_ignores_only_the_run_name_and_the_resume_checkpoint():
    planned = ["anyformer", "gpt", "fit", "--config", "a.yaml", "--run-name", "one", "--x=1"]
    assert same_command(["anyformer", "gpt", "fit", "--config", "a.yaml", "--x=1", "--ckpt_path", "last"], planned)
    assert same_command(["anyformer", "gpt", "fit", "--config", "a.yaml", "--run-name=one", "--x=1"], planned)
    assert not same_command(["anyformer", "gpt", "fit", "--config", "a.yaml", "--x=2"], planned)


def test_a_reference_names_a_table_row_and_a_grouped_run_only_through_its_group(tmp_path):
    runs = [{"name": "one", "task": "gpt", "config": "a.yaml", "group": "g"},
            {"name": "two", "task": "gpt", "config": "a.yaml", "group": "g", "overrides": ["--seed_everything=2"]},
            {"name": "three", "task": "gpt", "config": "a.yaml"}]  # fmt: skip
    table = {"title": "x", "rows": ["g", "three"], "columns": ["val_loss", "val_loss_max_gap"]}
    comparison = load_comparison(_write(tmp_path, runs=runs, tables=[table | {"reference": "g"}]), root=tmp_path)
    assert comparison.tables[0].reference == "g" and comparison.tables[0].rows == ("one", "two", "three")
    with pytest.raises(UsageError, match=r"'one' is a run of seed group 'g', .* name the group"):
        load_comparison(_write(tmp_path, runs=runs, tables=[table | {"reference": "one"}]), root=tmp_path)


def test_the_bf16_comparison_measures_bf16_seeds_against_the_fp32_seeds_of_the_main_job():
    comparison = load_comparison(REPO / "experiments/comparisons/bf16_training.yaml", root=REPO)
    (table,) = comparison.tables
    assert table.reference == "fp32" and "val_loss_max_gap" in table.columns
    fp32 = [run for run in comparison.runs if run.group == "fp32"]
    bf16 = [run for run in comparison.runs if run.group == "bf16-mixed"]
    assert set(table.rows) == {run.name for run in fp32 + bf16} and len(fp32) == len(bf16) == 3
    assert fp32[0].name == "gpt_shakespeare_char" and fp32[0].overrides == ()  # the main job's run, shared
    assert {run.config for run in fp32 + bf16} == {"experiments/text/gpt_shakespeare_char.yaml"}
    for plain, mixed in zip(fp32, bf16, strict=True):  # the same seeds, bf16-mixed the only other change
        assert mixed.overrides == ("--trainer.precision=bf16-mixed", *plain.overrides)


def _rollout_group(*reads: str, extra: str = "") -> list[dict]:
    """Two seeds of a fit, then a rollout of each seed's checkpoint in one evaluation group."""
    fits = [{"name": "dt", "task": "dt", "config": "a.yaml", "group": "fits"},
            {"name": "dt_seed1", "task": "dt", "config": "a.yaml", "group": "fits",
             "overrides": ["--seed_everything=1"]},
            {"name": "bc", "task": "dt", "config": "a.yaml"}]  # fmt: skip
    rollouts = [
        {"name": f"{read}_rollout", "command": f"anyformer rollout --ckpt runs/{read}/checkpoints/last.ckpt --seed 0"
         + (extra if i else ""), "after": [read], "group": "rollouts"}
        for i, read in enumerate(reads)
    ]  # fmt: skip
    return fits + rollouts


def test_an_evaluation_group_is_one_command_applied_to_each_seed_of_a_training_group(tmp_path):
    comparison = load_comparison(_write(tmp_path, runs=_rollout_group("dt", "dt_seed1")), root=tmp_path)
    assert comparison.group("dt_rollout") == comparison.group("dt_seed1_rollout") == "rollouts"
    assert comparison.group("bc") is None
    cases = {
        "must run the same command": _rollout_group("dt", "dt_seed1", extra=" --greedy"),
        "must each read a different run of one training seed group": _rollout_group("dt", "bc"),
    }
    for message, runs in cases.items():
        with pytest.raises(UsageError, match=message):
            load_comparison(_write(tmp_path, runs=runs), root=tmp_path)
    same_read = _rollout_group("dt", "dt_seed1")
    same_read[-1] = same_read[-1] | {"name": "again", "command": same_read[-2]["command"], "after": ["dt"]}
    with pytest.raises(UsageError, match="must each read a different run"):
        load_comparison(_write(tmp_path, runs=same_read), root=tmp_path)
    mixed = _rollout_group("dt", "dt_seed1")
    mixed[2] |= {"group": "rollouts"}  # a fit in the evaluation group
    with pytest.raises(UsageError, match="mixes training runs and evaluation runs"):
        load_comparison(_write(tmp_path, runs=mixed), root=tmp_path)
