"""anyformer report: tables and curves from synthetic run folders (run.json + metrics.csv)."""

import csv
import json
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from anyformer.core.train import run_record
from anyformer.experiments.report import MISSING, RESULTS_FILE, main
from tests.helpers import commit_all, git

MACHINE = {"platform": "Linux-x", "cpu": "Test CPU", "cores": 2, "torch_threads": 2, "gpu": None,
           "torch": "2.0", "python": "3.11"}  # fmt: skip


def fit_argv(name: str, *overrides: str) -> list[str]:
    return ["anyformer", "gpt", "fit", "--config", "exp.yaml", "--run-name", name, *overrides]


def make_run(runs: Path, name: str, *, curve=(), argv=None, **fields) -> dict:
    """A run folder as RunRecord and CSVLogger leave it; ``curve`` is [(step, wall_s, val_bpc, val_acc)]."""
    record = {
        "format": 1, "run_name": name, "task": "gpt", "argv": argv or fit_argv(name), "config": ["exp.yaml"],
        "git": {"commit": "0123456789abcdef" * 2 + "01234567", "dirty": False}, "machine": MACHINE,
        "started": "2026-11-23T10:00:00Z", "ended": "2026-11-23T10:05:00Z", "status": "finished",
        "step": 100, "params": 1234, "wall_s": 12.3456, "metrics": {"val_bpc": 2.345678},
    } | fields  # fmt: skip
    (runs / name).mkdir(parents=True)
    (runs / name / "run.json").write_text(json.dumps(record))
    with open(runs / name / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "train_loss", "val_acc", "val_bpc", "wall_s"])
        for step, wall, bpc, acc in curve:
            writer.writerow([0, step - 1, 1.5, "", "", ""])  # a training row: no val metrics
            writer.writerow([0, step, "", acc, bpc, wall])
    return record


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A repository-like folder: a config, a comparison of three runs, and a runs/ folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text("seed_everything: 1\n")
    (tmp_path / "comparisons").mkdir()
    runs = [{"name": n, "task": "gpt", "config": "exp.yaml"} for n in ("alpha", "beta", "gamma")]
    runs[1]["overrides"] = ["--trainer.max_steps=7"]
    comparison = {
        "title": "Toy comparison", "description": "Three runs.", "plot": "val_bpc", "runs": runs,
        "tables": [{"title": "Main", "columns": ["val_bpc", "val_acc", "test_acc", "params", "wall_s", "device"]},
                   {"title": "Alpha only", "rows": ["alpha"], "columns": ["step", "status"]}],
    }  # fmt: skip
    (tmp_path / "comparisons" / "toy.yaml").write_text(yaml.safe_dump(comparison, sort_keys=False))
    (tmp_path / "runs").mkdir()
    return tmp_path


def report(workspace: Path) -> str:
    assert main(["--runs", "runs", "--out", "results", "--comparisons", "comparisons"]) == 0
    return (workspace / "results" / RESULTS_FILE).read_text()


def label(text: str, name: str) -> str:
    """The run cell of ``name``'s first row: its name and marks (``†``, ``(stale)``)."""
    line = next(line for line in text.splitlines() if line.split("|")[1:2] and line.split("|")[1].split()[:1] == [name])
    return line.split("|")[1].strip()


def row(text: str, name: str) -> list[str]:
    """The cells after the run cell of ``name``'s first row (marks or not)."""
    line = next(line for line in text.splitlines() if line.split("|")[1:2] and line.split("|")[1].split()[:1] == [name])
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


def test_rerunning_or_deleting_and_rerunning_gives_the_same_bytes(workspace):
    runs = workspace / "runs"
    make_run(runs, "alpha", curve=[(10, 1.0, 3.0, 0.5), (20, 2.0, 2.5, 0.6)])
    make_run(runs, "beta", argv=fit_argv("beta", "--trainer.max_steps=7"), curve=[(10, 1.5, 2.9, 0.4)])
    first = report(workspace)
    png = workspace / "results" / "toy.png"
    assert png.is_file() and "(toy.png)" in first
    assert report(workspace) == first
    (workspace / "results" / RESULTS_FILE).unlink()
    png.unlink()
    assert report(workspace) == first and png.is_file()


def test_a_fresh_clone_regenerates_the_same_bytes_from_the_archived_logs(workspace):
    runs, archive = workspace / "runs", workspace / "results" / "runs"
    make_run(runs, "alpha", curve=[(10, 1.0, 3.0, 0.5), (20, 2.0, 2.5, 0.6)])
    make_run(runs, "gamma", status="failed")  # backs no row: not archived
    first = report(workspace)
    assert row(first, "gamma")[0] == "not finished (failed)"
    assert sorted(path.name for path in (archive / "alpha").iterdir()) == ["metrics.csv", "run.json"]
    assert (archive / "alpha" / "metrics.csv").read_bytes() == (runs / "alpha" / "metrics.csv").read_bytes()
    assert not (archive / "gamma").exists()
    (runs / "gamma" / "run.json").unlink()
    first = report(workspace)
    for path in sorted(runs.rglob("*"), reverse=True):  # a fresh clone: runs/ is not committed
        path.unlink() if path.is_file() else path.rmdir()
    (workspace / "results" / RESULTS_FILE).unlink()
    assert report(workspace) == first
    assert row(first, "alpha")[0] == "2.3457"


def test_a_live_run_replaces_its_archived_copy_and_an_unfinished_one_does_not(workspace):
    runs, archive = workspace / "runs", workspace / "results" / "runs"
    make_run(runs, "alpha", metrics={"val_bpc": 3.0})
    assert row(report(workspace), "alpha")[0] == "3.0000"
    (runs / "alpha" / "run.json").write_text(json.dumps(json.loads((runs / "alpha" / "run.json").read_text())
                                                        | {"status": "running", "metrics": {}}))  # fmt: skip
    assert row(report(workspace), "alpha")[0] == "3.0000"  # a rerun in progress: the archive backs the row
    assert json.loads((archive / "alpha" / "run.json").read_text())["status"] == "finished"
    (runs / "alpha" / "run.json").write_text(json.dumps(json.loads((archive / "alpha" / "run.json").read_text())
                                                        | {"metrics": {"val_bpc": 2.0}}))  # fmt: skip
    assert row(report(workspace), "alpha")[0] == "2.0000"
    assert json.loads((archive / "alpha" / "run.json").read_text())["metrics"] == {"val_bpc": 2.0}


def test_cells_come_from_the_run_record_else_the_last_logged_value(workspace):
    runs = workspace / "runs"
    record = make_run(runs, "alpha", curve=[(10, 1.0, 3.0, 0.5), (20, 2.0, 2.5, 0.625)])
    text = report(workspace)
    val_bpc, val_acc, test_acc, params, wall_s, device = row(text, "alpha")
    assert val_bpc == f"{record['metrics']['val_bpc']:.4f}"  # the record wins over the CSV's 2.5
    assert val_acc == f"{0.625:.4f}"  # not in the record: the last value metrics.csv holds
    assert test_acc == MISSING
    assert params == f"{record['params']:,}" and wall_s == f"{record['wall_s']:.0f}"
    assert device == f"CPU, {MACHINE['torch_threads']} threads"
    assert "| alpha | 100 | finished |" in text  # the second table
    assert "anyformer experiment toy" in text
    assert "    anyformer gpt fit --config exp.yaml --run-name beta --trainer.max_steps=7" in text


def test_missing_unfinished_or_foreign_runs_are_listed_never_filled_in(workspace):
    runs = workspace / "runs"
    make_run(runs, "alpha", status="failed", metrics={"val_bpc": 9.87654})
    make_run(runs, "beta", metrics={"val_bpc": 8.76543})  # made without the declared override
    text = report(workspace)
    assert row(text, "alpha") == ["not finished (failed)"] + [MISSING] * 5
    assert row(text, "beta")[0].startswith("not run (") and row(text, "gamma") == ["not run"] + [MISSING] * 5
    assert "9.8765" not in text and "8.7654" not in text
    assert "No run of this table has finished yet." in text
    assert not (workspace / "results" / "toy.png").exists()  # no backed curve, no figure


def test_stamp_names_commit_machine_and_dates_of_the_runs_behind_each_table(workspace):
    runs = workspace / "runs"
    make_run(runs, "alpha", started="2026-11-23T09:00:00Z", ended="2026-11-23T09:30:00Z")
    make_run(runs, "beta", argv=fit_argv("beta", "--trainer.max_steps=7"), ended="2026-11-23T11:15:00Z",
             git={"commit": "f" * 40, "dirty": True})  # fmt: skip
    text = report(workspace)
    main_table = text.split("### Main", 1)[1].split("###", 1)[0]
    assert "`0123456789` (alpha)" in main_table and "`ffffffffff` + uncommitted changes (beta)" in main_table
    assert "Test CPU, 2 cores, 2 torch threads, no GPU" in main_table  # recorded before cpu_signature: name only
    assert "2026-11-23 09:00 UTC to 2026-11-23 11:15 UTC" in main_table
    alpha_table = text.split("### Alpha only", 1)[1]
    assert "- Commit: `0123456789`\n" in alpha_table and "to 2026-11-23 09:30 UTC" in alpha_table


def test_the_stamp_tells_apart_cpus_of_one_name_by_family_model_and_isa(workspace):
    runs = workspace / "runs"
    for name, family, isa in (("alpha", 25, ["avx2", "avx512f"]), ("beta", 26, [])):
        signature = {"family": family, "model": 17, "isa": isa}
        make_run(runs, name, argv=fit_argv(name, *(["--trainer.max_steps=7"] if name == "beta" else [])),
                 machine=MACHINE | {"cpu_signature": signature})  # fmt: skip
    main_table = report(workspace).split("### Main", 1)[1].split("###", 1)[0]
    assert "Test CPU (family 25 model 17; avx2 avx512f), 2 cores, 2 torch threads, no GPU" in main_table
    assert "Test CPU (family 26 model 17; no AVX2), 2 cores" in main_table and "(beta)" in main_table


def test_a_cpu_column_names_each_rows_cpu_so_hosts_can_sit_side_by_side(workspace):
    comparison = yaml.safe_load((workspace / "comparisons" / "toy.yaml").read_text())
    comparison["tables"] = [{"title": "Hosts", "rows": ["alpha", "beta"], "columns": ["wall_s", "cpu"]}]
    (workspace / "comparisons" / "toy.yaml").write_text(yaml.safe_dump(comparison, sort_keys=False))
    runs = workspace / "runs"
    make_run(runs, "alpha", machine=MACHINE | {"cpu_signature": {"family": 25, "model": 1, "isa": ["avx2"]}})
    make_run(runs, "beta", argv=fit_argv("beta", "--trainer.max_steps=7"))  # recorded before cpu_signature
    text = report(workspace)
    assert row(text, "alpha") == ["12", "Test CPU (family 25 model 1; avx2)"]
    assert row(text, "beta") == ["12", "Test CPU"]


def test_a_commit_to_the_record_writer_alone_stales_no_run(workspace):
    for name in ("core/code.py", "core/train/run_record.py"):
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_text("x = 1\n")
    make_run(workspace / "runs", "alpha", git={"commit": commit_all("code", cwd=workspace), "dirty": False})
    (workspace / "core" / "train" / "run_record.py").write_text("x = 2\n")  # how runs are recorded, not computed
    git("commit", "-q", "-am", "record the CPU better", cwd=workspace)
    assert label(report(workspace), "alpha") == "alpha"
    (workspace / "core" / "code.py").write_text("x = 2\n")
    git("commit", "-q", "-am", "core", cwd=workspace)
    assert label(report(workspace), "alpha") == "alpha (stale)" and "(`core/` (1 file))" in report(workspace)


def test_an_evaluation_run_is_a_row_with_its_recorded_metrics_and_no_fit_facts(workspace):
    evaluation = ["anyformer", "decode-eval", "--ckpt", "runs/alpha/checkpoints/last.ckpt", "--strategy", "beam"]
    comparison = {
        "title": "Evaluations",
        "runs": [{"name": "alpha", "task": "gpt", "config": "exp.yaml"},
                 {"name": "alpha_beam", "command": shlex.join(evaluation), "after": ["alpha"]},
                 {"name": "alpha_greedy", "command": "anyformer decode-eval --ckpt x.ckpt"}],
        "tables": [{"title": "Decoding", "rows": ["alpha_beam", "alpha_greedy"],
                    "columns": ["gen_ppl", "distinct_2", "params", "wall_s", "step", "status", "device"]}],
    }  # fmt: skip
    (workspace / "comparisons" / "evals.yaml").write_text(yaml.safe_dump(comparison, sort_keys=False))
    make_run(workspace / "runs", "alpha")
    started = run_record.utc_now()
    argv = [*evaluation, "--run-name", "alpha_beam"]
    metrics = {"gen_ppl": 2.718281, "distinct_2": 0.5}
    run_record.record_evaluation(workspace / "runs" / "alpha_beam", argv, metrics, started, started)
    text = report(workspace)
    threads = run_record.read_record(workspace / "runs" / "alpha_beam")["machine"]["torch_threads"]
    cells = ["2.7183", "0.5000", MISSING, MISSING, MISSING, "finished", f"CPU, {threads} threads"]
    assert row(text, "alpha_beam") == cells
    assert row(text, "alpha_greedy") == ["not run"] + [MISSING] * 6
    assert f"    {shlex.join(argv)}" in text  # the command, as run, in the section's list


def test_the_readme_block_gets_the_suite_tables_and_nothing_else_changes(workspace):
    comparison = yaml.safe_load((workspace / "comparisons" / "toy.yaml").read_text())
    (workspace / "comparisons" / "suite.yaml").write_text(yaml.safe_dump(comparison, sort_keys=False))
    make_run(workspace / "runs", "alpha", curve=[(10, 1.0, 3.0, 0.5)])
    before, after = "# Project\n\nIntro.\n\n", "\n## Next\n\nText.\n"
    readme = workspace / "README.md"
    readme.write_text(before + "<!-- suite-table:start -->\nold table\n<!-- suite-table:end -->" + after)
    assert main(["--runs", "runs", "--out", "results", "--comparisons", "comparisons", "--readme", "README.md"]) == 0
    text = readme.read_text()
    assert text.startswith(before) and text.endswith("<!-- suite-table:end -->" + after)
    assert "old table" not in text and "#### Main" in text
    assert row(text, "alpha") == row(report(workspace), "alpha")  # the same cells as RESULTS.md
    assert row(text, "beta")[0] == "not run"
    first = text
    report(workspace)
    assert readme.read_text() == first  # regenerating gives the same bytes


def test_a_readme_without_markers_is_left_alone(workspace):
    (workspace / "comparisons" / "suite.yaml").write_text((workspace / "comparisons" / "toy.yaml").read_text())
    readme = workspace / "README.md"
    readme.write_text("# Project\n")
    assert main(["--runs", "runs", "--out", "results", "--comparisons", "comparisons", "--readme", "README.md"]) == 0
    assert readme.read_text() == "# Project\n"


def _figure_comparison(workspace: Path) -> list[str]:
    draw = ["anyformer", "attention", "--ckpt", "runs/alpha/checkpoints/last.ckpt"]
    comparison = {
        "title": "Figures",
        "runs": [{"name": "alpha", "task": "gpt", "config": "exp.yaml"},
                 {"name": "attn_alpha", "command": shlex.join(draw), "after": ["alpha"]},
                 {"name": "attn_missing", "command": shlex.join(draw)}],
        "tables": [], "figures": ["attn_alpha", "attn_missing"],
    }  # fmt: skip
    (workspace / "comparisons" / "figs.yaml").write_text(yaml.safe_dump(comparison, sort_keys=False))
    return [*draw, "--run-name", "attn_alpha"]


def test_a_figure_run_is_copied_beside_the_results_with_its_command_and_stamp(workspace):
    argv = _figure_comparison(workspace)
    make_run(workspace / "runs", "alpha")
    started = run_record.utc_now()
    run_record.record_evaluation(workspace / "runs" / "attn_alpha", argv, {}, started, started)
    png = b"\x89PNG\r\n\x1a\n fake image bytes"
    (workspace / "runs" / "attn_alpha" / run_record.FIGURE_FILE).write_bytes(png)
    text = report(workspace)
    assert (workspace / "results" / "attn_alpha.png").read_bytes() == png
    section = text[text.index("## figs") :]
    assert f"attn_alpha: `{shlex.join(argv)}`" in section and "![attn_alpha](attn_alpha.png)" in section
    assert "Not drawn yet: not run." in section  # attn_missing
    assert not (workspace / "results" / "attn_missing.png").exists()
    assert report(workspace) == text  # rerun: same bytes

    assert (workspace / "results" / "runs" / "attn_alpha" / run_record.FIGURE_FILE).read_bytes() == png
    for folder in (workspace / "runs", workspace / "results" / "runs"):  # the run is no longer backed
        (folder / "attn_alpha" / "run.json").unlink()
    text = report(workspace)
    assert not (workspace / "results" / "attn_alpha.png").exists()
    assert "![attn_alpha]" not in text


def test_a_figure_must_be_an_attention_run_of_the_comparison(workspace):
    _figure_comparison(workspace)
    path = workspace / "comparisons" / "figs.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["figures"] = ["alpha"]  # a training run draws no figure
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["--runs", "runs", "--out", "results", "--comparisons", "comparisons"]) == 2


def test_dirty_and_stale_rows_are_marked_and_explained(workspace):
    files = {  # a gpt task as the registry names it, importing one module relatively and one lazily
        "core/code.py": "x = 1\n",
        "text/__init__.py": "",
        "text/gpt/__init__.py": "",
        "text/gpt/gpt_task.py": "from .model import GPT\n\ndef fit():\n    from anyformer.text.tokenizer import BPE\n",
        "text/gpt/data.py": "",
        "text/gpt/model.py": "GPT = 1\n",
        "text/tokenizer.py": "BPE = 1\n",
        "text/seq2seq_task.py": "x = 1\n",  # same domain, not imported by the gpt task
        "vision/__init__.py": "",
        "vision/code.py": "x = 1\n",
    }
    for name, text in files.items():
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_text(text)
    commit = commit_all("code", cwd=workspace)
    runs = workspace / "runs"
    make_run(runs, "alpha", git={"commit": commit, "dirty": True})
    make_run(runs, "beta", argv=fit_argv("beta", "--trainer.max_steps=7"), git={"commit": commit, "dirty": False})
    make_run(runs, "gamma", git={"commit": "e" * 40, "dirty": False})  # a commit this checkout lacks: not judged
    text = report(workspace)
    assert label(text, "alpha") == "alpha †" and label(text, "beta") == "beta" and label(text, "gamma") == "gamma"
    assert "† made from a working tree with uncommitted changes" in text and "(stale) code its" not in text

    for other in ("vision/code.py", "text/seq2seq_task.py"):  # another domain, another task of the same domain
        (workspace / other).write_text("x = 2\n")
        git("commit", "-q", "-am", other, cwd=workspace)
        assert "(stale) code its" not in report(workspace)
    for imported in ("text/gpt/model.py", "text/tokenizer.py"):  # imported by the gpt task: gpt runs are stale
        (workspace / imported).write_text("GPT = BPE = 2\n")
        git("commit", "-q", "-am", imported, cwd=workspace)
    text = report(workspace)
    assert label(text, "alpha") == "alpha † (stale)" and label(text, "beta") == "beta (stale)"
    assert label(text, "gamma") == "gamma"
    changed = "(`text/gpt/model.py`, `text/tokenizer.py`)"
    why = "(stale) code its task runs or its config (or those of a run it reads) changed in a commit made after"
    assert f"{why} the run's commit {changed}" in text
    (workspace / "core" / "code.py").write_text("x = 3\n")  # core: every task runs through it
    git("commit", "-q", "-am", "core", cwd=workspace)
    assert "(`core/` (1 file), `text/gpt/model.py`, `text/tokenizer.py`)" in report(workspace)
    assert report(workspace) == report(workspace)  # deterministic


def _seed_comparison(workspace: Path, **table) -> None:
    runs = [{"name": "alpha", "task": "gpt", "config": "exp.yaml", "group": "alpha_seeds"},
            {"name": "alpha_s1", "task": "gpt", "config": "exp.yaml", "group": "alpha_seeds",
             "overrides": ["--seed_everything=1"]},
            {"name": "alpha_s2", "task": "gpt", "config": "exp.yaml", "group": "alpha_seeds",
             "overrides": ["--seed_everything", "2"]},
            {"name": "beta", "task": "gpt", "config": "exp.yaml", "overrides": ["--trainer.max_steps=7"]}]  # fmt: skip
    comparison = {"title": "Seeds", "plot": "val_bpc", "runs": runs,
                  "tables": [{"title": "Main", "rows": ["alpha_seeds", "beta"], **table}]}  # fmt: skip
    (workspace / "comparisons" / "toy.yaml").write_text(yaml.safe_dump(comparison, sort_keys=False))


def test_runs_that_differ_only_by_seed_are_one_row_with_mean_std_and_n(workspace):
    _seed_comparison(workspace, columns=["val_bpc", "params", "wall_s", "device"])
    runs = workspace / "runs"
    make_run(runs, "alpha", metrics={"val_bpc": 2.0}, curve=[(10, 1.0, 3.0, 0.5)])
    make_run(runs, "alpha_s1", argv=fit_argv("alpha_s1", "--seed_everything=1"), metrics={"val_bpc": 2.2},
             wall_s=14.0, curve=[(10, 1.0, 3.1, 0.5)])  # fmt: skip
    make_run(runs, "alpha_s2", argv=fit_argv("alpha_s2", "--seed_everything", "2"), status="failed")
    text = report(workspace)
    assert row(text, "alpha_seeds") == ["2.1000 ± 0.1414 (2)", "1,234", "13 ± 1 (2)", "CPU, 2 threads"]
    assert row(text, "beta")[0] == "not run"
    per_seed = text.split("<details><summary>Per-seed rows</summary>", 1)[1].split("</details>", 1)[0]
    assert row(per_seed, "alpha") == ["2.0000", "1,234", "12", "CPU, 2 threads"]
    assert row(per_seed, "alpha_s2")[0] == "not finished (failed)" and "beta" not in per_seed
    assert (workspace / "results" / "toy.png").is_file()  # curves and the bars with their error bar
    assert report(workspace) == text


def test_a_seed_group_must_differ_only_by_seed(workspace):
    _seed_comparison(workspace, columns=["val_bpc"])
    path = workspace / "comparisons" / "toy.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["runs"][1]["overrides"].append("--model.optim.lr=0.1")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["--runs", "runs", "--out", "results", "--comparisons", "comparisons"]) == 2


def test_an_equal_time_table_reads_each_run_at_the_shortest_runs_last_validation(workspace):
    comparison = yaml.safe_load((workspace / "comparisons" / "toy.yaml").read_text())
    comparison["tables"] = [{"title": "Equal time", "rows": ["alpha", "beta"], "at_wall_s": "shortest",
                             "columns": ["val_bpc", "val_acc", "test_acc", "step", "wall_s", "params"]},
                            {"title": "At 15 s", "rows": ["alpha", "beta"], "at_wall_s": 15,
                             "columns": ["val_bpc", "step"]}]  # fmt: skip
    (workspace / "comparisons" / "toy.yaml").write_text(yaml.safe_dump(comparison, sort_keys=False))
    runs = workspace / "runs"
    make_run(runs, "alpha", curve=[(10, 10.0, 3.0, 0.5), (20, 20.0, 2.5, 0.6), (30, 30.0, 2.0, 0.7)],
             metrics={"val_bpc": 2.0, "test_acc": 0.9})  # fmt: skip
    make_run(
        runs, "beta", argv=fit_argv("beta", "--trainer.max_steps=7"), curve=[(5, 12.0, 3.5, 0.4), (10, 24.0, 3.2, 0.45)]
    )
    text = report(workspace)
    equal = text.split("### Equal time", 1)[1].split("###", 1)[0]
    assert row(equal, "alpha") == ["2.5000", "0.6000", MISSING, "20", "20", "1,234"]  # at wall_s 20 <= 24
    assert row(equal, "beta") == ["3.2000", "0.4500", MISSING, "10", "24", "1,234"]
    assert "wall_s ≤ 24 s (the shortest run's last validation)" in equal
    at_15 = text.split("### At 15 s", 1)[1]
    assert row(at_15, "alpha") == ["3.0000", "10"] and row(at_15, "beta") == ["3.5000", "5"]
    assert "wall_s ≤ 15 s (the table's budget)" in at_15


def test_summary_rows_give_the_mean_and_the_worst_of_each_metric(workspace):
    path = workspace / "comparisons" / "toy.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["tables"] = [{"title": "Folds", "columns": ["val_bpc", "params", "device"], "summary": ["mean", "worst"]}]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    runs = workspace / "runs"
    make_run(runs, "alpha", metrics={"val_bpc": 2.0})
    make_run(runs, "beta", argv=fit_argv("beta", "--trainer.max_steps=7"), metrics={"val_bpc": 3.0})
    text = report(workspace)
    assert "| **mean** | 2.5000 (2 of 3) | — | — |" in text  # gamma has not run: the count says so
    assert "| **worst** | 2.0000 (2 of 3) | — | — |" in text
    make_run(runs, "gamma", metrics={"val_bpc": 1.0})
    text = report(workspace)
    assert "| **mean** | 2.0000 | — | — |" in text and "| **worst** | 1.0000 | — | — |" in text
    raw["tables"][0]["summary"] = ["median"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["--runs", "runs", "--out", "results", "--comparisons", "comparisons"]) == 2


def test_a_max_gap_column_gives_each_rows_largest_relative_gap_from_the_reference_at_common_steps(workspace):
    path = workspace / "comparisons" / "toy.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["tables"] = [{"title": "Gap", "columns": ["val_bpc_max_gap", "step"], "reference": "alpha"}]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    runs = workspace / "runs"
    make_run(runs, "alpha", curve=[(10, 1.0, 2.0, 0.5), (20, 2.0, 2.5, 0.6), (30, 3.0, 2.2, 0.7)])
    # common steps 10 (|2.02 - 2.0| / 2.0 = 1%) and 20 (|2.6 - 2.5| / 2.5 = 4%); step 25 is beta's alone
    make_run(runs, "beta", argv=fit_argv("beta", "--trainer.max_steps=7"),
             curve=[(10, 1.0, 2.02, 0.5), (20, 2.0, 2.6, 0.6), (25, 2.5, 9.9, 0.6)])  # fmt: skip
    make_run(runs, "gamma", curve=[(5, 1.0, 2.0, 0.5), (15, 2.0, 2.5, 0.6)])  # no step in common with alpha
    text = report(workspace)
    assert row(text, "beta") == ["4.00%", "100"]
    assert row(text, "alpha") == [MISSING, "100"]  # the reference is the yardstick, not a 0.00% measurement
    assert row(text, "gamma") == [MISSING, "100"]
    assert "val_bpc_max_gap: the largest |m − m_ref| / |m_ref| over the validations logged at the same step" in text
    assert report(workspace) == text  # deterministic


def test_a_max_gap_of_seed_groups_compares_mean_curves_and_a_seed_with_the_reference_mean(workspace):
    _seed_comparison(workspace, columns=["val_bpc_max_gap"], reference="alpha_seeds")
    runs = workspace / "runs"
    make_run(runs, "alpha", curve=[(10, 1.0, 3.0, 0.5), (20, 2.0, 2.0, 0.5)])
    make_run(runs, "alpha_s1", argv=fit_argv("alpha_s1", "--seed_everything=1"),
             curve=[(10, 1.0, 3.2, 0.5), (20, 2.0, 2.2, 0.5), (30, 3.0, 1.0, 0.5)])  # fmt: skip
    make_run(runs, "alpha_s2", argv=fit_argv("alpha_s2", "--seed_everything", "2"), status="failed",
             curve=[(10, 1.0, 9.0, 0.5)])  # fmt: skip
    # the reference's mean curve: step 10 -> 3.1, step 20 -> 2.1 (step 30: alpha_s1's alone; failed runs out)
    make_run(runs, "beta", argv=fit_argv("beta", "--trainer.max_steps=7"),
             curve=[(10, 1.0, 3.255, 0.5), (20, 2.0, 2.52, 0.5), (30, 3.0, 5.0, 0.5)])  # fmt: skip
    text = report(workspace)
    assert row(text, "alpha_seeds") == [MISSING] and row(text, "beta") == ["20.00%"]  # max(5%, 20%)
    per_seed = text.split("<details><summary>Per-seed rows</summary>", 1)[1].split("</details>", 1)[0]
    assert row(per_seed, "alpha") == ["4.76%"] and row(per_seed, "alpha_s1") == ["4.76%"]  # 0.1 / 2.1
    assert row(per_seed, "alpha_s2") == ["not finished (failed)"]


def test_the_same_evaluation_of_each_seed_is_one_row_with_mean_std_and_n(workspace):
    _seed_comparison(workspace, columns=["val_bpc"])
    path = workspace / "comparisons" / "toy.yaml"
    raw = yaml.safe_load(path.read_text())
    for read in ("alpha", "alpha_s1"):
        command = f"anyformer decode-eval --ckpt runs/{read}/checkpoints/last.ckpt --strategy beam"
        raw["runs"].append({"name": f"{read}_beam", "command": command, "after": [read], "group": "beam_seeds"})
    raw["tables"].append({"title": "Beam", "rows": ["beam_seeds"], "columns": ["gen_ppl", "status"]})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    started = run_record.utc_now()
    for read, ppl in (("alpha", 2.0), ("alpha_s1", 4.0)):
        argv = ["anyformer", "decode-eval", "--ckpt", f"runs/{read}/checkpoints/last.ckpt", "--strategy", "beam"]
        folder = workspace / "runs" / f"{read}_beam"
        run_record.record_evaluation(folder, [*argv, "--run-name", f"{read}_beam"], {"gen_ppl": ppl}, started, started)
    beam = report(workspace).split("### Beam", 1)[1]
    assert row(beam, "beam_seeds") == ["3.0000 ± 1.4142 (2)", "finished"]  # std: the sample's, n - 1
    per_seed = beam.split("<summary>Per-seed rows</summary>", 1)[1]
    assert row(per_seed, "alpha_beam")[0] == "2.0000" and row(per_seed, "alpha_s1_beam")[0] == "4.0000"


def test_a_seed_group_with_one_finished_run_shows_its_number_without_a_spread(workspace):
    _seed_comparison(workspace, columns=["val_bpc", "wall_s"])
    make_run(workspace / "runs", "alpha", metrics={"val_bpc": 2.0})
    assert row(report(workspace), "alpha_seeds") == ["2.0000 (1)", "12"]  # a fact shared by the runs is shown once


def test_a_run_is_stale_once_a_later_commit_changes_the_settings_of_its_config(workspace):
    make_run(workspace / "runs", "alpha", git={"commit": commit_all("config", cwd=workspace), "dirty": False})
    (workspace / "exp.yaml").write_text("# a comment is no change\nseed_everything: 1\n")
    git("commit", "-q", "-am", "comment", cwd=workspace)
    assert label(report(workspace), "alpha") == "alpha"
    (workspace / "exp.yaml").write_text("seed_everything: 2\n")
    git("commit", "-q", "-am", "setting", cwd=workspace)
    text = report(workspace)
    assert label(text, "alpha") == "alpha (stale)" and "after the run's commit (`exp.yaml`)" in text


def test_a_table_listing_one_run_of_a_seed_group_names_the_run_not_the_group(workspace):
    _seed_comparison(workspace, columns=["val_bpc"])
    path = workspace / "comparisons" / "toy.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["tables"].append({"title": "One seed", "rows": ["alpha", "beta"], "columns": ["val_bpc"]})
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    make_run(workspace / "runs", "alpha", metrics={"val_bpc": 2.0})
    one_seed = report(workspace).split("### One seed", 1)[1]
    assert row(one_seed, "alpha") == ["2.0000"] and "alpha_seeds" not in one_seed


def _commit_comparison(workspace: Path, title: str, runs: list[dict]) -> dict:
    """Write a one-table comparison of these runs, commit the workspace, return run.json's ``git`` at it."""
    comparison = {"title": title, "runs": runs, "tables": [{"title": "Main", "columns": ["val_bpc"]}]}
    (workspace / "comparisons" / "toy.yaml").write_text(yaml.safe_dump(comparison, sort_keys=False))
    return {"commit": commit_all("configs", cwd=workspace), "dirty": False}


def test_a_run_that_reads_another_is_stale_when_that_one_is_or_was_rerun_after_it(workspace):
    """A DeiT student (``after: [teacher]``) learned from the teacher's checkpoint: the teacher's
    config changing makes both stale, and a rerun teacher leaves the student's numbers behind."""
    (workspace / "teacher.yaml").write_text("seed_everything: 1\n")
    runs = [{"name": "teacher", "task": "gpt", "config": "teacher.yaml"},
            {"name": "student", "task": "gpt", "config": "exp.yaml", "after": ["teacher"]}]  # fmt: skip
    at = _commit_comparison(workspace, "Distilled", runs)
    teacher_argv = ["anyformer", "gpt", "fit", "--config", "teacher.yaml", "--run-name", "teacher"]
    make_run(workspace / "runs", "teacher", argv=teacher_argv, config=["teacher.yaml"], git=at)
    make_run(workspace / "runs", "student", git=at, started="2026-11-23T11:00:00Z", ended="2026-11-23T12:00:00Z")
    text = report(workspace)
    assert label(text, "teacher") == "teacher" and label(text, "student") == "student"

    (workspace / "teacher.yaml").write_text("seed_everything: 2\n")
    git("commit", "-q", "-am", "teacher setting", cwd=workspace)
    text = report(workspace)
    assert label(text, "teacher") == "teacher (stale)" and label(text, "student") == "student (stale)"
    assert "after the run's commit (`teacher.yaml`)" in text

    at = {"commit": git("rev-parse", "HEAD", cwd=workspace), "dirty": False}  # the teacher reruns on it
    shutil.rmtree(workspace / "runs" / "teacher")
    make_run(workspace / "runs", "teacher", argv=teacher_argv, config=["teacher.yaml"], git=at,
             started="2026-11-23T13:00:00Z", ended="2026-11-23T14:00:00Z")  # fmt: skip
    text = report(workspace)
    assert label(text, "teacher") == "teacher" and label(text, "student") == "student (stale)"
    assert "(stale) a run it reads (teacher) was rerun after it started" in text
    assert "after the run's commit" not in text  # the student's own code and config are current


def test_a_rerun_two_reads_away_marks_the_whole_chain_stale(workspace):
    """preference_eval_dpo reads dpo_sst2, which reads gpt_sst2_policy: a rerun policy leaves the DPO model
    behind, and with it the evaluation of that model, though the evaluation does not read the policy."""
    runs = [{"name": "policy", "task": "gpt", "config": "exp.yaml"},
            {"name": "dpo", "task": "gpt", "config": "exp.yaml", "after": ["policy"]},
            {"name": "evaluation", "task": "gpt", "config": "exp.yaml", "after": ["dpo"]}]  # fmt: skip
    at = _commit_comparison(workspace, "Chain", runs)
    hours = {"policy": (10, 11), "dpo": (11, 12), "evaluation": (12, 13)}
    for name, (start, end) in hours.items():
        started, ended = f"2026-11-23T{start}:00:00Z", f"2026-11-23T{end}:00:00Z"
        make_run(workspace / "runs", name, git=at, started=started, ended=ended)
    text = report(workspace)
    assert [label(text, name) for name in hours] == ["policy", "dpo", "evaluation"]

    shutil.rmtree(workspace / "runs" / "policy")  # rerun after the evaluation ended
    make_run(workspace / "runs", "policy", git=at, started="2026-11-23T14:00:00Z", ended="2026-11-23T15:00:00Z")
    text = report(workspace)
    assert [label(text, name) for name in hours] == ["policy", "dpo (stale)", "evaluation (stale)"]
    assert "(stale) a run it reads (dpo → policy, policy) was rerun after it started (A → B:" in text

    shutil.rmtree(workspace / "runs" / "dpo")  # retrained on the new policy: only its evaluation is behind
    make_run(workspace / "runs", "dpo", git=at, started="2026-11-23T15:00:00Z", ended="2026-11-23T16:00:00Z")
    text = report(workspace)
    assert [label(text, name) for name in hours] == ["policy", "dpo", "evaluation (stale)"]
    assert "(stale) a run it reads (dpo) was rerun after it started:" in text
