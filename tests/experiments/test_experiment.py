"""anyformer experiment: the plan (run / resume / skip) and a real two-run comparison end to end."""

import math
from pathlib import Path

import pytest
import yaml

from anyformer.core.cli.errors import UsageError
from anyformer.core.train.run_record import read_record, write_record
from anyformer.experiments import report
from anyformer.experiments import runner as experiment
from anyformer.experiments.comparison import load_comparison
from tests.helpers import commit_all, git, read_metrics


def _comparison(root: Path, runs: list[dict], **extra) -> Path:
    """comparisons/toy.yaml of these runs in ``root``, beside the config a.yaml that they all train."""
    (root / "a.yaml").write_text("seed_everything: 1\n")
    (root / "comparisons").mkdir(exist_ok=True)
    path = root / "comparisons" / "toy.yaml"
    tables = [{"title": "Toy table", "columns": ["val_loss", "val_bpc", "params", "step"]}]
    path.write_text(yaml.safe_dump({"title": "Toy", "runs": runs, "tables": tables} | extra, sort_keys=False))
    return path


@pytest.fixture
def planned(tmp_path, monkeypatch):
    """Two declared runs (the second tested after its fit) in an empty repository-like folder."""
    monkeypatch.chdir(tmp_path)
    runs = [{"name": "one", "task": "gpt", "config": "a.yaml"},
            {"name": "two", "task": "vit", "config": "a.yaml", "overrides": ["--x=1"], "then": ["test"]}]  # fmt: skip
    setup = [{"command": "anyformer collect --out data.npz", "creates": "data.npz"}]
    return load_comparison(_comparison(tmp_path, runs, setup=setup))


def _record(spec, **fields) -> None:
    record = {"format": 1, "argv": spec.argv(), "status": "finished", "started": "2026-01-01T00:00:00Z",
              "ended": "2026-01-01T01:00:00Z", "metrics": {}} | fields  # fmt: skip
    write_record(Path("runs") / spec.name, record)


def _checkpoint(spec) -> None:
    spec.checkpoint().parent.mkdir(parents=True, exist_ok=True)
    spec.checkpoint().write_bytes(b"weights")


def _actions(comparison, **kwargs) -> list[tuple[str, str]]:
    return [(step.label, step.action) for step in experiment.plan(comparison, Path("runs"), **kwargs)]


def test_fresh_runs_run_and_setup_runs_until_its_file_exists(planned):
    assert _actions(planned) == [("setup", "run"), ("one", "run"), ("two", "run"), ("two test", "run")]
    Path("data.npz").write_bytes(b"")
    assert _actions(planned)[0] == ("setup", "skip")


def test_finished_runs_are_skipped_unfinished_ones_with_a_checkpoint_resume(planned):
    one, two = planned.runs
    _record(one)
    _record(two, status="failed")
    _checkpoint(two)
    steps = experiment.plan(planned, Path("runs"))
    assert [(s.label, s.action) for s in steps[1:]] == [("one", "skip"), ("two", "resume"), ("two test", "run")]
    assert steps[2].argv == [*two.fit_argv(), "--ckpt_path", "last"]
    assert steps[3].argv[-2:] == ["--ckpt_path", "runs/two/checkpoints/last.ckpt"]


def test_test_step_reruns_only_when_the_fit_is_newer_than_the_last_test(planned):
    two = planned.runs[1]
    _record(two, test={"ended": "2026-01-01T02:00:00Z"})
    assert _actions(planned, only=["two"]) == [("setup", "run"), ("two", "skip"), ("two test", "skip")]
    _record(two, test={"ended": "2025-12-31T00:00:00Z"})
    assert _actions(planned, only=["two"])[-1] == ("two test", "run")


def test_a_folder_of_another_command_or_without_record_is_refused(planned):
    one, two = planned.runs
    _record(one, argv=[*one.fit_argv(), "--x=2"])
    with pytest.raises(UsageError, match=r"runs/one holds a run made by .* not by this comparison.s"):
        experiment.plan(planned, Path("runs"))
    _checkpoint(two)
    with pytest.raises(UsageError, match=r"runs/two has a last\.ckpt but no run\.json"):
        experiment.plan(planned, Path("runs"), only=["two"])
    with pytest.raises(UsageError, match="has no run 'three'"):
        experiment.plan(planned, Path("runs"), only=["three"])


def test_dry_run_prints_the_commands_and_runs_nothing(planned, capsys, monkeypatch):
    monkeypatch.setattr(experiment, "execute", lambda step: pytest.fail(f"ran {step.argv}"))
    assert experiment.main(["toy", "--comparisons", "comparisons", "--dry-run", "--only", "one"]) == 0
    out = capsys.readouterr().out
    assert "anyformer gpt fit --config a.yaml --run-name one" in out and "run-name two" not in out


def test_unknown_comparison_is_a_usage_error(planned, capsys):
    assert experiment.main(["nope", "--comparisons", "comparisons"]) == 2
    assert "no comparison 'nope'" in capsys.readouterr().err


@pytest.fixture
def evaluated(tmp_path, monkeypatch):
    """A fit and two evaluation runs after it (the second also after the first)."""
    monkeypatch.chdir(tmp_path)
    runs = [{"name": "fit", "task": "gpt", "config": "a.yaml"},
            {"name": "greedy", "command": "anyformer decode-eval --ckpt runs/fit/checkpoints/last.ckpt",
             "after": ["fit"]},
            {"name": "beam", "command": "anyformer decode-eval --ckpt runs/fit/checkpoints/last.ckpt --strategy beam",
             "after": ["fit", "greedy"]}]  # fmt: skip
    return load_comparison(_comparison(tmp_path, runs))


def test_evaluation_runs_run_their_command_after_the_runs_they_read(evaluated):
    greedy = evaluated.runs[1]
    steps = experiment.plan(evaluated, Path("runs"))
    assert [(s.label, s.action, s.reason) for s in steps] == [
        ("fit", "run", "not run yet"), ("greedy", "run", "after fit"), ("beam", "run", "after fit, greedy")
    ]  # fmt: skip
    assert steps[1].argv == [*greedy.command, "--run-name", "greedy"] and steps[2].needs == ("fit", "greedy")


def test_finished_evaluations_are_skipped_until_a_run_they_read_is_newer(evaluated):
    fit, greedy, beam = evaluated.runs
    _record(fit)  # ended 01:00
    _record(greedy, started="2026-01-01T02:00:00Z", ended="2026-01-01T02:01:00Z")
    _record(beam, started="2026-01-01T02:02:00Z", ended="2026-01-01T02:03:00Z")
    assert _actions(evaluated) == [("fit", "skip"), ("greedy", "skip"), ("beam", "skip")]
    _record(fit, ended="2026-01-01T02:01:30Z")  # retrained after greedy was scored, before beam
    steps = experiment.plan(evaluated, Path("runs"))
    assert [(s.label, s.action, s.reason) for s in steps] == [
        ("fit", "skip", "finished 2026-01-01T02:01:30Z"), ("greedy", "run", "after fit"),
        ("beam", "run", "after greedy"),
    ]  # fmt: skip


def test_an_evaluation_folder_of_another_command_is_refused(evaluated):
    fit, greedy, _ = evaluated.runs
    _record(greedy, argv=[*greedy.argv(), "--seed", "1"])
    with pytest.raises(UsageError, match=r"runs/greedy holds a run made by .*--seed 1`, not by this comparison"):
        experiment.plan(evaluated, Path("runs"))
    _record(greedy, argv=fit.argv())
    with pytest.raises(UsageError, match=r"runs/greedy holds a run made by `anyformer gpt fit"):
        experiment.plan(evaluated, Path("runs"))


def test_only_an_evaluation_needs_its_runs_finished_and_keeps_the_declared_order(evaluated):
    fit = evaluated.runs[0]
    with pytest.raises(UsageError, match=r"greedy runs after fit, which has not finished .*add --only fit"):
        experiment.plan(evaluated, Path("runs"), only=["greedy"])
    assert _actions(evaluated, only=["greedy", "fit"]) == [("fit", "run"), ("greedy", "run")]
    _record(fit)
    assert _actions(evaluated, only=["greedy"]) == [("greedy", "run")]


def test_an_evaluation_does_not_start_when_a_run_it_reads_did_not_finish(evaluated, capsys, monkeypatch):
    fit, _, _ = evaluated.runs
    ran = []

    def fit_stops_early(step):  # the fit exits 0 but ends early (status stopped): nothing to evaluate
        ran.append(step.label)
        _record(fit, status="stopped")
        return 0

    monkeypatch.setattr(experiment, "execute", fit_stops_early)
    assert experiment.main(["toy", "--comparisons", "comparisons"]) == 1
    assert ran == ["fit"] and "greedy needs fit finished first" in capsys.readouterr().err


@pytest.fixture
def distilled(tmp_path, monkeypatch):
    """A teacher fit and a student fit that reads the teacher's checkpoint (``after``), tested."""
    monkeypatch.chdir(tmp_path)
    runs = [{"name": "teacher", "task": "vision-cnn", "config": "a.yaml"},
            {"name": "student", "task": "vit", "config": "a.yaml", "then": ["test"], "after": ["teacher"]}]  # fmt: skip
    return load_comparison(_comparison(tmp_path, runs))


def test_a_fit_waits_for_the_runs_it_reads_and_starts_over_when_one_is_newer(distilled):
    teacher, student = distilled.runs
    steps = experiment.plan(distilled, Path("runs"))
    assert [(s.label, s.action) for s in steps] == [("teacher", "run"), ("student", "run"), ("student test", "run")]
    assert steps[1].needs == ("teacher",) and experiment._prerequisites(steps[1], steps) == ("teacher",)
    _record(teacher)  # ended 01:00
    _record(
        student, started="2026-01-01T02:00:00Z", ended="2026-01-01T03:00:00Z", test={"ended": "2026-01-01T03:01:00Z"}
    )
    assert _actions(distilled) == [("teacher", "skip"), ("student", "skip"), ("student test", "skip")]
    _record(teacher, ended="2026-01-01T04:00:00Z")  # the teacher was retrained after the student learned from it
    steps = experiment.plan(distilled, Path("runs"))
    assert [(s.label, s.action, s.reason) for s in steps] == [
        ("teacher", "skip", "finished 2026-01-01T04:00:00Z"), ("student", "rerun", "after teacher"),
        ("student test", "run", "after the fit"),
    ]  # fmt: skip
    assert steps[1].argv == student.fit_argv() and steps[1].replaces == Path("runs/student")  # from scratch


def test_an_interrupted_fit_is_not_resumed_on_a_newer_version_of_what_it_reads(distilled):
    teacher, student = distilled.runs
    _record(teacher)
    _record(student, status="interrupted", started="2026-01-01T02:00:00Z", ended="2026-01-01T02:30:00Z")
    _checkpoint(student)
    assert _actions(distilled) == [("teacher", "skip"), ("student", "resume"), ("student test", "run")]
    _record(teacher, status="failed")
    _checkpoint(teacher)  # the teacher resumes now: the student must learn from its finished version
    assert _actions(distilled)[:2] == [("teacher", "resume"), ("student", "rerun")]


def test_only_a_fit_needs_the_runs_it_reads_finished(distilled):
    with pytest.raises(UsageError, match=r"student runs after teacher, which has not finished .*add --only teacher"):
        experiment.plan(distilled, Path("runs"), only=["student"])
    _record(distilled.runs[0])
    assert _actions(distilled, only=["student"]) == [("student", "run"), ("student test", "run")]


def _tiny_config(path: Path, corpus: Path, model: dict) -> str:
    path.write_text(yaml.safe_dump({
        "seed_everything": 1,
        "trainer": {"max_steps": 6, "val_check_interval": 3, "limit_val_batches": 1, "log_every_n_steps": 1,
                    "accelerator": "cpu", "enable_progress_bar": False},
        "model": {"config": model},
        "data": {"source": str(corpus), "tokenizer": "char", "context_len": 16, "batch_size": 4,
                 "train_batches_per_epoch": 100, "val_batches": 1},
    }))  # fmt: skip
    return path.name


def test_two_run_comparison_end_to_end_then_skip_then_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question. " * 60)
    runs = [
        {"name": "gpt_tiny", "task": "gpt",
         "config": _tiny_config(tmp_path / "gpt.yaml", corpus, {"transformer": {"dim": 16, "n_layers": 1}})},
        {"name": "lstm_tiny", "task": "lstm", "config": _tiny_config(tmp_path / "lstm.yaml", corpus, {"dim": 16}),
         "overrides": ["--model.config.n_layers=1"]},
        {"name": "gpt_tiny_greedy", "after": ["gpt_tiny"],
         "command": "anyformer decode-eval --ckpt runs/gpt_tiny/checkpoints/last.ckpt --prompts 2 --prompt-tokens 4 "
                    "--new-tokens 8"},
    ]  # fmt: skip
    tables = [{"title": "Toy table", "columns": ["val_loss", "val_bpc", "params", "step", "gen_ppl"]}]
    _comparison(tmp_path, runs, tables=tables)
    assert experiment.main(["toy", "--comparisons", "comparisons"]) == 0

    for name in ("gpt_tiny", "lstm_tiny"):
        record = read_record(tmp_path / "runs" / name)
        logged = read_metrics(tmp_path / "runs" / name / "metrics.csv")
        assert record["status"] == "finished" and record["step"] == 6
        assert record["metrics"]["val_loss"] == pytest.approx(logged["val_loss"][-1])
        assert record["wall_s"] >= logged["wall_s"][-1] > 0
        hparams = yaml.safe_load((tmp_path / "runs" / name / "hparams.yaml").read_text())
        assert record["params"] == hparams["n_parameters"]  # the model's own count, logged at fit start
    assert read_record(tmp_path / "runs" / "lstm_tiny")["argv"][-1] == "--model.config.n_layers=1"
    evaluation = read_record(tmp_path / "runs" / "gpt_tiny_greedy")  # written by the tool in its child Python
    assert evaluation["argv"][-2:] == ["--run-name", "gpt_tiny_greedy"] and evaluation["metrics"]["gen_ppl"] > 1

    runs_made = ("gpt_tiny", "lstm_tiny", "gpt_tiny_greedy")
    before = {name: (tmp_path / "runs" / name / "run.json").read_bytes() for name in runs_made}
    capsys.readouterr()
    assert experiment.main(["toy", "--comparisons", "comparisons"]) == 0  # everything finished: nothing runs
    assert capsys.readouterr().out.count("skip ") == 3
    assert {name: (tmp_path / "runs" / name / "run.json").read_bytes() for name in before} == before

    assert report.main(["--comparisons", "comparisons", "--out", "results"]) == 0
    # A run made from a checkout with uncommitted changes is marked "name †"; this test may run in one.
    text = (tmp_path / "results" / "RESULTS.md").read_text().replace(" †", "")
    for name in ("gpt_tiny", "lstm_tiny"):
        bpc = read_metrics(tmp_path / "runs" / name / "metrics.csv")["val_bpc"][-1]
        assert f"| {name} | " in text and f" {bpc:.4f} " in text
        assert math.isfinite(bpc)
    assert f"| gpt_tiny_greedy | — | — | — | — | {evaluation['metrics']['gen_ppl']:.4f} |" in text
    assert (tmp_path / "results" / "toy.png").is_file()


def test_setup_gets_the_folder_of_the_file_it_creates(tmp_path, monkeypatch):
    """`anyformer collect` refuses a missing output folder; on a fresh clone `data/` is one."""
    monkeypatch.chdir(tmp_path)
    setup = [{"command": "anyformer collect --out data/sub/set.npz", "creates": "data/sub/set.npz"}]
    _comparison(tmp_path, [{"name": "one", "task": "gpt", "config": "a.yaml"}], setup=setup)
    ran = []

    def execute(step):
        if step.label != "setup":
            return 1  # stop after the setup: only it is under test
        assert Path("data/sub").is_dir()  # made before the tool runs
        Path("data/sub/set.npz").write_bytes(b"x")
        ran.append(step.label)
        return 0

    monkeypatch.setattr(experiment, "execute", execute)
    assert experiment.main(["toy", "--comparisons", "comparisons"]) == 1
    assert ran == ["setup"]


def _commit_code(*changed: str) -> str:
    """Write (or rewrite) these files of the current folder, commit everything, return the commit."""
    for name in changed:
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        before = Path(name).read_text() if Path(name).exists() else ""
        Path(name).write_text(before + "x = 1\n")  # a new line each time: always a change
    return commit_all("code")


# the code of task gpt (its module and the packages' __init__), of the tool decode-eval, and of another task
GPT_CODE = ("text/__init__.py", "text/gpt/__init__.py", "text/gpt/gpt_task.py")
DECODE_EVAL_CODE = "text/gpt/decode_eval.py"


def test_resuming_is_refused_once_a_later_commit_changed_the_code_of_the_runs_task(planned):
    """A resumed fit records its last leg's commit: finishing it on changed code would hide the mix."""
    commit = _commit_code(*GPT_CODE, "vision/__init__.py")
    one = planned.runs[0]  # task gpt
    _record(one, status="running", git={"commit": commit, "dirty": False})
    _checkpoint(one)
    _commit_code("vision/__init__.py")  # another task's code: resuming is fine
    assert _actions(planned, only=["one"])[-1] == ("one", "resume")
    _commit_code("text/gpt/gpt_task.py")
    with pytest.raises(UsageError, match=r"runs/one was interrupted at commit \w{10}, .* \(`text/gpt/gpt_task\.py`\)"):
        experiment.plan(planned, Path("runs"), only=["one"])
    # asked to, it starts the run over instead
    assert _actions(planned, only=["one"], rerun_stale=True)[-1] == ("one", "rerun")


def test_a_stale_finished_run_is_skipped_with_its_changes_named_and_rerun_from_scratch_on_request(planned):
    commit = _commit_code(*GPT_CODE, "vision/__init__.py")
    one, two = planned.runs  # tasks gpt and vit
    _record(one, git={"commit": commit, "dirty": False})
    _record(two, git={"commit": commit, "dirty": False}, test={"ended": "2026-01-01T02:00:00Z"})
    Path("data.npz").write_bytes(b"")
    assert _actions(planned, rerun_stale=True)[1:] == [("one", "skip"), ("two", "skip"), ("two test", "skip")]
    _commit_code("text/gpt/gpt_task.py")
    steps = experiment.plan(planned, Path("runs"))
    assert [(s.label, s.action) for s in steps[1:]] == [("one", "skip"), ("two", "skip"), ("two test", "skip")]
    assert steps[1].reason == (
        "finished 2026-01-01T01:00:00Z; stale: `text/gpt/gpt_task.py` changed since it ran, --rerun-stale reruns it"
    )
    steps = experiment.plan(planned, Path("runs"), rerun_stale=True)
    assert [(s.label, s.action) for s in steps[1:]] == [("one", "rerun"), ("two", "skip"), ("two test", "skip")]
    assert steps[1].argv == one.fit_argv() and steps[1].replaces == Path("runs/one")  # from scratch: no --ckpt_path


def test_a_rerun_keeps_the_stale_folder_aside_until_the_next_rerun(planned, monkeypatch, capsys):
    commit = _commit_code(*GPT_CODE)
    one = planned.runs[0]
    _record(one, git={"commit": commit, "dirty": False}, metrics={"val_loss": 1.0})
    _checkpoint(one)
    _commit_code("text/gpt/gpt_task.py")
    seen = []

    def execute(step):  # the fit sees an empty folder, then writes its new record
        seen.append((step.label, Path("runs/one").exists()))
        _record(one, git={"commit": git("rev-parse", "HEAD"), "dirty": False}, metrics={"val_loss": 2.0})
        return 0

    monkeypatch.setattr(experiment, "execute", execute)
    Path("data.npz").write_bytes(b"")
    args = ["toy", "--comparisons", "comparisons", "--only", "one", "--rerun-stale"]
    assert experiment.main(args) == 0
    assert seen == [("one", False)]
    assert read_record(Path("runs/.stale/one"))["metrics"] == {"val_loss": 1.0}
    assert Path("runs/.stale/one/checkpoints/last.ckpt").read_bytes() == b"weights"
    assert read_record(Path("runs/one"))["metrics"] == {"val_loss": 2.0}
    assert "moved the stale runs/one to runs/.stale/one" in capsys.readouterr().out
    assert experiment.main(args) == 0 and seen == [("one", False)]  # current now: skipped
    _commit_code("text/gpt/gpt_task.py")
    assert experiment.main(args) == 0 and seen == [("one", False)] * 2
    assert read_record(Path("runs/.stale/one"))["metrics"] == {"val_loss": 2.0}  # only the last stale version


def test_an_evaluation_is_stale_when_its_tool_changed_or_the_code_of_the_runs_it_reads(evaluated):
    commit = _commit_code(*GPT_CODE, DECODE_EVAL_CODE)
    fit, greedy, beam = evaluated.runs
    at = {"git": {"commit": commit, "dirty": False}}
    _record(fit, task="gpt", **at)
    _record(greedy, task="decode-eval", started="2026-01-01T02:00:00Z", ended="2026-01-01T02:01:00Z", **at)
    _record(beam, task="decode-eval", started="2026-01-01T02:02:00Z", ended="2026-01-01T02:03:00Z", **at)
    _commit_code(DECODE_EVAL_CODE)  # the tool: the fit is current, its evaluations are not
    steps = experiment.plan(evaluated, Path("runs"))
    assert [(s.action, "stale: `text/gpt/decode_eval.py`" in s.reason) for s in steps] == [
        ("skip", False), ("skip", True), ("skip", True)
    ]  # fmt: skip
    steps = experiment.plan(evaluated, Path("runs"), rerun_stale=True)
    assert [(s.label, s.action) for s in steps] == [("fit", "skip"), ("greedy", "rerun"), ("beam", "run")]
    assert steps[2].reason == "after greedy"  # it reads greedy, which runs again
    _commit_code("text/gpt/gpt_task.py")  # the task of the run they read: everything runs again
    assert _actions(evaluated, rerun_stale=True) == [("fit", "rerun"), ("greedy", "run"), ("beam", "run")]


def _fake_start(events: Path, fail: str = ""):
    """``runner.start`` replaced by a child that logs when it starts and ends (and fails for ``fail``).

    With ``fail``, every other child outlives the failing one by half a second (it waits for its end in
    the log) so the runner has seen the failure before anything else ends, however loaded the machine.
    """
    import subprocess
    import sys

    def start(step, log):
        log.parent.mkdir(parents=True, exist_ok=True)
        code = (
            "import pathlib, sys, time; events, label, fail = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
            "log = events.open('a'); log.write(f'start {label} {time.monotonic()}\\n'); log.flush()\n"
            "time.sleep(0.4)\n"
            "if fail and label != fail:\n"
            "    deadline = time.monotonic() + 30\n"
            "    while f'end {fail} ' not in events.read_text() and time.monotonic() < deadline: time.sleep(0.02)\n"
            "    time.sleep(0.5)\n"
            "log.write(f'end {label} {time.monotonic()}\\n'); sys.exit(3 if label == fail else 0)\n"
        )
        return subprocess.Popen([sys.executable, "-c", code, str(events), step.label, fail])

    return start


def _intervals(events: Path) -> dict[str, tuple[float, float]]:
    times: dict[str, dict[str, float]] = {}
    for line in events.read_text().splitlines():
        kind, *label, at = line.split()
        times.setdefault(" ".join(label), {})[kind] = float(at)
    return {label: (t["start"], t["end"]) for label, t in times.items()}


@pytest.fixture
def parallel(tmp_path, monkeypatch):
    """Two fits (the second tested), an evaluation of the first; children faked, polled every 20 ms."""
    monkeypatch.chdir(tmp_path)
    runs = [{"name": "one", "task": "gpt", "config": "a.yaml"},
            {"name": "two", "task": "vit", "config": "a.yaml", "then": ["test"]},
            {"name": "greedy", "command": "anyformer decode-eval --ckpt runs/one/checkpoints/last.ckpt",
             "after": ["one"]}]  # fmt: skip
    _comparison(tmp_path, runs)
    monkeypatch.setattr(experiment, "POLL_S", 0.02)
    monkeypatch.setattr(experiment, "_needs_finished", lambda step: True)  # the fake fits write no run.json
    monkeypatch.setattr(experiment, "execute", lambda step: pytest.fail(f"ran {step.argv} in the foreground"))
    return tmp_path / "events.txt"


def test_jobs_runs_independent_runs_at_once_and_each_after_what_it_reads(parallel, monkeypatch, capsys):
    monkeypatch.setattr(experiment, "start", _fake_start(parallel))
    assert experiment.main(["toy", "--comparisons", "comparisons", "--jobs", "2"]) == 0
    ran = _intervals(parallel)
    assert set(ran) == {"one", "two", "two test", "greedy"}
    (one_start, one_end), (two_start, two_end) = ran["one"], ran["two"]
    assert one_start < two_end and two_start < one_end  # the two fits ran side by side
    assert ran["greedy"][0] >= one_end and ran["two test"][0] >= two_end  # each after what it reads
    assert "output in runs/two/experiment-test.log" in capsys.readouterr().out


def test_jobs_stops_starting_after_a_failure_and_never_starts_what_reads_it(parallel, monkeypatch, capsys):
    monkeypatch.setattr(experiment, "start", _fake_start(parallel, fail="one"))
    assert experiment.main(["toy", "--comparisons", "comparisons", "--jobs", "2"]) == 1
    ran = _intervals(parallel)
    assert set(ran) == {"one", "two"}  # started together; after one failed nothing new started
    err = capsys.readouterr().err
    assert "one failed (exit 3), see runs/one/experiment.log" in err
    assert "failed: one; not started: two test, greedy; rerun to resume" in err
