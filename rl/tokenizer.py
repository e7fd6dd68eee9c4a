"""Trajectory tokenizer: each timestep of an episode becomes a few D-wide tokens.

Step t contributes a return-to-go token R_t, a state token s_t and an action token a_t, each
embedded by its own layer plus a learned embedding of the step's timestep within the episode
(the sequence carries no other position information), interleaved as

    R_1, s_1, a_1, R_2, s_2, a_2, ..., R_K, s_K, a_K        -> (B, 3K, D)

then layer-normalized, as in the Decision Transformer (Chen et al., 2021). Behaviour cloning
drops the return tokens: s_1, a_1, ..., s_K, a_K -> (B, 2K, D).

Shapes: B batch, K steps in the context window, D width, C x H x W a frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from anyformer.core.linear import Linear
from anyformer.core.masks import padding_mask

OBS_KINDS = ("vector", "frame")
ACTION_KINDS = ("discrete", "continuous")


@dataclass(frozen=True)
class TrajectoryTokenizerConfig:
    """What the tokenizer needs to know: the width, the spaces, the episode length.

    ``anyformer.rl.dt.DTConfig.tokenizer_config`` derives it from a model's config; the choices are
    checked there, with the model config's field names.
    """

    dim: int
    """D: width of every token."""
    obs_shape: tuple[int, ...]
    """Shape of one observation: ``(obs_dim,)`` for vectors, ``(C, H, W)`` for frames."""
    obs_kind: str = "vector"
    """``vector`` (linear state embedding) or ``frame`` (small CNN per frame)."""
    action_kind: str = "discrete"
    """``discrete`` (an embedding table) or ``continuous`` (a linear map)."""
    n_actions: int = 0
    """Number of discrete actions (unused for continuous ones)."""
    action_dim: int = 0
    """Size of a continuous action (unused for discrete ones)."""
    max_timestep: int = 1000
    """Size of the timestep embedding: timesteps must be in [0, max_timestep)."""
    behavior_cloning: bool = False
    """Drop the return-to-go tokens (s, a per step instead of R, s, a)."""
    frame_channels: int = 32
    """Channels of the frame encoder's convolutions (frames only)."""

    @property
    def tokens_per_step(self) -> int:
        """3 (R, s, a), or 2 (s, a) for behaviour cloning."""
        return 2 if self.behavior_cloning else 3


class FrameEncoder(nn.Module):
    """(B, C, H, W) frames -> (B, D): a 3x3 convolution, a strided 3x3 convolution, a linear map."""

    def __init__(self, obs_shape: tuple[int, ...], dim: int, channels: int) -> None:
        super().__init__()
        in_channels, height, width = obs_shape
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.proj = Linear(channels * ((height + 1) // 2) * ((width + 1) // 2), dim)

    def forward(self, frames: Tensor) -> Tensor:
        return self.proj(self.conv(frames).flatten(1))  # (B, C', H/2, W/2) -> (B, D)


class VectorEncoder(nn.Module):
    """(B, obs_dim) state vectors -> (B, D)."""

    def __init__(self, obs_shape: tuple[int, ...], dim: int) -> None:
        super().__init__()
        self.proj = Linear(obs_shape[0], dim)

    def forward(self, states: Tensor) -> Tensor:
        return self.proj(states)


def build_state_encoder(cfg: TrajectoryTokenizerConfig) -> nn.Module:
    """A linear map for vector observations, a small CNN for frames (one D vector per frame)."""
    if cfg.obs_kind == "frame":
        return FrameEncoder(cfg.obs_shape, cfg.dim, cfg.frame_channels)
    return VectorEncoder(cfg.obs_shape, cfg.dim)


class TrajectoryTokenizer(nn.Module):
    """(returns-to-go, states, actions, timesteps) of K steps -> (B, n K, D) interleaved tokens.

    n = ``cfg.tokens_per_step``: 3 (R, s, a) for a Decision Transformer, 2 (s, a) for behaviour
    cloning, whose ``return_embedding`` is None.
    """

    def __init__(self, cfg: TrajectoryTokenizerConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.tokens_per_step = cfg.tokens_per_step
        self.max_timestep = cfg.max_timestep
        self.return_embedding = None if cfg.behavior_cloning else Linear(1, dim)
        self.state_embedding = build_state_encoder(cfg)
        if cfg.action_kind == "discrete":
            self.action_embedding: nn.Module = nn.Embedding(cfg.n_actions, dim)
        else:
            self.action_embedding = Linear(cfg.action_dim, dim)
        self.timestep_embedding = nn.Embedding(cfg.max_timestep, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor) -> Tensor:
        """Embed and interleave K steps.

        Args:
            returns_to_go: (B, K) returns-to-go, already divided by ``rtg_scale`` (unused for
                behaviour cloning).
            states: (B, K, *obs_shape) observations.
            actions: (B, K) long action ids, or (B, K, action_dim) continuous actions. The action
                of the last step may be a placeholder: no prediction at or before s_K sees it.
            timesteps: (B, K) long step index of each step within its episode, in [0, max_timestep).

        Returns:
            (B, n K, D) tokens ordered R_1, s_1, a_1, R_2, ... (s_1, a_1, s_2, ... for cloning).
        """
        batch, steps = timesteps.shape
        if timesteps.numel() and (timesteps.min() < 0 or timesteps.max() >= self.max_timestep):
            raise ValueError(
                f"timesteps must be in [0, max_timestep={self.max_timestep}), "
                f"got range [{timesteps.min()}, {timesteps.max()}]"
            )
        time = self.timestep_embedding(timesteps)  # (B, K, D)
        state = self.state_embedding(states.flatten(0, 1)).view(batch, steps, -1)  # (B*K, ...) -> (B, K, D)
        parts = [state + time, self.action_embedding(actions) + time]
        if self.return_embedding is not None:
            parts.insert(0, self.return_embedding(returns_to_go.unsqueeze(-1).to(time.dtype)) + time)
        tokens = torch.stack(parts, dim=2)  # (B, K, n, D)
        return self.norm(tokens.flatten(1, 2))  # (B, n K, D)


def step_attention_mask(keep: Tensor, tokens_per_step: int) -> Tensor:
    """Self-attention mask for windows left-padded at the start of an episode.

    Args:
        keep: (B, K) boolean, True at real steps, False at padding.
        tokens_per_step: n, tokens per step.

    Returns:
        (B, 1, n K, n K) boolean mask, True = may attend: every token may attend to the real
        tokens, and a padding token also to itself, so no query row is fully masked (its output
        is ignored). The decoder adds causality.
    """
    token_keep = keep.repeat_interleave(tokens_per_step, dim=1)  # (B, n K)
    n_tokens = token_keep.shape[1]
    itself = torch.eye(n_tokens, dtype=torch.bool, device=keep.device)[None, None]  # (1, 1, nK, nK)
    return padding_mask(token_keep) | itself
