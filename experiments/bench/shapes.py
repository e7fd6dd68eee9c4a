"""The reference shapes the benchmark measures, by name (``--only`` picks among them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPTShape:
    """A decoder-only language model and the batch it trains on."""

    batch: int
    context: int
    n_layers: int
    n_heads: int
    dim: int
    vocab: int


@dataclass(frozen=True)
class GenerationShape:
    """A decoder-only model decoding from a 1-token prompt; ``context`` must hold the longest run."""

    model: GPTShape
    new_tokens: tuple[int, int]
    """(short, long) generation lengths: per-token time should not grow from one to the other."""
    beams: int = 4
    sample_batch: int = 16


@dataclass(frozen=True)
class ViTShape:
    """A vision transformer and the batch of square images it trains on."""

    batch: int
    image_size: int
    channels: int
    patch_size: int
    dim: int
    depth: int
    n_heads: int
    num_classes: int = 10


GPT_SHAPES = {
    "gpt-cpu": GPTShape(batch=12, context=64, n_layers=4, n_heads=4, dim=128, vocab=65),
    "gpt-small": GPTShape(batch=8, context=256, n_layers=6, n_heads=6, dim=384, vocab=65),
    # GPT-2 small (124M; vocabulary padded to a multiple of 64): sized for a GPU, where the CPU shapes
    # above are bound by kernel launches rather than by the matrix units MFU is measured against.
    "gpt2-124m": GPTShape(batch=16, context=1024, n_layers=12, n_heads=12, dim=768, vocab=50304),
}
GENERATION_SHAPES = {
    # gpt-small's model with a context long enough for 1024 new tokens after the prompt.
    "gpt-gen": GenerationShape(GPTShape(batch=1, context=1088, n_layers=6, n_heads=6, dim=384, vocab=65), (64, 1024)),
}
VIT_SHAPES = {
    "vit-tiny": ViTShape(batch=64, image_size=32, channels=3, patch_size=4, dim=192, depth=12, n_heads=3),
}
ALL_SHAPES = (*GPT_SHAPES, *GENERATION_SHAPES, *VIT_SHAPES)
GPU_ONLY_SHAPES = ("gpt2-124m",)
"""Left out of the default ``--only`` on the CPU: one of its training steps takes minutes there."""


def default_shapes(device: str) -> tuple[str, ...]:
    """What a plain ``python -m anyformer.experiments.bench --device DEVICE`` measures."""
    return ALL_SHAPES if device == "cuda" else tuple(name for name in ALL_SHAPES if name not in GPU_ONLY_SHAPES)
