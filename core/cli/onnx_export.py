"""``anyformer export --format onnx``: a checkpoint's forward as ``model.onnx``, and ``anyformer.json``
saying what goes in and out and what a runtime needs besides the graph (labels, tokenizer, normalization).

One exporter per kind of network, each named in ``anyformer.core.cli.export.EXPORTERS``:

- image classifiers (``vit``, ``vision-cnn``): normalized pixels (B, C, H, W) -> logits (B, classes);
- audio classifiers (``speech``, ``speech-cnn``): waveforms (B, samples) -> logits, or, when the
  log-mel front end does not export, log-mel spectrograms (B, F, T) -> logits (said in the JSON and
  in a warning);
- sentence classifiers (``bert-classify``, ``text-bow``): ``input_ids`` and ``attention_mask`` (B, T)
  -> logits (B, classes);
- the GPT: ``input_ids`` (B, T) -> next-token logits (B, T, V), the uncached forward.

Every graph has a dynamic batch axis, text graphs a dynamic sequence axis too. Each export tries
``torch.export`` (``dynamo=True``) first and the TorchScript tracer (``dynamo=False``) second; the
tracer keeps the forward's input checks (finite pixels, ids in range) out of the graph. Exports run
on a copy of the network whose ``anyformer.core.linear.Linear`` layers are plain ``nn.Linear``: the
oneDNN product is a custom operator that no ONNX exporter knows.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from anyformer.core.cli.errors import UsageError, one_line
from anyformer.core.linear import Linear
from anyformer.core.train.base import TaskModule

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
META_FILE = "anyformer.json"
EXTERNAL_DATA_BYTES = 1 << 30
"""Weights above this go to ``model.onnx.data`` beside the graph instead of inside it."""


class OnnxExportError(UsageError):
    """Neither torch.export nor the TorchScript tracer could turn the network into ONNX."""


@dataclass
class Port:
    """One input or output of the graph."""

    name: str
    example: Tensor | None
    """An input's example value (its shape and dtype); None for an output."""
    shape: list[int | str]
    """Sizes; a string names a dynamic axis (``batch``, ``tokens``)."""
    dtype: str
    description: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": self.shape, "description": self.description}


def plain_copy(net: nn.Module) -> nn.Module:
    """A deep copy in eval mode whose ``anyformer.core.linear.Linear`` layers are ``nn.Linear`` with the
    same weights (``Linear`` only adds a kernel choice to ``nn.Linear.forward``)."""
    net = copy.deepcopy(net).eval()
    for layer in net.modules():
        if isinstance(layer, Linear):
            layer.__class__ = nn.Linear
    return net


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx reports progress, optimizer passes and whole traced graphs through print, logging,
    warnings and (the tracer, from C++) file descriptors 1 and 2: keep them off the terminal (the
    outcome is logged instead)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                warnings.simplefilter("ignore")
                yield
    finally:
        for fd, copy_ in zip((1, 2), saved):
            os.dup2(copy_, fd)
            os.close(copy_)
        logging.disable(previous)


def export_graph(net: nn.Module, inputs: list[Port], outputs: list[Port], path: Path, task: str) -> str:
    """Write ``net(*inputs)`` (of a ``task`` checkpoint) as ONNX to ``path``; returns the exporter that succeeded.

    Raises:
        OnnxExportError: both exporters failed (the message gives each one's reason), or ``onnx`` or
            ``onnxscript`` is not installed.
    """
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        packages = " ".join(missing)
        raise OnnxExportError(f"--format onnx needs the packages {packages} (pip install {packages})")
    args = tuple(port.example for port in inputs)
    axes = {
        port.name: {axis: size for axis, size in enumerate(port.shape) if isinstance(size, str)}
        for port in [*inputs, *outputs]
    }
    options = {"input_names": [p.name for p in inputs], "output_names": [p.name for p in outputs]}
    weight_bytes = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    options["external_data"] = weight_bytes > EXTERNAL_DATA_BYTES  # ONNX's protobuf stops at 2 GiB
    failures = []
    for exporter, dynamo in (("torch.export (dynamo=True)", True), ("TorchScript tracer (dynamo=False)", False)):
        try:
            with _quiet(), torch.no_grad():
                torch.onnx.export(net, args, str(path), dynamo=dynamo, dynamic_axes=axes, verbose=False, **options)
            return exporter
        except Exception as err:
            failures.append(f"{exporter}: {type(err).__name__}: {_first_line(err)}")
            logger.info("could not export the %r network with %s", task, failures[-1])
            for partial in (path, path.with_name(path.name + ".data")):
                partial.unlink(missing_ok=True)
    raise OnnxExportError(f"--format onnx could not export this {task!r} checkpoint: {'; '.join(failures)}")


def _first_line(err: BaseException) -> str:
    """The gist of an exporter's (often pages-long) message: its first non-empty line, or the
    'Caused by' line of torch.export's report, shortened."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    cause = next((line for line in lines if line.startswith("<class") or "Could not guard" in line), None)
    gist = one_line(cause or (lines[0] if lines else repr(err))).split(" [Caused by", 1)[0]
    gist = gist if len(gist) <= 300 else gist[:297] + "..."
    if "The following call raised this error:" in lines:  # torch.export names the line of our code
        where = lines[lines.index("The following call raised this error:") + 1 :][:2]
        gist += f" (at {' '.join(where)})"
    return gist


def write_meta(module: TaskModule, folder: Path, inputs: list[Port], outputs: list[Port], **extra: Any) -> None:
    """``anyformer.json`` beside ``model.onnx``: the checkpoint's ``"anyformer"`` section (task, config,
    inference state) plus the graph's inputs and outputs."""
    import onnx

    checkpoint: dict[str, Any] = {}
    module.on_save_checkpoint(checkpoint)
    graph = onnx.load(folder / ONNX_FILE, load_external_data=False)
    meta = {
        **checkpoint["anyformer"],
        "export": "onnx",
        "model": ONNX_FILE,
        "opset": max(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx")),
        "inputs": [port.describe() for port in inputs],
        "outputs": [port.describe() for port in outputs],
        **extra,
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


# -- the exporters, one per kind of network ---------------------------------------------------
def export_image_classifier(module: TaskModule, folder: Path) -> None:
    """``vit``, ``vision-cnn``: (B, C, H, W) normalized pixels -> (B, classes) logits."""
    cfg = module.config
    height, width = cfg.image_size if isinstance(cfg.image_size, (tuple, list)) else (cfg.image_size,) * 2
    images = torch.zeros(2, cfg.in_channels, height, width)
    inputs = [Port("images", images, ["batch", cfg.in_channels, height, width], "float32",
                   "pixels in [0, 1] resized to (H, W), then (pixel - mean) / std per channel (inference.mean, "
                   "inference.std)")]  # fmt: skip
    outputs = [Port("logits", None, ["batch", cfg.num_classes], "float32", "class scores, inference.class_names order")]
    exporter = export_graph(plain_copy(module.model), inputs, outputs, folder / ONNX_FILE, module.task_name)
    write_meta(module, folder, inputs, outputs, exporter=exporter)


def export_audio_classifier(module: TaskModule, folder: Path) -> None:
    """``speech``, ``speech-cnn``: (B, samples) waveforms -> (B, classes) logits; when the log-mel front
    end does not export, the network after it: (B, F, T) log-mel spectrograms -> logits."""
    spec = module.config.spectrogram
    waves = torch.zeros(2, spec.n_samples)
    outputs = [Port("logits", None, ["batch", module.config.num_classes], "float32",
                    "class scores, inference.class_names order")]  # fmt: skip
    net = plain_copy(module.model)
    inputs = [Port("waveform", waves, ["batch", spec.n_samples], "float32",
                   f"mono clips of exactly {spec.duration_s} s at {spec.sample_rate} Hz, samples in [-1, 1] "
                   "(crop or pad around the centre)")]  # fmt: skip
    try:
        exporter = export_graph(net, inputs, outputs, folder / ONNX_FILE, module.task_name)
        write_meta(module, folder, inputs, outputs, exporter=exporter)
        return
    except OnnxExportError as err:
        front_end_error = str(err).split(": ", 1)[1]
    with torch.no_grad():
        spectrogram = net.front_end(waves)  # (B, F, T)
    net.front_end = nn.Identity()  # the network's own forward, from the spectrogram on
    note = (
        f"the log-mel front end did not export ({front_end_error}): model.onnx takes log-mel spectrograms, "
        "computed as config.spectrogram says (anyformer.speech.features.LogMelSpectrogram)"
    )
    inputs = [Port("spectrogram", spectrogram, ["batch", *spectrogram.shape[1:]], "float32",
                   "log-mel features (B, n_mels, frames) of clips of config.spectrogram.duration_s, as "
                   "LogMelSpectrogram computes them (config.spectrogram: rate, n_fft, hop, mels, "
                   "normalization)")]  # fmt: skip
    exporter = export_graph(net, inputs, outputs, folder / ONNX_FILE, module.task_name)
    logger.warning("%s", note)
    write_meta(module, folder, inputs, outputs, exporter=exporter, notes=[note])


class _SentenceLogits(nn.Module):
    """``input_ids`` and ``attention_mask`` (B, T) integers -> (B, classes): the module's ``batch_logits``
    on a one-segment batch, as ``anyformer classify`` builds it."""

    def __init__(self, module: TaskModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        batch = {
            "input_ids": input_ids,
            "segment_ids": torch.zeros_like(input_ids),
            "attention_mask": attention_mask > 0,
        }
        return self.module.batch_logits(batch)


def export_sentence_classifier(module: TaskModule, folder: Path) -> None:
    """``bert-classify``, ``text-bow``: ids and mask (B, T), T up to ``max_seq_len`` -> (B, classes) logits."""
    ids = torch.full((2, min(8, module.max_seq_len)), 1, dtype=torch.long)
    inputs = [
        Port("input_ids", ids, ["batch", "tokens"], "int64",
             f"[CLS] text [SEP] ids of inference.tokenizer (anyformer.text.sentence_encoding.encode_sentence), at "
             f"most {module.max_seq_len} tokens, padded to the longest row (padding ids do not matter)"),
        Port("attention_mask", torch.ones_like(ids), ["batch", "tokens"], "int64", "1 at real tokens, 0 at padding"),
    ]  # fmt: skip
    outputs = [Port("logits", None, ["batch", module.config.num_classes], "float32",
                    "class scores, inference.class_names order")]  # fmt: skip
    exporter = export_graph(_SentenceLogits(plain_copy(module)), inputs, outputs, folder / ONNX_FILE, module.task_name)
    write_meta(module, folder, inputs, outputs, exporter=exporter)


def export_language_model(module: TaskModule, folder: Path) -> None:
    """``gpt``: ``input_ids`` (B, T), T up to the context -> (B, T, V) next-token logits."""
    context = module.model.max_seq_len
    ids = torch.zeros(2, min(8, context), dtype=torch.long)
    inputs = [Port("input_ids", ids, ["batch", "tokens"], "int64",
                   f"ids of inference.tokenizer, at most {context} tokens; no padding mask "
                   "(rows of equal length)")]  # fmt: skip
    outputs = [Port("logits", None, ["batch", "tokens", module.config.vocab_size], "float32",
                    "next-token scores at each position (the uncached forward: generation "
                    "re-runs the prefix)")]  # fmt: skip
    exporter = export_graph(plain_copy(module.model), inputs, outputs, folder / ONNX_FILE, module.task_name)
    write_meta(module, folder, inputs, outputs, exporter=exporter)
