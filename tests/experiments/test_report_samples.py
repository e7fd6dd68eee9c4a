"""anyformer report: a comparison's ``samples`` runs (``anyformer preference-eval``) shown side by side,
archived with the run, and refused when a listed run is not a sampling run."""

import json
from pathlib import Path

import pytest
import yaml

from anyformer.core.cli.errors import UsageError
from anyformer.experiments.comparison import load_comparison
from anyformer.experiments.report import main
from tests.experiments.test_report import make_run


def eval_argv(name: str, policy: str) -> list[str]:
    return ["anyformer", "preference-eval", "--policy", policy, "--run-name", name]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "comparisons").mkdir()
    runs = [
        {"name": "base", "command": "anyformer preference-eval --policy a.ckpt"},
        {"name": "tuned", "command": "anyformer preference-eval --policy b.ckpt"},
    ]
    comparison = {
        "title": "Toy preferences", "runs": runs, "samples": ["base", "tuned"],
        "tables": [{"title": "Judged", "columns": ["judge_positive"]}],
    }  # fmt: skip
    (tmp_path / "comparisons" / "toy.yaml").write_text(yaml.safe_dump(comparison, sort_keys=False))
    (tmp_path / "runs").mkdir()
    return tmp_path


def write_samples(folder: Path, continuations: list[str], judge: float) -> None:
    lines = [
        json.dumps({"prompt": f"prompt {i}", "continuation": text, "reward": 0.5, "judge": judge})
        for i, text in enumerate(continuations)
    ]
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n")


def test_samples_of_each_run_stand_side_by_side_and_are_archived(workspace):
    make_run(workspace / "runs", "base", argv=eval_argv("base", "a.ckpt"), task="preference-eval")
    make_run(workspace / "runs", "tuned", argv=eval_argv("tuned", "b.ckpt"), task="preference-eval")
    write_samples(workspace / "runs" / "base", [f" dull {i} .\n" for i in range(7)], 0.125)
    write_samples(workspace / "runs" / "tuned", [f" a | delight {i} .\n" for i in range(7)], 0.875)
    assert main(["--runs", "runs", "--out", "results", "--comparisons", "comparisons"]) == 0
    text = (workspace / "results" / "RESULTS.md").read_text()
    section = text[text.index("### Samples") :]
    assert "| prompt | base | tuned |" in section
    assert "| prompt 0 | dull 0 . (0.12) | a \\| delight 0 . (0.88) |" in section  # one line, pipes escaped
    assert "prompt 4" in section and "prompt 5" not in section  # the first five prompts only
    assert (workspace / "results" / "runs" / "tuned" / "samples.jsonl").is_file()


def test_samples_of_a_run_that_has_none_say_so(workspace):
    make_run(workspace / "runs", "base", argv=eval_argv("base", "a.ckpt"), task="preference-eval")
    write_samples(workspace / "runs" / "base", [" fine .\n"], 0.5)
    assert main(["--runs", "runs", "--out", "results", "--comparisons", "comparisons"]) == 0
    text = (workspace / "results" / "RESULTS.md").read_text()
    assert "Not sampled yet: tuned: not run." in text


def test_samples_must_name_preference_eval_runs_of_the_comparison(workspace):
    path = workspace / "comparisons" / "toy.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["runs"].append({"name": "other", "command": "anyformer decode-eval --ckpt c.ckpt"})
    raw["samples"] = ["other"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(UsageError, match=r"samples \['other'\] are not `anyformer preference-eval` runs"):
        load_comparison(path)
