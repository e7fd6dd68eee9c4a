"""Each model the benchmark compares, built at a reference shape and configured alike:
pre-norm, learned positions, exact-GELU MLP of width 4D, no dropout, LM head tied to the embedding.
(Exact GELU rather than GPT-2's tanh approximation: it is x-transformers' and timm's choice, and
``torch.tanh`` is several times slower than ``erf`` on some CPUs, which would time the activation.)

A peer is a ``Contender``: a model plus how to get logits out of it, so one training step
serves every library. Each builder imports its library itself: a run pays only for the
libraries it compares.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from anyformer.core import TransformerConfig
from anyformer.experiments.bench.minimal_gpt import MinimalGPT
from anyformer.experiments.bench.shapes import GPTShape, ViTShape


@dataclass
class Contender:
    """A model and the call that turns its input (ids or images) into logits."""

    name: str
    model: nn.Module
    logits: Callable[[Tensor], Tensor]


def anyformer_gpt(shape: GPTShape) -> Contender:
    from anyformer.text.gpt.gpt import GPT, GPTConfig

    transformer = TransformerConfig(
        dim=shape.dim, n_layers=shape.n_layers, n_heads=shape.n_heads, max_seq_len=shape.context,
        position="learned", activation="gelu",
    )  # fmt: skip
    model = GPT(GPTConfig(vocab_size=shape.vocab, transformer=transformer))
    return Contender("anyformer", model, model)


def transformers_gpt2(shape: GPTShape) -> Contender:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=shape.vocab, n_positions=shape.context, n_embd=shape.dim, n_layer=shape.n_layers,
        n_head=shape.n_heads, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=None, eos_token_id=None, pad_token_id=0,  # no end token: generate() runs to max_new_tokens
    )  # fmt: skip
    config._attn_implementation = "sdpa"  # its fastest CPU path
    model = GPT2LMHeadModel(config)
    return Contender("transformers", model, lambda ids: model(ids).logits)


def x_transformers_gpt(shape: GPTShape) -> Contender:
    from x_transformers import Decoder, TransformerWrapper

    model = TransformerWrapper(
        num_tokens=shape.vocab, max_seq_len=shape.context, tie_embedding=True,
        attn_layers=Decoder(
            dim=shape.dim, depth=shape.n_layers, heads=shape.n_heads, attn_dim_head=shape.dim // shape.n_heads,
            attn_flash=True,
        ),
    )  # fmt: skip
    return Contender("x-transformers", model, model)


def minimal_gpt(shape: GPTShape) -> Contender:
    model = MinimalGPT(shape)
    return Contender("minimal", model, model)


def anyformer_vit(shape: ViTShape) -> Contender:
    from anyformer.vision.vit import ViT, ViTConfig

    transformer = TransformerConfig(
        dim=shape.dim, n_layers=shape.depth, n_heads=shape.n_heads, position="none", norm_eps=1e-6,
    )  # fmt: skip
    config = ViTConfig(
        image_size=shape.image_size, patch_size=shape.patch_size, in_channels=shape.channels,
        num_classes=shape.num_classes, transformer=transformer,
    )  # fmt: skip
    model = ViT(config)
    return Contender("anyformer", model, model)


def timm_vit(shape: ViTShape) -> Contender:
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        img_size=shape.image_size, patch_size=shape.patch_size, in_chans=shape.channels,
        num_classes=shape.num_classes, embed_dim=shape.dim, depth=shape.depth, num_heads=shape.n_heads,
    )  # fmt: skip
    return Contender("timm", model, model)


GPT_PEERS: dict[str, Callable[[GPTShape], Contender]] = {
    "anyformer": anyformer_gpt,
    "transformers": transformers_gpt2,
    "x-transformers": x_transformers_gpt,
    "minimal": minimal_gpt,
}
VIT_PEERS: dict[str, Callable[[ViTShape], Contender]] = {"anyformer": anyformer_vit, "timm": timm_vit}
