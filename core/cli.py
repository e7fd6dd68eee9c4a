"""The ``anyformer`` command: ``anyformer <task> fit|validate|test|predict --config FILE``
through LightningCLI, plus tools such as ``anyformer generate``."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

from core.tasks import TASKS, TOOLS, resolve

USAGE = (
    "usage: anyformer <task> fit|validate|test|predict --config FILE [--section.key value ...]\n"
    "       anyformer <tool> [options]"
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


def run_task(task: str, args: list[str]) -> None:
    """Run LightningCLI for ``task`` with the suite's trainer defaults."""
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
    from pytorch_lightning.cli import LightningCLI
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from core.training import AtomicCheckpointIO

    spec = TASKS[task]
    run_name = _config_stem(args) or task
    # fit logs into runs/<name>/; validate/test/predict into runs/<name>/<subcommand>/, so they
    # never overwrite the training curves (CSVLogger clears a non-empty log folder).
    log_version = "" if not args or args[0] == "fit" else args[0]
    model_class, data_class = resolve(spec.model), resolve(spec.data)

    class TaskCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            for source, target in model_class.data_links.items():
                parser.link_arguments(f"data.{source}", f"model.{target}", apply_on="instantiate")

        def _instantiate_trainer(self, config, callbacks):
            # Rich bars unless the user turned bars off (a default callback would then conflict).
            if config.get("enable_progress_bar") is not False:
                callbacks = [*callbacks, RichProgressBar()]
            return super()._instantiate_trainer(config, callbacks)

    trainer_defaults = {
        "callbacks": [
            ModelCheckpoint(monitor="val_loss", mode="min", save_last=True, filename="best-{step}"),
            LearningRateMonitor(logging_interval="step"),
        ],
        "logger": [
            # One folder per experiment, runs/<config name>/, so reruns resume in place.
            CSVLogger(save_dir="runs", name=run_name, version=log_version),
            TensorBoardLogger(save_dir="runs", name=run_name, version=log_version, default_hp_metric=False),
        ],
        "plugins": [AtomicCheckpointIO()],
        "gradient_clip_val": 1.0,
    }
    # The default callbacks/loggers are instances; jsonargparse warns it cannot write them into
    # the run's config.yaml, which is expected (they are the suite's defaults, not user settings).
    warnings.filterwarnings("ignore", message=".*Unable to serialize instance.*")
    TaskCLI(
        model_class,
        data_class,
        args=args,
        trainer_defaults=trainer_defaults,
        seed_everything_default=1337,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": f"anyformer {task}"},
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_help())
        return 0
    name, rest = argv[0], argv[1:]
    if name in TASKS:
        run_task(name, rest)
        return 0
    if name in TOOLS:
        return resolve(TOOLS[name][0])(rest)
    print(
        f"anyformer: unknown command {name!r}; expected one of {sorted(TASKS) + sorted(TOOLS)}\n\n{_help()}",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
