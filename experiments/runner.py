"""``anyformer experiment NAME``: run every run of a comparison, skipping what is already done.

Each run is a subprocess ``anyformer <task> fit --config ... --run-name <name> [overrides]`` (an
evaluation run: ``<command> --run-name <name>``), so a crash in one run cannot leave state behind
in the next, and each writes ``runs/<name>/run.json``. A run whose record says ``finished`` is
skipped; one with a ``last.ckpt`` but no finished record resumes (``--ckpt_path last``); a
``then: [test]`` step reruns only if the fit is newer than its last test, an evaluation only if one
of its ``after`` runs is newer than it or runs again now; a fit with ``after`` runs (a DeiT student
reading its teacher) starts over in that case. Rerunning the same command after an
interruption therefore continues where it stopped, unless a later commit changed the code the
run's task runs (then resuming is refused: one run, one version of the code). A finished run whose
code or config changed since its commit (what ``anyformer report`` marks stale) is still skipped, and
the plan says so; ``--rerun-stale`` reruns it, and an interrupted one from scratch, after moving its
old folder to ``runs/.stale/<name>/`` (the previous one there is replaced). A run whose folder
another process holds (its lock, :mod:`anyformer.core.train.run_lock`: a fit still running) is
reported and left alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from anyformer.core.cli.errors import ArgumentParser, UsageError, positive_int, reports_usage_errors
from anyformer.core.train import run_lock, run_record
from anyformer.core.train.run_record import command_line, same_command
from anyformer.experiments.budget import ran_its_course
from anyformer.experiments.comparison import (
    COMPARISONS_DIR,
    Comparison,
    EvalSpec,
    RunSpec,
    comparison_path,
    load_comparison,
)
from anyformer.experiments.report_git import Git, code_paths, describe_changes

RUNS_DIR = Path("runs")  # where `anyformer <task> fit` writes, relative to the current folder
STALE_DIR = ".stale"
"""Folder of ``runs/`` where ``--rerun-stale`` keeps the last stale version of each run it reran."""
POLL_S = 1.0
"""How often ``--jobs`` looks at its running children."""


@dataclass(frozen=True)
class Step:
    """One command of the plan and what to do with it."""

    label: str
    argv: list[str]
    action: str
    """``run``, ``resume``, ``skip``, ``rerun`` (a stale run, started over), or ``locked`` (another
    process is writing the run: left alone)."""
    reason: str
    creates: str | None = None
    """For a setup step, the file it must create."""
    needs: tuple[str, ...] = ()
    """Runs that must have finished before this step runs (a run's ``after``)."""
    replaces: Path | None = None
    """For a ``rerun`` step, the stale run's folder, moved to ``runs/.stale/`` when the step starts."""

    @property
    def executes(self) -> bool:
        """Whether running the plan starts this step (``run``, ``resume``, ``rerun``)."""
        return self.action in ("run", "resume", "rerun")


def _own_record(run_dir: Path, planned: list[str]) -> dict | None:
    """The record in ``run_dir``, refused if another command made it."""
    record = run_record.read_record(run_dir)
    if record is not None and record.get("argv") and not same_command(record["argv"], planned):
        raise UsageError(
            f"{run_dir} holds a run made by `{command_line(record['argv'])}`, not by this "
            f"comparison's `{command_line(planned)}`; delete that folder or give the run another name"
        )
    return record


def _finished(runs_dir: Path, name: str) -> dict | None:
    """The run's record if it ran its course (finished, or ended by its wall-clock budget), else None."""
    record = run_record.read_record(runs_dir / name)
    return record if ran_its_course(record) else None


def _locked(run_dir: Path, label: str, argv: list[str], needs: tuple[str, ...] = ()) -> Step | None:
    """A ``locked`` step when another live process holds ``run_dir``, else None."""
    holder = run_lock.holder_of(run_dir)
    if holder is None:
        return None
    return Step(label, argv, "locked", f"in use by {run_lock.describe_holder(holder)}", needs=needs)


def _fit_step(spec: RunSpec, runs_dir: Path, planned_steps: dict[str, Step], rerun_stale: bool) -> Step:
    planned = spec.fit_argv()
    run_dir = runs_dir / spec.name
    if locked := _locked(run_dir, spec.name, planned, spec.after):
        return locked
    record = _own_record(run_dir, planned)
    newer, read = _read_runs(spec, runs_dir, planned_steps, record)
    finished = ran_its_course(record)
    if not finished and not spec.checkpoint(runs_dir).is_file():
        reason = "not run yet" if record is None else f"status {record['status']}"
        return Step(spec.name, planned, "run", reason, needs=spec.after)
    if record is None:  # every fit writes run.json before its first checkpoint
        raise UsageError(
            f"{run_dir} has a last.ckpt but no run.json (made before run records existed, or "
            "by hand), so its command and code version are unknown; move that folder away to rerun the run"
        )
    if newer:  # it read an older version of them (a teacher since rerun): neither a result nor resumable
        return Step(spec.name, planned, "rerun", f"after {', '.join(newer)}", needs=spec.after, replaces=run_dir)
    changed = _changes_since(record, (spec.task, *read))
    if changed and rerun_stale:
        return Step(spec.name, planned, "rerun", _stale_reason(changed), needs=spec.after, replaces=run_dir)
    if finished:
        return Step(spec.name, planned, "skip", _finished_reason(record, changed), needs=spec.after)
    if changed:  # a resumed fit records the commit of its last leg: finishing it on newer code would hide the mix
        commit = record["git"]["commit"]
        raise UsageError(
            f"{run_dir} was interrupted at commit {commit[:10]}, and its code or config changed since "
            f"({describe_changes(changed)}): resuming would train one run with two versions of the code; "
            f"pass --rerun-stale (or delete {run_dir}) to start it over, or finish it from a checkout of {commit[:10]}"
        )
    return Step(spec.name, [*planned, "--ckpt_path", "last"], "resume", f"status {record['status']}", needs=spec.after)


def _read_runs(
    spec: RunSpec | EvalSpec, runs_dir: Path, planned_steps: dict[str, Step], record: dict | None
) -> tuple[list[str], list[str]]:
    """The ``after`` runs that make ``spec``'s record out of date (they run now, or ended after it
    started), and the tasks of those that finished (their code is part of what ``spec`` computes).

    ``planned_steps`` are the earlier steps of this plan by label; an ``after`` run outside the plan
    (``--only``) must already have finished.
    """
    newer, read = [], []
    for name in spec.after:
        step = planned_steps.get(name)
        before = _finished(runs_dir, name)
        if step is None and before is None:
            raise UsageError(
                f"{spec.name} runs after {name}, which has not finished and is not in this plan; "
                f"run it first (add --only {name})"
            )
        runs_now = step is not None and step.action != "skip"
        if runs_now or (before is not None and record is not None and before["ended"] > record["started"]):
            newer.append(name)
        read += [str(before.get("task"))] if before else []
    return newer, read


def _changes_since(record: dict, tasks: tuple[str, ...]) -> tuple[str, ...]:
    """The files of ``tasks``' code and the run's config that commits after the run's own changed
    (:meth:`Git.stale`, the report's stale mark); empty outside git or for a current run."""
    git = Git.of(Path.cwd())
    return () if git is None else git.stale(record, code_paths(*tasks, root=git.root))


def _stale_reason(changed: tuple[str, ...]) -> str:
    return f"stale: {describe_changes(changed)} changed since it ran"


def _finished_reason(record: dict, changed: tuple[str, ...]) -> str:
    stale = f"; {_stale_reason(changed)}, --rerun-stale reruns it" if changed else ""
    ended = "finished" if record.get("status") == "finished" else "ended by its max_time"
    return f"{ended} {record['ended']}{stale}"


def _test_step(spec: RunSpec, fit: Step, runs_dir: Path) -> Step:
    if fit.action == "locked":
        return Step(f"{spec.name} test", spec.test_argv(), "locked", fit.reason)
    record = run_record.read_record(runs_dir / spec.name) if fit.action == "skip" else None
    tested = record is not None and "test" in record and record["test"]["ended"] >= record["ended"]
    if tested:
        return Step(f"{spec.name} test", spec.test_argv(), "skip", f"tested {record['test']['ended']}")
    return Step(f"{spec.name} test", spec.test_argv(), "run", "after the fit")


def _eval_step(spec: EvalSpec, runs_dir: Path, planned_steps: dict[str, Step], rerun_stale: bool) -> Step:
    """Skip an evaluation that finished after every run it reads, on the code it ran; run it otherwise
    (``planned_steps``: as :func:`_read_runs` takes them)."""
    planned = spec.argv()
    run_dir = runs_dir / spec.name
    if locked := _locked(run_dir, spec.name, planned, spec.after):
        return locked
    record = _own_record(run_dir, planned)
    changed, read = _read_runs(spec, runs_dir, planned_steps, record)
    if changed:
        return Step(spec.name, planned, "run", f"after {', '.join(changed)}", needs=spec.after)
    if record is None or record.get("status") != "finished":
        reason = "not run yet" if record is None else f"status {record['status']}"
        return Step(spec.name, planned, "run", reason, needs=spec.after)
    # its numbers are the tool's and those of the tasks whose runs it reads (as the report judges them)
    stale = _changes_since(record, (str(record.get("task")), *read))
    if stale and rerun_stale:
        return Step(spec.name, planned, "rerun", _stale_reason(stale), needs=spec.after, replaces=run_dir)
    return Step(spec.name, planned, "skip", _finished_reason(record, stale), needs=spec.after)


def plan(
    comparison: Comparison, runs_dir: Path = RUNS_DIR, only: list[str] | None = None, rerun_stale: bool = False
) -> list[Step]:
    """The commands ``anyformer experiment`` would run, in order, each with its action; with
    ``rerun_stale``, runs whose code or config changed since they ran are rerun from scratch.

    Raises:
        UsageError: ``only`` names a run the comparison lacks, a run folder was made by another
            command, or an evaluation's ``after`` run has not finished and is left out by ``only``.
    """
    chosen = {comparison.run(name).name for name in only} if only else None
    specs = [spec for spec in comparison.runs if chosen is None or spec.name in chosen]  # in declared order
    steps = []
    for setup in comparison.setup:
        done = Path(setup.creates).exists()
        action = "skip" if done else "run"
        steps.append(Step("setup", setup.argv(), action, f"creates {setup.creates}", creates=setup.creates))
    for spec in specs:
        if isinstance(spec, EvalSpec):
            steps.append(_eval_step(spec, runs_dir, {step.label: step for step in steps}, rerun_stale))
            continue
        fit = _fit_step(spec, runs_dir, {step.label: step for step in steps}, rerun_stale)
        steps.append(fit)
        if "test" in spec.then:
            steps.append(_test_step(spec, fit, runs_dir))
    return steps


def _child_argv(step: Step) -> list[str]:
    return [sys.executable, "-m", "anyformer.core.cli.main", *step.argv[1:]]


def execute(step: Step) -> int:
    """Run one ``anyformer ...`` command in a child Python; return its exit status."""
    return subprocess.run(_child_argv(step), check=False).returncode


def start(step: Step, log: Path) -> subprocess.Popen:
    """Start one ``anyformer ...`` command in a child Python, its output into ``log`` (appended)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child keeps its own handle
        return subprocess.Popen(_child_argv(step), stdout=out, stderr=subprocess.STDOUT)


def log_path(step: Step, runs_dir: Path = RUNS_DIR) -> Path:
    """Where ``--jobs`` sends a step's output: ``runs/<run>/experiment.log`` (a test step: ``experiment-test.log``)."""
    name, _, then = step.label.partition(" ")
    return runs_dir / name / (f"experiment-{then}.log" if then else "experiment.log")


def _prerequisites(step: Step, steps: list[Step]) -> tuple[str, ...]:
    """Labels of the steps of this plan that must end well before ``step`` starts: a test step's fit,
    a run's ``after`` runs (those that are in the plan)."""
    labels = {other.label for other in steps}
    name, _, then = step.label.partition(" ")
    own = (name,) if then else ()
    return tuple(label for label in (*own, *step.needs) if label in labels)


def run_in_parallel(steps: list[Step], jobs: int) -> int:
    """Run the plan's steps ``jobs`` at a time, each as soon as what it reads has ended well.

    Setup steps run first, one by one. A step that fails stops new starts (the running ones end);
    steps waiting on a failed or unfinished run are not started. Returns 0 when every step ended
    well, else 1.
    """
    todo = [step for step in steps if step.executes]
    for step in [step for step in todo if step.label == "setup"]:
        if _run_one(step) != 0:
            return 1
    todo = [step for step in todo if step.label != "setup"]
    ended_well = {step.label for step in steps if step.action == "skip"}
    prerequisites = {step.label: set(_prerequisites(step, steps)) for step in todo}
    running: dict[str, tuple[subprocess.Popen, Step]] = {}
    failed: list[str] = []
    while todo or running:
        for step in list(todo):
            if failed or len(running) >= jobs:
                break
            if not prerequisites[step.label] <= ended_well:
                continue
            todo.remove(step)
            if not _ready(step):
                failed.append(step.label)
                continue
            print(f"anyformer experiment: started {step.label}, output in {log_path(step)}", flush=True)
            running[step.label] = (start(step, log_path(step)), step)
        if not running:
            break  # what is left waits on a step that failed or was refused
        time.sleep(POLL_S)
        for label, (child, step) in list(running.items()):
            if (status := child.poll()) is None:
                continue
            del running[label]
            if status == 0:
                ended_well.add(label)
                print(f"anyformer experiment: {label} ended", flush=True)
            else:
                failed.append(label)
                print(f"anyformer experiment: {label} failed (exit {status}), see {log_path(step)}", file=sys.stderr)
    if failed or todo:
        waiting = f"; not started: {', '.join(step.label for step in todo)}" if todo else ""
        print(f"anyformer experiment: failed: {', '.join(failed) or 'none'}{waiting}; rerun to resume", file=sys.stderr)
        return 1
    return 0


def _ready(step: Step) -> bool:
    """Check what ``step`` reads and set its stale folder aside, just before it starts; False when it must not."""
    if not _needs_finished(step):
        return False
    _set_aside(step)
    return True


def _needs_finished(step: Step) -> bool:
    """Whether the runs ``step`` reads say finished; says which do not on stderr."""
    if unfinished := [name for name in step.needs if _finished(RUNS_DIR, name) is None]:
        # e.g. a fit that ended early (status stopped) exits 0 but is no result to evaluate
        print(f"anyformer experiment: {step.label} needs {', '.join(unfinished)} finished first", file=sys.stderr)
        return False
    return True


def _set_aside(step: Step) -> None:
    """Move a ``rerun`` step's stale run folder to ``runs/.stale/<name>/`` (replacing an older one there),
    so the rerun starts from nothing and the stale run is kept until the next rerun of it."""
    if step.replaces is None or not step.replaces.exists():
        return
    kept = step.replaces.parent / STALE_DIR / step.replaces.name
    if kept.exists():
        shutil.rmtree(kept)
    kept.parent.mkdir(exist_ok=True)
    step.replaces.rename(kept)
    print(f"anyformer experiment: moved the stale {step.replaces} to {kept}", flush=True)


def _run_one(step: Step) -> int:
    """Run a step in the foreground, with the serial loop's checks (needs, creates); 0 when it ended well."""
    if not _ready(step):
        return 1
    if step.creates is not None:  # tools refuse a missing output folder; on a fresh clone data/ is one
        Path(step.creates).parent.mkdir(parents=True, exist_ok=True)
    if (status := execute(step)) != 0:
        print(f"anyformer experiment: {step.label} failed (exit status {status}); rerun to resume", file=sys.stderr)
        return 1
    if step.creates is not None and not Path(step.creates).exists():
        print(f"anyformer experiment: `{command_line(step.argv)}` did not create {step.creates}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="anyformer experiment",
        description="Run a comparison of experiments/comparisons/ end to end; finished runs are skipped, "
        "interrupted ones resume from last.ckpt.",
    )
    parser.add_argument("name", help="comparison name (experiments/comparisons/NAME.yaml) or a .yaml path")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    parser.add_argument("--only", action="append", metavar="RUN", help="run only this run (repeatable)")
    parser.add_argument("--comparisons", default=str(COMPARISONS_DIR), help="folder of comparison YAML files")
    parser.add_argument(
        "--rerun-stale",
        action="store_true",
        help="rerun from scratch the runs whose code or config changed in a commit since they ran (the "
        "report's stale mark; by default they are skipped); each old folder is kept in runs/.stale/",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="run up to this many runs at once, each as soon as the runs it reads have ended; their output "
        "goes to runs/<run>/experiment.log. Give each its share of the cores, e.g. OMP_NUM_THREADS=1 with "
        "--jobs 2 on 2 cores (default 1: one after another, output here)",
    )
    return parser


@reports_usage_errors("anyformer experiment")
def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    comparison = load_comparison(comparison_path(args.name, args.comparisons))
    steps = plan(comparison, RUNS_DIR, args.only, rerun_stale=args.rerun_stale)
    print(f"# anyformer experiment {comparison.name}: {comparison.title}")
    locked = [step.label for step in steps if step.action == "locked"]
    for number, step in enumerate(steps, 1):
        print(f"[{number}/{len(steps)}] {step.action:<6} {step.label} ({step.reason})\n    {command_line(step.argv)}")
        if step.executes and not (args.dry_run or args.jobs > 1) and _run_one(step) != 0:
            return 1
    if args.jobs > 1 and not args.dry_run and run_in_parallel(steps, args.jobs) != 0:
        return 1
    if locked and not args.dry_run:
        print(
            f"anyformer experiment: left alone {', '.join(locked)}: another process is writing them;"
            " rerun when it ends",
            file=sys.stderr,
        )
        return 1
    return 0
