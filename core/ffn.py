"""Position-wise feed-forward layers: GELU MLP, SwiGLU and a mixture of experts."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyformer.core.config import TransformerConfig
from anyformer.core.linear import Linear

ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),
    "relu": nn.ReLU,
}


class MLP(nn.Module):
    """fc1 -> activation -> fc2 (-> dropout)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.fc1 = Linear(cfg.dim, cfg.hidden_dim, bias=cfg.bias)
        self.act = ACTIVATIONS[cfg.activation]()
        self.fc2 = Linear(cfg.hidden_dim, cfg.dim, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """Gated feed-forward ``fc2(silu(gate) * up)`` (Shazeer 2020), gate and up fused in fc1."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.fc1 = Linear(cfg.dim, 2 * cfg.hidden_dim, bias=cfg.bias)
        self.fc2 = Linear(cfg.hidden_dim, cfg.dim, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        gate, up = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * up)


DENSE_FFNS = {"gelu": MLP, "swiglu": SwiGLU}


class MixtureOfExperts(nn.Module):
    """Top-k routed experts (Switch / GShard style) with a load-balancing loss.

    Each token goes to the ``top_k`` experts with the highest router probability; their
    outputs are mixed with those probabilities renormalized over the chosen k. After each
    forward, ``balance_loss`` holds ``E * sum_e f_e * P_e`` (f_e: fraction of routed slots
    taken by expert e, P_e: mean router probability of e): 1.0 for uniform routing and larger
    the more the router concentrates. The training step adds it, weighted, to the loss.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.top_k = cfg.moe_top_k
        self.router = Linear(cfg.dim, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(DENSE_FFNS[cfg.ffn](cfg) for _ in range(cfg.n_experts))
        self.balance_loss = torch.zeros(())

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        tokens = x.reshape(-1, x.shape[-1])  # (N, D)
        probs = self.router(tokens).softmax(dim=-1)  # (N, E)
        top_probs, top_experts = probs.topk(self.top_k, dim=-1)  # (N, k)
        top_probs = top_probs / top_probs.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(tokens)
        n_experts = len(self.experts)
        for expert_id, expert in enumerate(self.experts):
            token_idx, slot = (top_experts == expert_id).nonzero(as_tuple=True)
            if token_idx.numel():
                weight = top_probs[token_idx, slot, None]
                out.index_add_(0, token_idx, weight * expert(tokens[token_idx]))
        routed_fraction = F.one_hot(top_experts, n_experts).float().mean(dim=(0, 1))  # (E,)
        self.balance_loss = n_experts * (routed_fraction * probs.mean(dim=0)).sum()
        return out.view_as(x)


def build_ffn(cfg: TransformerConfig) -> nn.Module:
    """The feed-forward the config asks for."""
    return MixtureOfExperts(cfg) if cfg.n_experts else DENSE_FFNS[cfg.ffn](cfg)
