"""Weight initialization shared by every model (GPT-2's scheme)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import nn

# Projections that write into the residual stream: their init shrinks with depth so the
# variance of the residual sum stays roughly constant (GPT-2, section 2.3).
RESIDUAL_PROJECTIONS = ("attn.out_proj.weight", "cross_attn.out_proj.weight", "fc2.weight")


def init_weights(model: nn.Module, n_layers: int, std: float = 0.02) -> None:
    """Normal(0, std) linears and embeddings, zero biases, unit norms; residual outputs / sqrt(2 n_layers)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    for name, param in model.named_parameters():
        if name.endswith(RESIDUAL_PROJECTIONS):
            nn.init.normal_(param, std=std / math.sqrt(2 * n_layers))


def init_scaled_embeddings(embeddings: Iterable[nn.Embedding], dim: int) -> float:
    """The original Transformer's token embeddings: Normal(0, 1/dim) weights, read times sqrt(dim).

    A token vector then has entries of size ~1, the scale of sinusoidal positions (whose entries
    are sines and cosines). With GPT-2's Normal(0, 0.02) embeddings the positions would outweigh
    the tokens ~35 to 1 at dim 128. Returns the factor the caller multiplies looked-up rows by.
    """
    for embedding in embeddings:
        nn.init.normal_(embedding.weight, std=dim**-0.5)
    return math.sqrt(dim)
