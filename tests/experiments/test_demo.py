"""anyformer demo: the main job covers every task of the suite and prints one output per task."""

from __future__ import annotations

import contextlib

from anyformer.core.cli.main import main as anyformer
from anyformer.core.cli.tasks import TASKS
from anyformer.experiments import demo
from anyformer.experiments.comparison import RunSpec, load_comparison


def test_the_demo_trains_all_six_tasks_and_prints_an_output_of_each():
    comparison = load_comparison(demo.DEMO_FILE)
    tasks = {spec.task for spec in comparison.runs if isinstance(spec, RunSpec)}
    assert {"gpt", "bert", "bert-classify", "seq2seq", "vit", "speech", "dt"} <= tasks <= set(TASKS)
    trained = {spec.name for spec in comparison.runs}
    commands = demo.output_commands(demo.OUT_DIR / "digit.png", demo.OUT_DIR / "clip.wav")
    assert [command[0] for _, command in commands] == ["generate", "classify", "translate", "classify", "classify",
                                                       "rollout"]  # fmt: skip
    for _, command in commands:  # each output reads a checkpoint the demo trains
        ckpt = command[command.index("--ckpt") + 1]
        assert ckpt.split("/")[1] in trained, ckpt
    tabled = {name for table in comparison.tables for name in table.rows}
    assert tabled == {spec.name for spec in comparison.runs if isinstance(spec, RunSpec)}


def test_dry_run_prints_the_plan_from_any_folder(tmp_path, capsys):
    with contextlib.chdir(tmp_path):
        assert anyformer(["demo", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "anyformer collect --env CartPole-v1" in out
    assert out.count("anyformer ") >= 12 and not (tmp_path / "runs").exists()
