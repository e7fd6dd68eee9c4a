"""The tabs of ``anyformer app``: one per checkpoint, laid out by its task, each beside its run's record.

Every handler calls a method of :class:`anyformer.api.Model` (``generate``, ``translate``,
``classify``, ``play``, ``attention``) and nothing else of the model: the page shows what the
commands print. A bad input (an empty prompt, a missing, unreadable, oversized or wrongly typed
file) raises ``gradio.Error`` with one line, which the page shows; the server keeps serving.

Handlers are plain functions of ``(model, inputs...)`` so they can be called, and tested, without
a browser; :func:`add_tab` wires them to the components of one tab.
"""

from __future__ import annotations

import csv
import functools
import inspect
import io
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from anyformer.api import Model
from anyformer.core.cli.errors import one_line

STRATEGIES = ("greedy", "top-k", "top-p", "beam")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
TOP_K = 5
"""Labels a classifier tab shows at first."""
ATTENTION_HEIGHT = 560
"""Pixels an attention figure is shown at (the full size opens with the image's own button)."""
FRAME_MS = 60
"""Time each frame of an episode shows in its animation."""
FRAME_WIDTH = 360
"""Pixels across a frame of the animation at least (small drawings are enlarged)."""

KINDS: dict[str, str] = {
    "gpt": "generate", "lstm": "generate",
    "seq2seq": "translate", "gru-seq2seq": "translate",
    "bert-classify": "text", "text-bow": "text",
    "vit": "image", "vision-cnn": "image",
    "speech": "audio", "speech-cnn": "audio",
    "dt": "play",
}  # fmt: skip
"""Checkpoint task -> the kind of tab that serves it (what it takes and shows)."""


@dataclass
class Served:
    """One checkpoint the app serves."""

    model: Model
    name: str
    """The run's name (``runs/NAME/checkpoints/last.ckpt``), else the file's stem: the tab's title."""
    path: Path
    max_bytes: int
    """The largest upload accepted."""

    @property
    def slug(self) -> str:
        """``name`` as a page element id (letters, digits, ``-``)."""
        return re.sub(r"[^A-Za-z0-9]+", "-", self.name).strip("-") or "model"


# -- handlers --------------------------------------------------------------------------------
def shown(handler: Callable) -> Callable:
    """Turn an input error (``ValueError``, ``UsageError``, ``OSError``) of ``handler`` into
    ``gradio.Error``: one line in the page instead of a failed request."""

    def error(err: BaseException) -> gr.Error:
        return gr.Error(one_line(err), print_exception=False)

    if _is_generator(handler):

        @functools.wraps(handler)
        def stream(*args: Any) -> Iterator[Any]:
            try:
                yield from handler(*args)
            except (ValueError, OSError) as err:
                raise error(err) from None

        return stream

    @functools.wraps(handler)
    def run(*args: Any) -> Any:
        try:
            return handler(*args)
        except (ValueError, OSError) as err:
            raise error(err) from None

    return run


def _is_generator(function: Callable) -> bool:
    return inspect.isgeneratorfunction(function)


def generate(
    served: Served,
    prompt: str,
    strategy: str,
    max_new_tokens: float,
    temperature: float,
    top_k: float,
    top_p: float,
    beams: float,
    seed: float | None,
) -> Iterator[str]:
    """The prompt and its continuation, growing as tokens arrive (beam search: at once)."""
    if not (prompt or "").strip():
        raise ValueError("the prompt is empty: type some text for the model to continue")
    options = dict(
        max_new_tokens=int(max_new_tokens), strategy=strategy, temperature=float(temperature), top_k=int(top_k),
        top_p=float(top_p), beams=int(beams), seed=None if seed is None else int(seed),
    )  # fmt: skip
    if strategy == "beam":
        yield prompt + served.model.generate(prompt, **options)
        return
    text = prompt
    for piece in served.model.generate(prompt, stream=True, **options):
        text += piece
        yield text


def translate(served: Served, source: str, beams: float) -> tuple[str, Image.Image | None]:
    """The translation (beam search, or greedy with 1 beam) and the attention over it, cross-attention included."""
    if not (source or "").strip():
        raise ValueError("the source sentence is empty: type a sentence to translate")
    [translation] = served.model.translate(source, beam_size=int(beams))
    figure = None
    if "attention" in served.model.methods:
        given = f"{source} ||| {translation}" if translation.strip() else source
        figure = figure_image(served.model.attention(given))
    return translation, figure


def classify_text(served: Served, text: str, top_k: float) -> tuple[dict[str, float], Image.Image | None]:
    """Label probabilities of a sentence, and its attention."""
    if not (text or "").strip():
        raise ValueError("the text is empty: type a sentence to classify")
    [labels] = served.model.classify([text], top_k=int(top_k))
    figure = figure_image(served.model.attention(text)) if "attention" in served.model.methods else None
    return dict(labels), figure


def classify_image(
    served: Served, upload: str | None, sketch: Any, top_k: float
) -> tuple[dict[str, float], Image.Image | None]:
    """Top-k labels of an uploaded (or, without one, drawn) image, and its attention rollout."""
    if upload:
        path = checked_upload(upload, IMAGE_SUFFIXES, "an image", served.max_bytes)
        return _classify_file(served, path, top_k)
    drawing = sketch_image(sketch)
    if drawing is None:
        raise ValueError("no image: upload an image file or draw one")
    with tempfile.TemporaryDirectory(prefix="anyformer-app-") as folder:
        path = Path(folder) / "drawing.png"
        drawing.save(path)
        return _classify_file(served, path, top_k)


def classify_audio(
    served: Served, upload: str | None, recording: str | None, top_k: float
) -> tuple[dict[str, float], Image.Image | None]:
    """Top-k labels of an uploaded (or, without one, recorded) clip, its log-mel spectrogram and rollout."""
    if not upload and not recording:
        raise ValueError("no clip: upload an audio file or record one")
    path = checked_upload(upload or recording, AUDIO_SUFFIXES, "an audio file", served.max_bytes)
    return _classify_file(served, path, top_k)


def _classify_file(served: Served, upload: Path, top_k: float) -> tuple[dict[str, float], Image.Image | None]:
    with tempfile.TemporaryDirectory(prefix="anyformer-") as folder:  # a short path for the figure's title
        path = Path(folder) / upload.name
        shutil.copyfile(upload, path)
        try:
            [labels] = served.model.classify([path], top_k=int(top_k))
            figure = figure_image(served.model.attention(path)) if "attention" in served.model.methods else None
        except (ValueError, OSError) as err:  # the message names the temporary copy: name the file
            raise type(err)(str(err).replace(str(path), path.name)) from None
    return dict(labels), figure


def play(
    served: Served, target_return: float | None, seed: float | None, greedy: bool, max_steps: float | None
) -> tuple[str | None, str]:
    """One episode conditioned on ``target_return``: its animation (a GIF file) and a line with the return."""
    if target_return is None:
        raise ValueError("no target return: type the return the episode should reach")
    episode = served.model.play(
        float(target_return), int(seed or 0), greedy=bool(greedy), max_steps=int(max_steps) if max_steps else None
    )
    animation = None
    if episode.frames:
        with tempfile.NamedTemporaryFile(prefix="episode-", suffix=".gif", dir=_outputs(), delete=False) as file:
            frames = [_enlarged(Image.fromarray(frame)) for frame in episode.frames]
            frames[0].save(file, format="GIF", save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0)
        animation = file.name  # Gradio copies it to its cache once returned
    line = (
        f"return achieved: **{episode.episode_return:g}** in {episode.steps} steps (target {episode.target_return:g})"
    )
    return animation, line


@functools.cache
def _outputs() -> str:
    """A folder for the files the page shows, removed when the process ends."""
    folder = tempfile.TemporaryDirectory(prefix="anyformer-app-")
    _FOLDERS.append(folder)  # kept alive until exit, then cleaned up
    return folder.name


_FOLDERS: list[tempfile.TemporaryDirectory] = []


def _enlarged(frame: Image.Image) -> Image.Image:
    scale = max(1, -(-FRAME_WIDTH // frame.width))  # ceil
    return frame.resize((frame.width * scale, frame.height * scale), Image.Resampling.NEAREST)


def checked_upload(path: str | Path, suffixes: tuple[str, ...], kind: str, max_bytes: int) -> Path:
    """``path`` if it names a file of one of ``suffixes`` and at most ``max_bytes``; else ValueError."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{path.name} is not {kind}: give a {', '.join(suffixes)} file")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path.name} is {size / 1e6:.1f} MB, more than the {max_bytes / 1e6:g} MB an upload may be")
    return path


def sketch_image(sketch: Any) -> Image.Image | None:
    """The drawing of a ``gr.Sketchpad`` as light ink on a dark ground (as MNIST's digits), or None
    when nothing was drawn. Strokes may be dark on a light canvas or on a transparent one."""
    composite = sketch.get("composite") if isinstance(sketch, dict) else sketch
    if composite is None:
        return None
    image = composite if isinstance(composite, Image.Image) else Image.open(composite)
    ground = Image.new("RGBA", image.size, (255, 255, 255, 255))
    gray = np.asarray(Image.alpha_composite(ground, image.convert("RGBA")).convert("L"))
    if gray.min() == gray.max():
        return None
    return Image.fromarray(255 - gray if gray.mean() > 127 else gray)


def figure_image(figure: Any) -> Image.Image:
    """A matplotlib figure as an RGB image."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


# -- the run's record --------------------------------------------------------------------------
def run_dir(path: Path) -> Path | None:
    """``runs/NAME`` of ``runs/NAME/checkpoints/X.ckpt``; None for a checkpoint elsewhere."""
    path = Path(path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def final_metrics(path: Path) -> dict[str, float]:
    """The last logged value of every column of a Lightning ``metrics.csv``."""
    last: dict[str, float] = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            for key, value in row.items():
                if key and value not in (None, ""):
                    try:
                        last[key] = float(value)
                    except ValueError:
                        continue
    return last


def metadata_panel(served: Served) -> None:
    """The checkpoint, the run's config, final metrics and ``run.json``, each as written."""
    folder = run_dir(served.path)
    gr.Markdown(f"**{served.name}**: `{served.model.task}` checkpoint `{served.path}`", elem_id=f"{served.slug}-record")
    if folder is None:
        gr.Markdown("(not inside a `runs/NAME/checkpoints/` folder: no run record beside it)")
        return
    metrics = folder / "metrics.csv"
    if not any((folder / name).is_file() for name in ("metrics.csv", "config.yaml", "run.json")):
        gr.Markdown(f"(no metrics.csv, config.yaml or run.json in `{folder}`)")
        return
    if metrics.is_file():
        with gr.Accordion("final metrics (metrics.csv)", open=True):
            gr.JSON(final_metrics(metrics))
    config = folder / "config.yaml"
    if config.is_file():
        with gr.Accordion("config.yaml", open=False):
            gr.Code(config.read_text(encoding="utf-8", errors="replace"), language="yaml")
    record = folder / "run.json"
    if record.is_file():
        with gr.Accordion("run.json", open=False):
            try:
                gr.JSON(json.loads(record.read_text(encoding="utf-8")))
            except ValueError as err:
                gr.Markdown(f"run.json is unreadable: {one_line(err)}")


# -- layout ----------------------------------------------------------------------------------
def add_tab(served: Served) -> None:
    """One tab for ``served``: its task's inputs and outputs on the left, the run's record on the right."""
    task = served.model.task
    title = served.name if task.replace("-", "_") in served.name else f"{served.name} ({task})"
    with gr.Tab(title, elem_id=f"{served.slug}-tab"):
        with gr.Row():
            with gr.Column(scale=3):
                BUILDERS[KINDS[served.model.task]](served)
            with gr.Column(scale=2):
                metadata_panel(served)


def _ids(served: Served) -> Callable[[str], str]:
    return lambda role: f"{served.slug}-{role}"


def _generate_tab(served: Served) -> None:
    eid = _ids(served)
    prompt = gr.Textbox(label="prompt", lines=3, elem_id=eid("prompt"))
    with gr.Row():
        strategy = gr.Radio(list(STRATEGIES), value="top-k", label="strategy", elem_id=eid("strategy"))
        max_new = gr.Slider(1, 400, value=100, step=1, label="new tokens", elem_id=eid("max-new-tokens"))
    with gr.Accordion("knobs", open=False):
        with gr.Row():
            temperature = gr.Slider(0.05, 2.0, value=1.0, step=0.05, label="temperature (top-k, top-p)")
            top_k = gr.Slider(1, 200, value=50, step=1, label="top-k")
            top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top-p")
            beams = gr.Slider(1, 8, value=4, step=1, label="beams (beam)")
            seed = gr.Number(value=0, precision=0, label="seed")
    button = gr.Button("Generate", variant="primary", elem_id=eid("run"))
    output = gr.Textbox(label="prompt + continuation", lines=8, elem_id=eid("output"))
    inputs = [prompt, strategy, max_new, temperature, top_k, top_p, beams, seed]
    button.click(_bound(generate, served), inputs, output)


def _translate_tab(served: Served) -> None:
    eid = _ids(served)
    source = gr.Textbox(label="source sentence", lines=2, elem_id=eid("source"))
    beams = gr.Slider(1, 8, value=4, step=1, label="beams (1: greedy)", elem_id=eid("beams"))
    button = gr.Button("Translate", variant="primary", elem_id=eid("run"))
    translation = gr.Textbox(label="translation", elem_id=eid("output"))
    figure = _figure(served, "attention (cross-attention: last panel)")
    button.click(_bound(translate, served), [source, beams], [translation, figure])


def _text_tab(served: Served) -> None:
    text = gr.Textbox(label="text", lines=2, elem_id=_ids(served)("text"))
    _classify_below(served, classify_text, [text], "label probabilities", "attention of the last layer")


def _image_tab(served: Served) -> None:
    eid = _ids(served)
    with gr.Row():
        upload = gr.File(label="upload an image", file_types=list(IMAGE_SUFFIXES), elem_id=eid("upload"))
        sketch = gr.Sketchpad(label="or draw one", type="pil", elem_id=eid("sketch"))
    _classify_below(served, classify_image, [upload, sketch], "top labels", "attention rollout over the patches")


def _audio_tab(served: Served) -> None:
    eid = _ids(served)
    with gr.Row():
        upload = gr.File(label="upload a clip", file_types=list(AUDIO_SUFFIXES), elem_id=eid("upload"))
        recording = gr.Audio(label="or record one", sources=["microphone"], type="filepath", elem_id=eid("record"))
    _classify_below(served, classify_audio, [upload, recording], "top labels", "log-mel spectrogram and rollout")


def _classify_below(
    served: Served, classify: Callable, inputs: list[gr.Component], labels_label: str, figure_label: str
) -> None:
    """What every classifier tab shows below its inputs: the top-k slider, the Classify button, the labels
    and the attention figure; the button calls ``classify(served, *inputs, top_k)``."""
    eid = _ids(served)
    top_k = _top_k(served)
    button = gr.Button("Classify", variant="primary", elem_id=eid("run"))
    labels = gr.Label(label=labels_label, elem_id=eid("labels"))
    figure = _figure(served, figure_label)
    button.click(_bound(classify, served), [*inputs, top_k], [labels, figure])


def _play_tab(served: Served) -> None:
    eid = _ids(served)
    with gr.Row():
        target = gr.Number(value=200, label="target return", elem_id=eid("target"))
        seed = gr.Number(value=0, precision=0, label="seed", elem_id=eid("seed"))
        max_steps = gr.Number(value=0, precision=0, minimum=0, label="max steps (0: the environment's limit)")
        greedy = gr.Checkbox(label="greedy actions", value=False)
    button = gr.Button("Play an episode", variant="primary", elem_id=eid("run"))
    result = gr.Markdown(elem_id=eid("return"))
    animation = gr.Image(label="the episode", type="filepath", elem_id=eid("animation"))
    button.click(_bound(play, served), [target, seed, greedy, max_steps], [animation, result])


def _figure(served: Served, label: str) -> gr.Image:
    """Where an attention figure is shown."""
    return gr.Image(label=label, type="pil", height=ATTENTION_HEIGHT, elem_id=f"{served.slug}-attention")


def _top_k(served: Served) -> gr.Slider:
    classes = len(getattr(served.model.module, "class_names", None) or []) or 10
    top_k = min(TOP_K, classes)
    return gr.Slider(1, classes, value=top_k, step=1, label="labels shown", elem_id=f"{served.slug}-top-k")


def _bound(handler: Callable, served: Served) -> Callable:
    """``handler`` with ``served`` as its first argument, reporting input errors in the page."""
    wrapped = shown(handler)
    if _is_generator(handler):

        def stream(*args: Any) -> Iterator[Any]:
            yield from wrapped(served, *args)

        return stream
    return lambda *args: wrapped(served, *args)


BUILDERS: dict[str, Callable[[Served], None]] = {
    "generate": _generate_tab,
    "translate": _translate_tab,
    "text": _text_tab,
    "image": _image_tab,
    "audio": _audio_tab,
    "play": _play_tab,
}
"""Kind of tab (:data:`KINDS`) -> what lays it out."""
