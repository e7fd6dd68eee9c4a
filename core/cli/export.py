"""``anyformer export``: a checkpoint as files another runtime reads.

    anyformer export --ckpt runs/gpt_demo/checkpoints/last.ckpt --format safetensors --out exports/gpt_demo

Formats (``EXPORTERS`` says which tasks each takes):

- ``safetensors`` (every task): ``model.safetensors`` (the weights, no pickle) and ``anyformer.json``
  (task, config, optimizer, tokenizer, labels); ``anyformer.load(folder)`` and every ``--ckpt``
  read the folder as they read the .ckpt.
- ``onnx``: ``model.onnx`` and ``anyformer.json`` (inputs, outputs, labels, tokenizer) for the
  classifiers and the language models (``anyformer.core.cli.onnx_export``).
- ``hf``: Hugging Face ``transformers`` (``gpt``, ``bert``, ``bert-classify``) or timm (``vit``)
  folders, written by the domains' converters.

The files are written into a new folder beside ``--out`` that is renamed to ``--out`` only once
complete, so a failed export leaves ``--out`` as it was (absent, or its old contents with ``--force``).
Exit codes: 0 written, 2 for a bad checkpoint, an unsupported (format, task) pair or option, or an
``--out`` that cannot be written (one line on stderr).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from anyformer.core.cli.errors import ArgumentParser, UsageError, reports_usage_errors
from anyformer.core.cli.tasks import TASKS, resolve
from anyformer.core.train.base import TaskModule
from anyformer.core.train.checkpoint import load_task

PROG = "anyformer export"

_ONNX = "anyformer.core.cli.onnx_export"
EXPORTERS: dict[str, dict[str, str]] = {
    "safetensors": {task: "anyformer.core.train.checkpoint:save_weights_folder" for task in TASKS},
    "onnx": {
        "vit": f"{_ONNX}:export_image_classifier",
        "vision-cnn": f"{_ONNX}:export_image_classifier",
        "speech": f"{_ONNX}:export_audio_classifier",
        "speech-cnn": f"{_ONNX}:export_audio_classifier",
        "bert-classify": f"{_ONNX}:export_sentence_classifier",
        "text-bow": f"{_ONNX}:export_sentence_classifier",
        "gpt": f"{_ONNX}:export_language_model",
    },
    "hf": {
        "gpt": "anyformer.text.hf:export_gpt_hf",
        "bert": "anyformer.text.hf:export_bert_hf",
        "bert-classify": "anyformer.text.hf:export_bert_hf",
        "vit": "anyformer.vision.timm_export:export_vit_timm",
    },
}
"""format -> task -> ``module:function(module, folder)`` writing the export into an existing empty folder
(raising ValueError, naming the option, for a checkpoint it cannot convert)."""

Exporter = Callable[[TaskModule, Path], None]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Export a checkpoint as safetensors, ONNX or Hugging Face files.")
    parser.add_argument(
        "--ckpt", required=True, help="checkpoint of a fit (runs/.../last.ckpt) or a safetensors export"
    )
    parser.add_argument(
        "--format", required=True, choices=list(EXPORTERS),
        help="safetensors: every task, read back by anyformer.load; onnx: the classifiers and gpt; "
        "hf: gpt, bert, bert-classify (transformers) and vit (timm)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="folder to create with the exported files")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists and is not empty")
    return parser


def exporter_for(fmt: str, task: str) -> Exporter:
    """The exporter of ``fmt`` for ``task`` checkpoints.

    Raises:
        UsageError: the pair is not supported (naming the formats the task has), or its exporter
            cannot be imported (a converter not installed).
    """
    path = EXPORTERS[fmt].get(task)
    if path is None:
        formats = [name for name, tasks in EXPORTERS.items() if task in tasks]
        raise UsageError(
            f"--format {fmt} does not take {task!r} checkpoints (it takes {', '.join(EXPORTERS[fmt])}); "
            f"a {task!r} checkpoint exports as: {', '.join(formats)}"
        )
    try:
        return resolve(path)
    except (ImportError, AttributeError) as err:
        raise UsageError(f"--format {fmt} for {task!r} needs {path}, which is not available ({err})") from err


def check_destination(out: Path, ckpt: Path, force: bool) -> None:
    """Refuse an ``--out`` that cannot become the export folder, before any work is done."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; expected a folder to create")
    resolved = out.resolve()
    for inside in (Path.cwd().resolve(), ckpt.resolve()):
        if inside == resolved or resolved in inside.parents:
            raise UsageError(f"--out {out} holds {inside}, which the export would replace; choose another folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UsageError(f"--out {out} exists and is not empty; pass --force to replace it")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is a file, not a folder")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A new empty folder beside ``out`` that takes ``out``'s place when the block ends without an
    error; otherwise it is deleted and ``out`` is left as it was. An existing ``out`` is replaced."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    stage.mkdir()
    try:
        yield stage
        if out.is_dir() and any(out.iterdir()):
            old = out.with_name(f".{out.name}.{secrets.token_hex(4)}.old")
            os.replace(out, old)
            try:
                os.replace(stage, out)
            except BaseException:
                os.replace(old, out)
                raise
            shutil.rmtree(old)
        else:
            os.replace(stage, out)  # over an empty folder, too
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def export(ckpt: str | Path, fmt: str, out: str | Path, *, force: bool = False) -> list[str]:
    """Export the checkpoint ``ckpt`` as ``fmt`` into the folder ``out``; returns the files written.

    Raises:
        UsageError: a bad checkpoint, an unsupported (format, task) pair or option, or a bad ``out``.
    """
    ckpt, out = Path(ckpt), Path(out)
    check_destination(out, ckpt, force)
    module = load_task(ckpt)
    exporter = exporter_for(fmt, module.task_name)
    with staged_folder(out) as folder:
        try:
            exporter(module, folder)
        except UsageError:
            raise
        except ValueError as err:  # the converters' "this checkpoint uses an option I cannot convert"
            raise UsageError(f"--format {fmt} cannot export this {module.task_name!r} checkpoint: {err}") from err
        if not any(folder.iterdir()):
            raise RuntimeError(f"the {fmt} exporter of {module.task_name!r} wrote nothing")
    return sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())


@reports_usage_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``anyformer export``; returns the exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    files = export(args.ckpt, args.format, args.out, force=args.force)
    print(f"wrote {args.out}: {', '.join(files)}")
    return 0
