"""Configuration of the shared transformer stack.

Choices are plain strings so the YAML experiment configs stay serializable; each
string is resolved by a small registry in the module that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass

POSITIONS = ("none", "sinusoidal", "learned", "rope")
FFNS = ("gelu", "swiglu")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"TransformerConfig.{field}={value!r} is not one of {list(allowed)}")


def _check_positive(field: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"TransformerConfig.{field} must be > 0, got {value!r}")


@dataclass
class TransformerConfig:
    """Shape and flavour of one transformer stack (encoder or decoder)."""

    dim: int = 128
    """Model width D: size of every token vector."""
    n_layers: int = 4
    """Number of blocks."""
    n_heads: int = 4
    """Attention heads; must divide ``dim``."""
    mlp_ratio: float = 4.0
    """Hidden width of the feed-forward as a multiple of ``dim``."""
    ffn: str = "gelu"
    """Feed-forward kind: ``gelu`` (two-layer MLP) or ``swiglu`` (gated)."""
    activation: str = "gelu"
    """Activation of the ``gelu`` MLP: ``gelu`` (exact), ``gelu_tanh`` (GPT-2) or ``relu``."""
    norm: str = "layernorm"
    """Normalization layer: ``layernorm`` or ``rmsnorm``."""
    norm_position: str = "pre"
    """``pre``: x + f(norm(x)) (GPT-2, ViT); ``post``: norm(x + f(x)) (original Transformer, BERT)."""
    norm_eps: float = 1e-5
    """Epsilon of every normalization layer."""
    position: str = "learned"
    """Positional encoding: ``none``, ``sinusoidal`` or ``learned`` (added to the input), ``rope`` (in attention)."""
    max_seq_len: int = 256
    """Longest sequence the positional encoding (and a KV cache) is built for."""
    dropout: float = 0.0
    """Dropout on embeddings, residual branches and feed-forward."""
    attn_dropout: float = 0.0
    """Dropout on attention probabilities."""
    drop_path: float = 0.0
    """Stochastic depth (Huang et al. 2016): the largest rate at which a training sample skips a residual
    branch; block i of n drops at ``drop_path * i / (n - 1)`` (0 for the first, as timm's ViT)."""
    locality_self_attention: bool = False
    """Locality Self-Attention (Lee et al. 2021, for ViTs on small data sets): a learned softmax temperature
    per layer and no token attending to itself. Non-causal self-attention (encoders) only."""
    bias: bool = True
    """Biases in linear layers and norms."""
    n_experts: int = 0
    """0: dense feed-forward; >0: mixture of that many experts."""
    moe_top_k: int = 2
    """Experts each token is routed to when ``n_experts > 0``."""
    input_norm: bool = False
    """Normalize the summed input embeddings (BERT's embedding LayerNorm)."""
    final_norm: bool | None = None
    """Normalize the stack's output; None follows ``norm_position`` (yes for pre-norm, no for post-norm)."""
    rope_base: float = 10000.0
    """Base of the rotary / sinusoidal frequencies."""

    def __post_init__(self) -> None:
        _check_choice("position", self.position, POSITIONS)
        _check_choice("ffn", self.ffn, FFNS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("norm_position", self.norm_position, NORM_POSITIONS)
        for name in ("dim", "n_layers", "n_heads", "mlp_ratio", "max_seq_len", "norm_eps", "rope_base"):
            _check_positive(name, getattr(self, name))
        if self.dim % self.n_heads:
            divisors = [h for h in range(1, self.dim + 1) if self.dim % h == 0]
            raise ValueError(
                f"TransformerConfig.dim={self.dim} must be divisible by n_heads={self.n_heads} "
                f"(n_heads allowed for this dim: {divisors})"
            )
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(f"TransformerConfig.position='rope' needs an even head_dim, got {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.attn_dropout < 1.0:
            raise ValueError("TransformerConfig.dropout and attn_dropout must be in [0, 1)")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"TransformerConfig.drop_path must be in [0, 1), got {self.drop_path!r}")
        if self.n_experts < 0:
            raise ValueError(f"TransformerConfig.n_experts must be >= 0, got {self.n_experts}")
        if self.n_experts and not 1 <= self.moe_top_k <= self.n_experts:
            raise ValueError(f"TransformerConfig.moe_top_k={self.moe_top_k} must be in [1, n_experts={self.n_experts}]")

    @property
    def head_dim(self) -> int:
        """Width Dh of one attention head."""
        return self.dim // self.n_heads

    @property
    def use_final_norm(self) -> bool:
        """Whether the stack normalizes its output: ``final_norm``, or pre-norm when it is None."""
        # Resolved here, not in __post_init__, so a config whose norm_position is overridden later
        # (a YAML over a post-norm default, dataclasses.replace) does not keep the old choice.
        return self.norm_position == "pre" if self.final_norm is None else self.final_norm

    def drop_path_rate(self, layer: int) -> float:
        """Stochastic-depth rate of block ``layer`` (0-based): linear from 0 at the first block to
        ``drop_path`` at the last (timm's ``linspace(0, drop_path, n_layers)``; one block alone never drops)."""
        return self.drop_path * layer / (self.n_layers - 1) if self.n_layers > 1 else 0.0

    @property
    def hidden_dim(self) -> int:
        """Width of the feed-forward's hidden layer."""
        return int(self.dim * self.mlp_ratio)
