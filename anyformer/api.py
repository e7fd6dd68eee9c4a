"""The Python front door: a checkpoint in, a model with text-, image- and audio-level methods out.

    import anyformer

    gpt = anyformer.load("runs/gpt_demo/checkpoints/last.ckpt")
    gpt.generate("The ", max_new_tokens=40, strategy="greedy")          # -> str
    for piece in gpt.generate("The ", max_new_tokens=40, stream=True):  # -> text pieces as they come
        print(piece, end="")

    vit = anyformer.load("runs/vit_digits/checkpoints/last.ckpt")
    vit.classify(["digit.png"], top_k=3)                                # -> [[(label, prob), ...]]

Which method applies depends on the checkpoint's task (:data:`METHODS`); the others raise
:class:`TaskMismatchError`. Every method reproduces its command's output: ``generate`` is
``anyformer generate``, ``classify`` is ``anyformer classify``, ``translate`` is ``anyformer
translate`` and ``rollout`` is ``anyformer rollout``, all built from the same domain functions.
Like the CLI layer, this module may import every domain; it names tasks by string
(``anyformer.core.cli.tasks.TASKS``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from anyformer.core.cli.errors import UsageError
from anyformer.core.decoding import GenerationConfig, beam_search, stream_tokens
from anyformer.core.train.base import TaskModule
from anyformer.core.train.checkpoint import CheckpointError, load_task

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "CheckpointError", "Model", "TaskMismatchError", "load"]

METHODS: dict[str, tuple[str, ...]] = {
    "generate": ("gpt", "lstm"),
    "classify": ("vit", "vision-cnn", "bert-classify", "text-bow", "speech", "speech-cnn"),
    "translate": ("seq2seq", "gru-seq2seq"),
    "rollout": ("dt",),
}
"""Method -> the checkpoint tasks it serves."""

IMAGE_TASKS = ("vit", "vision-cnn")
TEXT_TASKS = ("bert-classify", "text-bow")
AUDIO_TASKS = ("speech", "speech-cnn")


class TaskMismatchError(UsageError):
    """A method called on a checkpoint of a task it does not serve (``generate`` on a ViT)."""


def load(path: str | Path, *, map_location: Any = None, device: Any = None) -> Model:
    """Load a checkpoint written by ``anyformer <task> fit`` as a :class:`Model`, in eval mode.

    Args:
        path: the ``.ckpt`` file (e.g. ``runs/gpt_demo/checkpoints/last.ckpt``).
        map_location: where the weights go (a device, ``"cpu"``, ``"cuda:0"``); as in ``torch.load``,
            but only a single device.
        device: the same as ``map_location`` (give one of the two). Default: the CPU.

    Raises:
        CheckpointError: a missing, unreadable or non-anyformer file, or a task this version does
            not know (one line naming the file).
        ValueError: both ``map_location`` and ``device``, differing.
    """
    if map_location is not None and device is not None and torch.device(map_location) != torch.device(device):
        raise ValueError(f"give map_location or device, not both ({map_location!r} != {device!r})")
    target = device if device is not None else map_location
    if isinstance(target, dict) or callable(target):
        raise ValueError(f"map_location must name one device (e.g. 'cpu', 'cuda:0'), got {target!r}")
    module = load_task(path)  # on the CPU, eval mode, inference state restored
    if target is not None:
        module = module.to(torch.device(target))
    return Model(module, path=Path(path))


class Model:
    """A trained task, with the methods of its domain.

    Attributes:
        task: the task name (``"gpt"``, ``"vit"``, ...).
        module: the LightningModule (``anyformer.core.train.base.TaskModule``).
        model: the network (``module.model``).
        config: the network's config dataclass (``module.config``).
    """

    def __init__(self, module: TaskModule, path: Path | None = None) -> None:
        self.module = module.eval()
        self.task: str = module.task_name
        self.path = path

    @property
    def model(self) -> torch.nn.Module:
        return self.module.model

    @property
    def config(self) -> Any:
        return self.module.config

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this checkpoint's task serves."""
        return tuple(method for method, tasks in METHODS.items() if self.task in tasks)

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        return f"<anyformer.Model {self.task!r}{where} on {self.device}; methods: {', '.join(self.methods) or 'none'}>"

    def _require(self, method: str) -> None:
        if self.task not in METHODS[method]:
            served = ", ".join(self.methods) or "no method of the Python API (use .module)"
            raise TaskMismatchError(
                f"{method}() needs a {' / '.join(METHODS[method])} checkpoint; this is a {self.task!r} "
                f"checkpoint, which serves: {served}"
            )

    # -- text generation -------------------------------------------------------------
    def generate(
        self,
        prompt: str = "",
        *,
        max_new_tokens: int = 200,
        strategy: str = "top-k",
        temperature: float = 1.0,
        top_k: int = 50,
        top_p: float = 0.9,
        beams: int = 4,
        length_penalty: float = 1.0,
        repetition_penalty: float = 1.0,
        stop_at_eos: bool = False,
        seed: int | None = None,
        stream: bool = False,
    ) -> str | Iterator[str]:
        """Continue ``prompt``, as ``anyformer generate`` does with the same options.

        Args:
            prompt: text to continue (empty: start from ``<|endoftext|>``).
            max_new_tokens: tokens to add.
            strategy: ``greedy``, ``sample``, ``top-k``, ``top-p`` or ``beam``.
            temperature, top_k, top_p, repetition_penalty: sampling options
                (``anyformer.core.decoding.GenerationConfig``).
            beams, length_penalty: beam-search options.
            stop_at_eos: stop when the model emits ``<|endoftext|>``.
            seed: seed of the sampler (the same seed gives the same text).
            stream: return an iterator of text pieces as tokens arrive instead of the whole text.

        Returns:
            The continuation, without the prompt (the command prints ``prompt + continuation``).
            With ``stream=True`` an iterator whose pieces join to that text; a token that ends
            inside a multi-byte character is held back until the character is complete. For
            ``beam`` the best hypothesis (streaming is not possible there).

        Raises:
            TaskMismatchError: not a ``gpt``/``lstm`` checkpoint.
            ValueError: a bad option, or a prompt the tokenizer cannot encode.
        """
        self._require("generate")
        tokenizer = self.module.tokenizer
        if tokenizer is None:
            raise CheckpointError(f"{self.path or 'the checkpoint'} holds no tokenizer")
        cfg = GenerationConfig(
            strategy=strategy, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            beams=beams, length_penalty=length_penalty, repetition_penalty=repetition_penalty,
            eos_id=tokenizer.eos_id if stop_at_eos else None,
        )  # fmt: skip
        prompt_t = torch.tensor([tokenizer.encode(prompt) or [tokenizer.eos_id]], device=self.device)  # (1, T)
        if cfg.strategy == "beam":
            if stream:
                raise ValueError("beam search ranks whole hypotheses: it cannot stream; use stream=False")
            with torch.inference_mode():
                best = beam_search(self.model, prompt_t, cfg)[0][0]
            return tokenizer.decode(best.tokens)
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        pieces = _text_pieces(self.model, tokenizer, prompt_t, cfg, generator)
        return pieces if stream else "".join(pieces)

    # -- classification --------------------------------------------------------------
    def classify(self, inputs: Any, top_k: int = 1) -> list[list[tuple[str, float]]]:
        """The ``top_k`` most probable labels of each input, as ``anyformer classify`` computes them.

        Args:
            inputs: one input or a list of them.
                Text classifiers (``bert-classify``, ``text-bow``): strings.
                Image classifiers (``vit``, ``vision-cnn``): image files, PIL images, or float tensors
                of pixels in [0, 1], (C, H, W) or (B, C, H, W); they are resized to the model's image
                size and normalized like the training data.
                Audio classifiers (``speech``, ``speech-cnn``): audio files (any rate and channel
                count), or waveforms at the model's sample rate (1-D tensors or numpy arrays, or a
                (B, samples) batch); the middle of a long clip is kept, a short one is centred.
            top_k: labels per input (at most the number of classes).

        Returns:
            Per input (per image of a batch tensor), ``[(label, probability), ...]``, most probable first.

        Raises:
            TaskMismatchError: not a classifier checkpoint.
            UsageError: an unreadable file (the message names it).
            ValueError: an input of the wrong kind or shape.
        """
        self._require("classify")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if self.task in TEXT_TASKS:
            return _classify_text(self.module, items, top_k)
        if self.task in IMAGE_TASKS:
            return _classify_images(self.module, items, top_k)
        return _classify_audio(self.module, items, top_k)

    # -- translation -----------------------------------------------------------------
    def translate(
        self,
        sentences: str | Sequence[str],
        *,
        beam_size: int = 4,
        max_len: int | None = None,
        length_penalty: float | None = None,
        batch_size: int = 64,
    ) -> list[str]:
        """Translate sentences, as ``anyformer translate`` does.

        Args:
            sentences: one sentence or a list of them.
            beam_size: beam width; 1 is greedy decoding (``--strategy greedy``).
            max_len: at most this many target tokens (default: the source length plus a margin,
                never more than the decoder's window).
            length_penalty: beam hypotheses are ranked by log_prob / length**length_penalty
                (default: the checkpoint's).
            batch_size: sentences translated together.

        Returns:
            One translation per sentence, in order. A sentence longer than the encoder's window is
            cropped, with a warning.
        """
        self._require("translate")
        if beam_size < 1 or batch_size < 1 or (max_len is not None and max_len < 1):
            raise ValueError("beam_size, batch_size and max_len must be >= 1")
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        strategy = "greedy" if beam_size == 1 else "beam"
        penalty = self.module.length_penalty if length_penalty is None else length_penalty
        return _translate(self.module, texts, strategy, beam_size, penalty, max_len, batch_size)

    # -- reinforcement learning ------------------------------------------------------
    def rollout(
        self,
        target_return: float,
        episodes: int = 1,
        seed: int = 0,
        *,
        env: str | None = None,
        greedy: bool = False,
        max_steps: int | None = None,
    ) -> list[float]:
        """Play episodes conditioned on ``target_return``, as ``anyformer rollout`` does.

        Args:
            target_return: the return asked for at the first step.
            episodes: episodes played side by side; episode i is reset with seed ``seed + i``.
            seed: also seeds the action sampler.
            env: environment id (default: the one the training data came from).
            greedy: take the most likely action instead of sampling one.
            max_steps: stop an episode after this many steps.

        Returns:
            The return of each episode.
        """
        self._require("rollout")
        from anyformer.rl.envs import make_env
        from anyformer.rl.rollout import check_env, rollout

        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        if self.device.type != "cpu":
            raise ValueError("rollout feeds the policy CPU tensors; load the checkpoint with device='cpu'")
        env_id = env or self.module.env_id
        if env_id is None:
            raise CheckpointError(f"{self.path or 'the checkpoint'} does not name its environment; pass env=")
        envs = [make_env(env_id) for _ in range(episodes)]
        try:
            check_env(envs[0], env_id, self.module.inference_state(), self.config)
            generator = torch.Generator().manual_seed(seed)
            seeds = [seed + i for i in range(episodes)]
            histories = rollout(self.model, envs, target_return, seeds, max_steps, greedy=greedy, generator=generator)
        finally:
            for opened in envs:
                opened.close()
        return [history.episode_return for history in histories]


# -- generation ----------------------------------------------------------------------
def _text_pieces(
    model: torch.nn.Module, tokenizer: Any, prompt: Tensor, cfg: GenerationConfig, generator: torch.Generator | None
) -> Iterator[str]:
    """Decoded text as tokens arrive (``anyformer generate``'s printer): the ids so far are decoded
    and the new characters yielded, unless the text ends in a partial character."""
    tokens = stream_tokens(model, prompt, cfg, generator)
    ids: list[int] = []
    shown = 0
    while True:
        with torch.inference_mode():  # per step: the caller's code between pieces runs outside it
            next_ids = next(tokens, None)
        if next_ids is None:
            return
        ids.append(int(next_ids[0]))
        text = tokenizer.decode(ids)
        if not text.endswith("\ufffd") and len(text) > shown:
            yield text[shown:]
            shown = len(text)


# -- classification ------------------------------------------------------------------
class _OnDevice:
    """A sentence classifier whose ``batch_logits`` moves the (CPU) batch to the module's device."""

    def __init__(self, module: TaskModule) -> None:
        self._module = module
        self._device = next(module.parameters()).device

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def batch_logits(self, batch: dict[str, Tensor]) -> Tensor:
        return self._module.batch_logits({key: value.to(self._device) for key, value in batch.items()})


def _classify_text(module: TaskModule, items: list[Any], top_k: int) -> list[list[tuple[str, float]]]:
    from anyformer.text.classify import classify_text

    if not all(isinstance(item, str) for item in items):
        kinds = sorted({type(item).__name__ for item in items if not isinstance(item, str)})
        raise ValueError(f"a {module.task_name!r} classifier takes strings, got {', '.join(kinds)}")
    return classify_text(_OnDevice(module), items, top_k)


def _top_labels(module: TaskModule, logits: Tensor, top_k: int) -> list[list[tuple[str, float]]]:
    """(B, C) logits -> per row the ``top_k`` (class name, probability) pairs, best first."""
    probs, indices = logits.float().softmax(dim=-1).topk(min(top_k, logits.shape[-1]), dim=-1)
    return [
        [(module.class_names[i], p) for p, i in zip(row_p, row_i)]
        for row_p, row_i in zip(probs.tolist(), indices.tolist())
    ]


def _classify_images(module: TaskModule, items: list[Any], top_k: int) -> list[list[tuple[str, float]]]:
    from PIL import Image

    from anyformer.vision.classify import read_image, to_tensor

    cfg = module.model.cfg
    size = tuple(cfg.image_size) if isinstance(cfg.image_size, (tuple, list)) else (cfg.image_size,) * 2  # (H, W)
    patch_size = getattr(cfg, "patch_size", 1)
    batches = []
    for item in items:
        if isinstance(item, (str, Path)):
            batches.append(to_tensor(read_image(item, cfg.in_channels, size, patch_size), module.mean, module.std))
        elif isinstance(item, Image.Image):
            mode = {1: "L", 3: "RGB"}[cfg.in_channels]
            image = item.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
            batches.append(to_tensor(image, module.mean, module.std))
        elif isinstance(item, Tensor):
            batches.append(_normalize_pixels(item, cfg.in_channels, size, module.mean, module.std))
        else:
            raise ValueError(f"an image classifier takes files, PIL images or tensors, got {type(item).__name__}")
    if not batches:
        return []
    pixels = torch.cat(batches).to(module.device)  # (B, C, H, W)
    with torch.inference_mode():
        return _top_labels(module, module.model(pixels), top_k)


def _normalize_pixels(
    pixels: Tensor, channels: int, size: tuple[int, int], mean: list[float], std: list[float]
) -> Tensor:
    """(C, H, W) or (B, C, H, W) pixels in [0, 1] -> (B, C, H', W') at the model's size, normalized."""
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[1] != channels:
        raise ValueError(
            f"an image tensor must be (C, H, W) or (B, C, H, W) with C={channels}, got shape {tuple(pixels.shape)}"
        )
    pixels = pixels.detach().float().cpu()
    if tuple(pixels.shape[-2:]) != size:
        pixels = torch.nn.functional.interpolate(pixels, size=size, mode="bilinear", antialias=True)
    mean_t, std_t = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return (pixels - mean_t) / std_t


def _classify_audio(module: TaskModule, items: list[Any], top_k: int) -> list[list[tuple[str, float]]]:
    from anyformer.speech.audio import fit_duration
    from anyformer.speech.classify import load_clip

    n_samples = module.config.spectrogram.n_samples
    waves = []
    for item in items:
        if isinstance(item, (str, Path)):
            waves.append(load_clip(item, module))
            continue
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.asarray(item, dtype=np.float32))
        if not isinstance(item, Tensor) or item.ndim not in (1, 2):
            shape = f" of shape {tuple(item.shape)}" if hasattr(item, "shape") else ""
            raise ValueError(
                f"an audio classifier takes files, 1-D waveforms or (B, samples) batches, got {type(item).__name__}"
                f"{shape}"
            )
        rows = item[None] if item.ndim == 1 else item
        waves += [fit_duration(row.detach().float().cpu(), n_samples, "center") for row in rows]
    if not waves:
        return []
    with torch.inference_mode():
        return _top_labels(module, module.model(torch.stack(waves).to(module.device)), top_k)  # (B, samples)


# -- translation ---------------------------------------------------------------------
def _translate(
    module: TaskModule,
    texts: list[str],
    strategy: str,
    beams: int,
    length_penalty: float,
    max_len: int | None,
    batch_size: int,
) -> list[str]:
    """``Seq2SeqModule.translate`` with a target-length cap (the module's method has none yet)."""
    from anyformer.text.seq2seq.data import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, encode_source, pad_ids
    from anyformer.text.seq2seq.seq2seq import translate_ids

    if module.src_tokenizer is None or module.tgt_tokenizer is None:
        raise CheckpointError("the checkpoint holds no tokenizers (not written by `anyformer seq2seq fit`)")
    src, tgt = module.src_tokenizer, module.tgt_tokenizer
    window = module.model.max_source_len
    encoded, cropped = encode_source(src, texts, window)
    for i in cropped:
        logger.warning(
            "sentence %d is longer than the model's source window of %d tokens (EOS included): "
            "only its first %d tokens are translated",
            i + 1, window, window - 1,
        )  # fmt: skip
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths batch well
    out = [""] * len(encoded)
    device = next(module.model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            source, keep = pad_ids([encoded[i] for i in chunk], src.token_id(PAD_TOKEN))  # (B, S)
            rows = translate_ids(
                module.model, source.to(device), keep.to(device), bos_id=tgt.token_id(BOS_TOKEN),
                eos_id=tgt.token_id(EOS_TOKEN), strategy=strategy, beams=beams, length_penalty=length_penalty,
                max_new_tokens=max_len,
            )  # fmt: skip
            for i, row in zip(chunk, rows):
                out[i] = module.detokenize(row)
    return out
