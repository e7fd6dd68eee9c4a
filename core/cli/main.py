"""The ``anyformer`` command: ``anyformer <task> fit|validate|test|predict --config FILE``
through LightningCLI, plus tools such as ``anyformer generate``."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

from anyformer.core.cli.errors import UsageError, disk_full, one_line, report, report_stop
from anyformer.core.cli.tasks import TASKS, TOOLS, resolve
from anyformer.core.data.errors import DataError

USAGE = (
    "usage: anyformer <task> fit|validate|test|predict --config FILE [--run-name NAME] [--compile]"
    " [--section.key value ...]\n"
    "       anyformer <tool> [options]\n"
    "  --run-name NAME  log and checkpoint into runs/NAME/ (default: the config file's name)\n"
    "  --compile        run the network through torch.compile (in place: checkpoints are unchanged)"
)


def _help() -> str:
    lines = [USAGE, "", "tasks (LightningCLI; `anyformer <task> --help`):"]
    lines += [f"  {name:<10} {spec.summary}" for name, spec in TASKS.items()]
    lines += ["", "tools (`anyformer <tool> --help`):"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in TOOLS.items()]
    return "\n".join(lines)


def _config_stem(args: list[str]) -> str | None:
    """Name of the (last) ``--config`` file, without folder and extension."""
    stem = None
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            stem = Path(args[i + 1]).stem
        elif arg.startswith("--config="):
            stem = Path(arg.split("=", 1)[1]).stem
    return stem


def packaged(path: str | Path) -> Path:
    """``path`` if it exists from the current folder; else, for ``experiments/...``, the same file
    inside the installed ``anyformer.experiments`` package when it is there.

    So ``--config experiments/text/gpt_demo.yaml`` and ``anyformer experiment NAME`` work from any
    folder, while the commands keep the path as written (run records stay the same from the
    repository root).
    """
    path = Path(path)
    if path.exists() or path.is_absolute() or path.parts[:1] != ("experiments",):
        return path
    import anyformer.experiments  # the package's __init__ only: no domain, no torch

    inside = Path(anyformer.experiments.__file__).resolve().parent.joinpath(*path.parts[1:])
    return inside if inside.exists() else path


def _packaged_configs(args: list[str]) -> list[str]:
    """``--config experiments/...`` that is not there from the current folder -> the packaged copy
    (:func:`packaged`), so packaged configs work from any folder."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = str(packaged(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = "--config=" + str(packaged(arg.split("=", 1)[1]))
    return out


def _pop_run_name(args: list[str]) -> tuple[str | None, list[str]]:
    """Take the suite's own ``--run-name NAME`` out of the LightningCLI arguments."""
    rest, name = [], None
    i = 0
    while i < len(args):
        if args[i] == "--run-name":
            if i + 1 >= len(args) or args[i + 1].startswith("-"):
                raise UsageError("--run-name needs a value, e.g. --run-name gpt_rope")
            name, i = args[i + 1], i + 2
            continue
        if args[i].startswith("--run-name="):
            name = args[i].split("=", 1)[1]
        else:
            rest.append(args[i])
        i += 1
    if name is not None and (not name or "/" in name or name.startswith(".")):
        raise UsageError(f"--run-name {name!r} must be a plain folder name (no '/', not hidden)")
    return name, rest


def _evaluation_lock(tool: str, args: list[str]) -> Any:
    """The lock of ``runs/<name>`` for an evaluation tool given ``--run-name NAME`` (it writes
    ``runs/<name>/run.json``), not yet taken; None for other tools and runs without a name."""
    from anyformer.core.cli.tasks import EVALUATION_TOOLS
    from anyformer.core.train.run_lock import RunLock

    if tool not in EVALUATION_TOOLS:
        return None
    run_name, _ = _pop_run_name(args)
    return None if run_name is None else RunLock(Path("runs") / run_name, ["anyformer", tool, *args])


def _pop_compile(args: list[str]) -> tuple[bool, list[str]]:
    """Take the suite's own ``--compile`` switch out of the LightningCLI arguments."""
    rest = [arg for arg in args if arg != "--compile"]
    return len(rest) != len(args), rest


def _progress_callback():
    """A callback that tells whether the run has started its real work (:meth:`started`): it is
    inside a batch, or a batch other than the sanity check's has run."""
    import pytorch_lightning as pl

    class Progress(pl.Callback):
        def __init__(self) -> None:
            self.in_batch = self.ran = False

        def started(self) -> bool:
            return self.in_batch or self.ran

        def _start(self, trainer, *args) -> None:
            self.in_batch = True

        def _end(self, trainer, *args) -> None:
            self.in_batch = False
            self.ran = self.ran or not trainer.sanity_checking

        on_train_batch_start = on_validation_batch_start = on_test_batch_start = on_predict_batch_start = _start
        on_train_batch_end = on_validation_batch_end = on_test_batch_end = on_predict_batch_end = _end

    return Progress()


def _first_rank() -> bool:
    """Whether this process is the first of its run (not a DDP worker that re-ran the command)."""
    return all(os.environ.get(name, "0") in ("", "0") for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def _input_errors_are_usage_errors(datamodule: object) -> None:
    """Make the data module's ``prepare_data`` and ``setup`` report a ``ValueError`` or ``OSError``
    (a damaged or missing file, a bad label: read before the first step) as a :class:`UsageError`,
    as :meth:`instantiate_classes` does for the data module's constructor. A full disk stays a stop."""
    from anyformer.core.train.atomic import DiskFullError

    for name in ("prepare_data", "setup"):
        hook = getattr(datamodule, name, None)
        if hook is None:
            continue

        def checked(*args, _hook=hook, **kwargs):
            try:
                return _hook(*args, **kwargs)
            except DiskFullError:
                raise
            except (ValueError, OSError) as err:
                raise UsageError(one_line(err)) from err

        setattr(datamodule, name, checked)


def run_task(task: str, args: list[str]) -> None:
    """Run LightningCLI for ``task`` with the suite's trainer defaults.

    The command holds the lock of ``runs/<name>/`` (:mod:`anyformer.core.train.run_lock`) from the
    end of argument parsing until it ends, so a second command on the same run is refused.

    Raises:
        UsageError: a bad argument or config (unknown key, wrong type, missing file), a data
            module or model that rejects its settings or its data while being built, a trainer
            setting Lightning rejects when the run starts (``MisconfigurationException``), an
            unreadable or unsafe ``--ckpt_path``, or a run folder held by another process.
    """
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from pytorch_lightning.accelerators import CPUAccelerator
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
    from pytorch_lightning.cli import LightningCLI
    from pytorch_lightning.loggers import TensorBoardLogger

    from anyformer.core.train import hardware
    from anyformer.core.train.atomic import DiskFullError
    from anyformer.core.train.base import AtomicCheckpointIO
    from anyformer.core.train.callbacks import (
        CompileModel,
        LatestCheckpoint,
        RandomState,
        ResumeLogs,
        RunRecord,
        WallClock,
    )
    from anyformer.core.train.csv_logger import ResumableCSVLogger
    from anyformer.core.train.run_lock import RunLock

    spec = TASKS[task]
    typed_argv = ["anyformer", task, *args]  # recorded in run.json as the user wrote it
    run_name, args = _pop_run_name(args)
    compile_model, args = _pop_compile(args)
    run_name = run_name or _config_stem(args) or task
    args = _packaged_configs(args)  # after the run name: it comes from the config as written
    # fit logs into runs/<name>/; validate/test/predict into runs/<name>/<subcommand>/, so they
    # never overwrite the training curves (CSVLogger clears a non-empty log folder).
    log_version = "" if not args or args[0] == "fit" else args[0]
    model_class, data_class = resolve(spec.model), resolve(spec.data)
    lock = RunLock(Path("runs") / run_name, typed_argv)
    progress = _progress_callback()

    class TaskCLI(LightningCLI):
        def parse_arguments(self, parser, args) -> None:
            # jsonargparse raises instead of printing its usage block (exit_on_error=False below).
            try:
                super().parse_arguments(parser, args)
            except ArgumentError as err:
                raise UsageError(one_line(err)) from None
            # The arguments are valid: take the run folder before anything can write into it (or
            # log: a refused command prints its one line only). A command refused later, while
            # its classes are built, removes the folder again if it made it.
            if self.config.get("subcommand") is not None and _first_rank():
                lock.acquire()

        def _parse_ckpt_path(self) -> None:
            # LightningCLI reads --ckpt_path's hyperparameters (torch.load, weights_only=True) right
            # after parsing and applies them over the config. A damaged or unsafe file is a usage
            # error naming it. Hyperparameters that are link targets of the data module (a speech
            # model's whole `spectrogram`) cannot be applied that way: then the config as given is
            # used, as the model's weights are checked against it when they load.
            from anyformer.core.train.checkpoint import checkpoint_read_error

            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            try:
                super()._parse_ckpt_path()
            except (ArgumentError, SystemExit) as err:
                logging.getLogger(__name__).info(
                    "%s: its hyperparameters were not applied over the config (%s); the config as given is used",
                    ckpt_path,
                    one_line(err) if isinstance(err, ArgumentError) else "not parseable here",
                )
            except Exception as err:
                raise checkpoint_read_error(ckpt_path, err) from None

        def instantiate_classes(self) -> None:
            # Building the data module and the model is where bad config values, missing or
            # corrupt files and unusable datasets surface; anything later is not a usage error.
            try:
                super().instantiate_classes()
            except DiskFullError:
                lock.release()
                raise  # not a usage error: main reports it as a stop (exit 1)
            except (ValueError, OSError) as err:
                lock.release()
                raise UsageError(one_line(err)) from err
            except BaseException:
                lock.release()
                raise

        def _run_subcommand(self, subcommand: str) -> None:
            _input_errors_are_usage_errors(self.datamodule)
            # Lightning checks the trainer settings against the model and the data when the run
            # starts (val_check_interval beyond the epoch, a monitored metric never logged, ...)
            # and raises MisconfigurationException or ValueError: a config error like any other.
            # The same types raised inside a batch, or after the first batch ran, are real errors
            # and keep their traceback.
            try:
                super()._run_subcommand(subcommand)
            except (MisconfigurationException, ValueError) as err:
                if isinstance(err, UsageError) or progress.started():
                    raise
                raise UsageError(one_line(err)) from err

        def add_arguments_to_parser(self, parser) -> None:
            for source, target in model_class.data_links.items():
                parser.link_arguments(f"data.{source}", f"model.{target}", apply_on="instantiate")

        def _instantiate_trainer(self, config, callbacks):
            # Rich bars unless the user turned bars off (a default callback would then conflict).
            if config.get("enable_progress_bar") is not False:
                callbacks = [*callbacks, RichProgressBar()]
            trainer = super()._instantiate_trainer(config, callbacks)
            slower = hardware.bf16_warning(str(trainer.precision), isinstance(trainer.accelerator, CPUAccelerator))
            if slower is not None and _first_rank():
                logging.getLogger(__name__).warning(slower)
            return trainer

    trainer_defaults = {
        "callbacks": [
            # The best by val_loss, and last.ckpt at every validation: Lightning's save_last only
            # refreshes last.ckpt when a top-k file is saved, so `--ckpt_path last` and the tools
            # would read the last *improvement*, not the latest state, once val_loss stops falling.
            ModelCheckpoint(monitor="val_loss", mode="min", filename="best-{step}"),
            LatestCheckpoint(),
            LearningRateMonitor(logging_interval="step"),
            WallClock(),
            progress,
            RunRecord(Path("runs") / run_name, task, typed_argv),
            RandomState(),  # with the data order and Lightning's state: a resumed fit equals an uninterrupted one
            ResumeLogs(),
            *([CompileModel()] if compile_model else []),
        ],
        "logger": [
            # One folder per experiment, runs/<--run-name or config name>/, so reruns resume in place.
            ResumableCSVLogger(save_dir="runs", name=run_name, version=log_version),
            TensorBoardLogger(save_dir="runs", name=run_name, version=log_version, default_hp_metric=False),
        ],
        "plugins": [AtomicCheckpointIO()],
        "gradient_clip_val": 1.0,
    }
    # The default callbacks/loggers are instances; jsonargparse warns it cannot write them into
    # the run's config.yaml, which is expected (they are the suite's defaults, not user settings).
    # The message starts with a newline, which ``.`` does not match.
    warnings.filterwarnings("ignore", message=r"\s*Unable to serialize instance")
    # `anyformer <task> ...` hands LightningCLI the arguments after the task name on purpose.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        TaskCLI(
            model_class,
            data_class,
            args=args,
            trainer_defaults=trainer_defaults,
            seed_everything_default=1337,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": f"anyformer {task}", "exit_on_error": False},
        )
    finally:
        lock.release()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_help())
        return 0
    name, rest = argv[0], argv[1:]
    if name in TASKS:
        try:
            run_task(name, rest)
        except (UsageError, DataError) as err:  # DataError: a dataset found missing or corrupt while training
            return report(f"anyformer {name}", err)
        except FloatingPointError as err:  # the run diverged; its checkpoints are kept
            print(f"anyformer {name}: training stopped: {one_line(err)}", file=sys.stderr)
            return 1
        except OSError as err:
            # The disk filled up (atomic writes: every file it was replacing is intact). Later
            # writes (the run record of the failed fit) fail too: the first one is named.
            if (full := disk_full(err)) is None:
                raise
            return report_stop(f"anyformer {name}", full)
        return 0
    if name in TOOLS:
        try:  # an evaluation writing runs/<name>/ holds its lock, as a fit does: one writer per run
            lock = _evaluation_lock(name, rest)
            if lock is not None:
                lock.acquire()
        except UsageError as err:
            return report(f"anyformer {name}", err)
        try:
            return resolve(TOOLS[name][0])(rest)  # each tool reports its own usage errors
        finally:
            if lock is not None:
                lock.release()
    error = UsageError(
        f"unknown command {name!r}; expected one of {sorted(TASKS) + sorted(TOOLS)} (see anyformer --help)"
    )
    return report("anyformer", error)


if __name__ == "__main__":
    sys.exit(main())
