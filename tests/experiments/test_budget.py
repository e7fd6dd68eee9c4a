"""A fit that its wall-clock budget (trainer.max_time) ended is a result: the report shows it, the runner
neither resumes it nor holds back what reads it; a fit stopped for another reason is still none."""

from pathlib import Path

import pytest
import yaml

from anyformer.core.train.run_record import read_record
from anyformer.experiments import report
from anyformer.experiments import runner as experiment
from anyformer.experiments.budget import max_time_s, ran_its_course, seconds
from tests.experiments.test_experiment import _comparison, _tiny_config


@pytest.mark.parametrize(
    ("value", "expected"),
    [("00:01:00:00", 3600.0), ("01:00:00:30", 86430.0), ({"hours": 1, "minutes": 30}, 5400.0), (None, None)],
)
def test_max_time_reads_as_lightning_writes_it(value, expected):
    assert seconds(value) == expected


def test_the_budget_is_the_last_config_s_unless_the_command_overrides_it(tmp_path):
    (tmp_path / "base.yaml").write_text("trainer:\n  max_time: '00:01:00:00'\n")
    (tmp_path / "more.yaml").write_text("trainer:\n  max_time: '00:00:30:00'\n")
    (tmp_path / "none.yaml").write_text("model: {}\n")
    record = {"config": ["base.yaml", "more.yaml", "none.yaml"], "argv": ["anyformer", "vit", "fit"]}
    assert max_time_s(record, tmp_path) == 1800.0
    assert max_time_s(record | {"argv": ["fit", "--trainer.max_time=00:00:10:00"]}, tmp_path) == 600.0
    assert max_time_s(record | {"argv": ["fit", "--trainer.max_time", "00:00:00:05"]}, tmp_path) == 5.0
    assert max_time_s({"config": ["none.yaml"], "argv": []}, tmp_path) is None
    assert max_time_s({"config": ["missing.yaml"], "argv": []}, tmp_path) is None
    assert max_time_s(record | {"argv": ["fit", "--trainer.max_time=soon"]}, tmp_path) is None


def test_only_a_stop_at_the_end_of_the_budget_is_a_result(tmp_path):
    (tmp_path / "budget.yaml").write_text("trainer:\n  max_time: '00:01:00:00'\n")
    fit = {"config": ["budget.yaml"], "argv": [], "wall_s": 3600.2}
    assert ran_its_course(fit | {"status": "finished"}, tmp_path)
    assert ran_its_course(fit | {"status": "stopped"}, tmp_path)  # Lightning's Timer ended it
    assert not ran_its_course(fit | {"status": "stopped", "wall_s": 1200.0}, tmp_path)  # early stopping, say
    assert not ran_its_course(fit | {"status": "failed"}, tmp_path)
    assert not ran_its_course({"config": [], "argv": [], "wall_s": 9e9, "status": "stopped"}, tmp_path)
    assert not ran_its_course(None, tmp_path)


def test_a_fit_lightnings_timer_ends_is_a_row_and_is_not_resumed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question. " * 60)
    config = _tiny_config(tmp_path / "gpt.yaml", corpus, {"transformer": {"dim": 16, "n_layers": 1}})
    settings = yaml.safe_load((tmp_path / config).read_text())
    settings["trainer"] |= {"max_steps": 10**6, "max_time": "00:00:00:02"}  # the budget, not the steps, ends it
    (tmp_path / config).write_text(yaml.safe_dump(settings))
    runs = [{"name": "budgeted", "task": "gpt", "config": config}]
    tables = [{"title": "Toy table", "columns": ["val_loss", "step", "status"]}]
    _comparison(tmp_path, runs, tables=tables)
    assert experiment.main(["toy", "--comparisons", "comparisons"]) == 0

    record = read_record(tmp_path / "runs" / "budgeted")
    assert record["status"] == "stopped" and 0 < record["step"] < 10**6 and record["wall_s"] >= 2
    capsys.readouterr()
    assert experiment.main(["toy", "--comparisons", "comparisons"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "budgeted (" in line)
    assert line.split()[1:3] == ["skip", "budgeted"] and "(ended by its max_time" in line
    assert read_record(tmp_path / "runs" / "budgeted") == record  # not resumed: its budget is spent

    assert report.main(["--comparisons", "comparisons", "--out", "results"]) == 0
    text = Path(tmp_path / "results" / "RESULTS.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| budgeted"))
    assert row.endswith(f"| {record['metrics']['val_loss']:.4f} | {record['step']} | max_time |")
