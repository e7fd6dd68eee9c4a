"""Decision Transformer: trajectory tokens -> causal core stack -> action head at each state token.

Offline RL as sequence modelling (Chen et al., 2021): a causal transformer reads
R_1, s_1, a_1, ..., R_K, s_K and predicts a_t from the hidden state of the s_t token, so an
action is chosen from the return still wanted (R_t), the current state and the recent past.
Conditioned on a high return at test time, it imitates the good part of a mixed dataset.
With ``behavior_cloning`` the same network reads s, a only: the baseline it should beat.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from anyformer.core.attention import AttentionMaps
from anyformer.core.config import TransformerConfig
from anyformer.core.init import init_weights
from anyformer.core.linear import Linear
from anyformer.core.stack import Decoder
from anyformer.rl.tokenizer import (
    ACTION_KINDS,
    OBS_KINDS,
    TrajectoryTokenizer,
    TrajectoryTokenizerConfig,
    step_attention_mask,
)


def _default_transformer() -> TransformerConfig:
    # The paper's Atari/gym setting: 3 layers, 128 wide, 1 head, dropout 0.1; no positions
    # since each token already carries its timestep embedding.
    return TransformerConfig(dim=128, n_layers=3, n_heads=1, position="none", dropout=0.1)


@dataclass
class DTConfig:
    """A Decision Transformer (or its behaviour-cloning baseline) for one observation/action space.

    The observation/action fields, ``context_len``, ``max_timestep`` and ``rtg_scale`` are linked
    from the data module by the CLI.
    """

    obs_shape: tuple[int, ...] = (4,)
    """Shape of one observation: ``(obs_dim,)`` for vectors, ``(C, H, W)`` for frames."""
    obs_kind: str = "vector"
    """``vector`` (linear state embedding) or ``frame`` (small CNN per frame)."""
    action_kind: str = "discrete"
    """``discrete`` (embedding, cross-entropy) or ``continuous`` (linear, mean squared error)."""
    n_actions: int = 2
    """Number of discrete actions (0 for continuous actions)."""
    action_dim: int = 0
    """Size of a continuous action (0 for discrete actions)."""
    context_len: int = 20
    """K: steps in the context window (3K tokens, 2K for behaviour cloning)."""
    max_timestep: int = 1000
    """Size of the timestep embedding: timesteps must be in [0, max_timestep)."""
    rtg_scale: float = 1.0
    """Returns-to-go are divided by this before embedding."""
    behavior_cloning: bool = False
    """Drop the return-to-go tokens: a plain transformer behaviour-cloning baseline."""
    frame_channels: int = 32
    """Channels of the frame encoder's convolutions (frames only)."""
    transformer: TransformerConfig = field(default_factory=_default_transformer)
    """The causal stack; ``position: none`` since timesteps are embedded."""

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(size) for size in self.obs_shape)
        if self.obs_kind not in OBS_KINDS:
            raise ValueError(f"DTConfig.obs_kind={self.obs_kind!r} is not one of {list(OBS_KINDS)}")
        if self.action_kind not in ACTION_KINDS:
            raise ValueError(f"DTConfig.action_kind={self.action_kind!r} is not one of {list(ACTION_KINDS)}")
        expected_dims = 1 if self.obs_kind == "vector" else 3
        if len(self.obs_shape) != expected_dims or min(self.obs_shape) < 1:
            raise ValueError(
                f"DTConfig.obs_shape={self.obs_shape} does not fit obs_kind={self.obs_kind!r} "
                f"(expected {expected_dims} positive sizes)"
            )
        if self.action_kind == "discrete" and self.n_actions < 1:
            raise ValueError(f"DTConfig.n_actions must be >= 1 for discrete actions, got {self.n_actions}")
        if self.action_kind == "continuous" and self.action_dim < 1:
            raise ValueError(f"DTConfig.action_dim must be >= 1 for continuous actions, got {self.action_dim}")
        for name in ("context_len", "max_timestep", "frame_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"DTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.rtg_scale <= 0:
            raise ValueError(f"DTConfig.rtg_scale must be > 0, got {self.rtg_scale}")
        if self.n_tokens > self.transformer.max_seq_len:
            raise ValueError(
                f"DTConfig.context_len={self.context_len} needs {self.n_tokens} tokens but "
                f"transformer.max_seq_len={self.transformer.max_seq_len}; raise max_seq_len or shorten the context"
            )

    @property
    def tokens_per_step(self) -> int:
        """3 (R, s, a), or 2 (s, a) for behaviour cloning."""
        return 2 if self.behavior_cloning else 3

    @property
    def n_tokens(self) -> int:
        """Tokens in a full context window."""
        return self.tokens_per_step * self.context_len

    @property
    def tokenizer_config(self) -> TrajectoryTokenizerConfig:
        """The part of this config the trajectory tokenizer reads."""
        return TrajectoryTokenizerConfig(
            dim=self.transformer.dim, obs_shape=self.obs_shape, obs_kind=self.obs_kind, action_kind=self.action_kind,
            n_actions=self.n_actions, action_dim=self.action_dim, max_timestep=self.max_timestep,
            behavior_cloning=self.behavior_cloning, frame_channels=self.frame_channels,
        )  # fmt: skip

    @property
    def action_size(self) -> int:
        """Width of the action head: logits for discrete actions, values for continuous ones."""
        return self.n_actions if self.action_kind == "discrete" else self.action_dim


class DecisionTransformer(nn.Module):
    """K steps of (R, s, a) -> (B, K, n_actions) action logits (or (B, K, action_dim) actions)."""

    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = TrajectoryTokenizer(cfg.tokenizer_config)
        self.decoder = Decoder(cfg.transformer)
        self.action_head = Linear(cfg.transformer.dim, cfg.action_size)
        init_weights(self, cfg.transformer.n_layers)

    def forward_features(
        self,
        returns_to_go: Tensor,
        states: Tensor,
        actions: Tensor,
        timesteps: Tensor,
        *,
        keep: Tensor | None = None,
        maps: AttentionMaps | None = None,
    ) -> Tensor:
        """Contextual states of the n K interleaved tokens R_1, s_1, a_1, ... (s_1, a_1, ... for cloning).

        Args:
            returns_to_go: (B, K) returns-to-go divided by ``rtg_scale`` (ignored for cloning).
            states: (B, K, *obs_shape).
            actions: (B, K) long or (B, K, action_dim); the last one may be a placeholder.
            timesteps: (B, K) long, in [0, max_timestep).
            keep: optional (B, K) boolean, True at real steps and False at the left padding of
                windows that start before the episode; padding is never attended to.
            maps: if given, each layer's (B, H, n K, n K) attention probabilities are appended.

        Returns:
            (B, n K, D) hidden states after the final norm (causal: token i sees tokens <= i).
        """
        tokens = self.tokenizer(returns_to_go, states, actions, timesteps)  # (B, n K, D)
        mask = None if keep is None else step_attention_mask(keep, self.cfg.tokens_per_step)
        return self.decoder(tokens, mask=mask, maps=maps)  # (B, n K, D)

    def forward_head(self, hidden: Tensor) -> Tensor:
        """(B, n K, D) hidden states -> the action predicted at each state token, (B, K, A)."""
        n = self.cfg.tokens_per_step
        return self.action_head(hidden[:, n - 2 :: n])  # hidden at s_1..s_K: (B, K, D) -> (B, K, A)

    def forward(
        self, returns_to_go: Tensor, states: Tensor, actions: Tensor, timesteps: Tensor, *, keep: Tensor | None = None
    ) -> Tensor:
        """Predict the action of every step from the hidden state of its state token.

        Args:
            returns_to_go: (B, K) returns-to-go divided by ``rtg_scale`` (ignored for cloning).
            states: (B, K, *obs_shape).
            actions: (B, K) long or (B, K, action_dim); the last one may be a placeholder.
            timesteps: (B, K) long, in [0, max_timestep).
            keep: optional (B, K) boolean, True at real steps and False at left padding (never attended to).

        Returns:
            (B, K, n_actions) logits or (B, K, action_dim) actions; entry t depends only on
            R_1..R_t, s_1..s_t and a_1..a_{t-1}.
        """
        return self.forward_head(self.forward_features(returns_to_go, states, actions, timesteps, keep=keep))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
