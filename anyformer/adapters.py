"""What ``anyformer.api.Model``'s methods are made of, per domain: text pieces streamed from a GPT,
the classification of strings, images and audio, and translation, built from the domains' own
functions (each mirrors what its ``anyformer`` command does)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from anyformer.core.decoding import GenerationConfig, stream_tokens
from anyformer.core.train.base import TaskModule
from anyformer.core.train.checkpoint import CheckpointError

logger = logging.getLogger(__name__)


def text_pieces(
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


def classify_text(module: TaskModule, items: list[Any], top_k: int) -> list[list[tuple[str, float]]]:
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


def classify_images(module: TaskModule, items: list[Any], top_k: int) -> list[list[tuple[str, float]]]:
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


def classify_audio(module: TaskModule, items: list[Any], top_k: int) -> list[list[tuple[str, float]]]:
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
        # Placed in the window as the checkpoint's training placed validation clips (centre or energy).
        crop = module.config.spectrogram.crop
        waves += [fit_duration(row.detach().float().cpu(), n_samples, crop) for row in rows]
    if not waves:
        return []
    with torch.inference_mode():
        return _top_labels(module, module.model(torch.stack(waves).to(module.device)), top_k)  # (B, samples)


# -- reinforcement learning ----------------------------------------------------------
def episode_frames(states: list[np.ndarray], env_id: str) -> list[np.ndarray]:
    """Each observation of an episode drawn as ``anyformer rollout --frames`` draws it: (H, W, 3)
    uint8 RGB per state; [] for observations that cannot be drawn (vectors other than CartPole's)."""
    from anyformer.rl.rollout import render_cartpole, render_frame

    if not states:
        return []
    if np.asarray(states[0]).ndim == 3:  # (C, H, W) binary channels: MinAtar
        return [render_frame(np.asarray(state)) for state in states]
    if env_id.startswith("CartPole"):
        return [render_cartpole(np.asarray(state)) for state in states]
    return []


# -- translation ---------------------------------------------------------------------
def translate_sentences(
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
