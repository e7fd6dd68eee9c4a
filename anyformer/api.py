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
translate``, ``rollout`` is ``anyformer rollout`` (``play``: one episode with its frames, as
``--frames`` draws them) and ``attention`` is ``anyformer attention``, all built from the same domain
functions. ``anyformer app`` serves these methods in a web page.
Like the CLI layer, this module may import every domain; it names tasks by string
(``anyformer.core.cli.tasks.TASKS``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from anyformer.adapters import (
    classify_audio,
    classify_images,
    classify_text,
    episode_frames,
    text_pieces,
    translate_sentences,
)
from anyformer.core.cli.errors import UsageError
from anyformer.core.decoding import GenerationConfig, beam_search
from anyformer.core.train.base import TaskModule
from anyformer.core.train.checkpoint import CheckpointError, load_task

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "CheckpointError", "Episode", "Model", "TaskMismatchError", "load"]

METHODS: dict[str, tuple[str, ...]] = {
    "generate": ("gpt", "lstm", "dpo"),
    "classify": ("vit", "vision-cnn", "bert-classify", "text-bow", "speech", "speech-cnn"),
    "translate": ("seq2seq", "gru-seq2seq"),
    "rollout": ("dt",),
    "play": ("dt",),
    "attention": ("gpt", "bert", "bert-classify", "seq2seq", "vit", "speech", "dt"),
}
"""Method -> the checkpoint tasks it serves (``attention``: those of ``anyformer attention``'s ``FIGURES``)."""

IMAGE_TASKS = ("vit", "vision-cnn")
TEXT_TASKS = ("bert-classify", "text-bow")
AUDIO_TASKS = ("speech", "speech-cnn")


class TaskMismatchError(UsageError):
    """A method called on a checkpoint of a task it does not serve (``generate`` on a ViT)."""


@dataclass
class Episode:
    """One episode played by a Decision Transformer (:meth:`Model.play`)."""

    target_return: float
    """The return asked for at the first step."""
    episode_return: float
    """The return achieved."""
    steps: int
    """Steps taken."""
    frames: list[np.ndarray] = field(default_factory=list)
    """(H, W, 3) uint8 RGB drawing of each observation, first to last (as ``anyformer rollout --frames``
    draws them); empty for observations that cannot be drawn (vector environments other than CartPole)."""


def load(path: str | Path, *, map_location: Any = None, device: Any = None) -> Model:
    """Load a checkpoint written by ``anyformer <task> fit`` as a :class:`Model`, in eval mode.

    Args:
        path: the ``.ckpt`` file (e.g. ``runs/gpt_demo/checkpoints/last.ckpt``), or a folder written
            by ``anyformer export --format safetensors`` (the same model, read without pickle).
        map_location: where the weights go (a device, ``"cpu"``, ``"cuda:0"``); as in ``torch.load``,
            but only a single device.
        device: the same as ``map_location`` (give one of the two). Default: the CPU.

    Raises:
        CheckpointError: a missing, unreadable or non-anyformer file or folder, or a task this
            version does not know (one line naming the file).
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
        pieces = text_pieces(self.model, tokenizer, prompt_t, cfg, generator)
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
            return classify_text(self.module, items, top_k)
        if self.task in IMAGE_TASKS:
            return classify_images(self.module, items, top_k)
        return classify_audio(self.module, items, top_k)

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
        return translate_sentences(self.module, texts, strategy, beam_size, penalty, max_len, batch_size)

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
        histories, _ = self._play(target_return, episodes, seed, env, greedy, max_steps)
        return [history.episode_return for history in histories]

    def play(
        self,
        target_return: float,
        seed: int = 0,
        *,
        env: str | None = None,
        greedy: bool = False,
        max_steps: int | None = None,
    ) -> Episode:
        """Play one episode conditioned on ``target_return`` and draw its frames.

        The episode is the one ``rollout(target_return, episodes=1, seed=seed, ...)`` plays (the same
        return), and its frames are those ``anyformer rollout --frames`` draws, every step of them.

        Args: as :meth:`rollout`.

        Returns:
            The :class:`Episode`: returns, length and frames.
        """
        self._require("play")
        histories, env_id = self._play(target_return, 1, seed, env, greedy, max_steps)
        history = histories[0]
        frames = episode_frames(history.states, env_id)
        return Episode(float(target_return), history.episode_return, len(history), frames)

    def _play(
        self, target_return: float, episodes: int, seed: int, env: str | None, greedy: bool, max_steps: int | None
    ) -> tuple[list[Any], str]:
        """The histories (``anyformer.rl.rollout.EpisodeHistory``) of ``episodes`` episodes, and the environment id."""
        from anyformer.rl.envs import make_env
        from anyformer.rl.rollout import check_env, rollout

        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
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
        return histories, env_id

    # -- attention -------------------------------------------------------------------
    def attention(self, source: str | Path | None = None, *, layer: int | None = None) -> Figure:
        """The figure ``anyformer attention`` draws for ``source`` (a matplotlib ``Figure``).

        Args:
            source: a sentence (``gpt``, ``bert``, ``bert-classify``; ``seq2seq``: a source, or
                ``"source ||| target"`` for the attention over a given translation), an image file
                (``vit``), an audio file (``speech``) or a trajectories ``.npz`` (``dt``); None: the
                command's default input.
            layer: 1-based layer (None: the last); for ``vit`` and ``speech`` the rollout runs
                through layers 1..layer.

        Raises:
            TaskMismatchError: a task ``anyformer attention`` does not draw.
            UsageError: a bad input or layer (the message names it).
        """
        self._require("attention")
        from anyformer.core.cli.attention import FIGURES
        from anyformer.core.cli.tasks import resolve

        return resolve(FIGURES[self.task])(self.module, None if source is None else str(source), layer)


# -- generation ----------------------------------------------------------------------
