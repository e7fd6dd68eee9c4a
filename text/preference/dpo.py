"""Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference Optimization: Your Language
Model is Secretly a Reward Model"): the loss, and the log-probabilities it is made of.

The policy pi is tuned so that, relative to a frozen reference pi_ref, it prefers the chosen
continuation y_w of a prompt x over the rejected one y_l::

    r(x, y) = beta * (log pi(y | x) - log pi_ref(y | x))          # the implicit reward
    loss    = -log sigmoid(r(x, y_w) - r(x, y_l))

log pi(y | x) sums the log-probabilities of the continuation's tokens only: prompt and padding
positions are masked out (``scored``). Shape notation: B sequences, T tokens, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


def token_logprobs(logits: Tensor, ids: Tensor) -> Tensor:
    """Log-probability of each next token: (B, T, V) logits of ``model(ids)`` and (B, T) ids -> (B, T - 1),
    entry ``t`` being log p(ids[:, t + 1] | ids[:, : t + 1])."""
    return logits[:, :-1].float().log_softmax(dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def continuation_logprobs(logits: Tensor, ids: Tensor, scored: Tensor) -> Tensor:
    """Sum of the log-probabilities of the scored tokens of each sequence.

    Args:
        logits: (B, T, V) next-token logits of ``model(ids)``.
        ids: (B, T) prompt, continuation, then padding (right-padded: a causal model's earlier
            positions never see the padding, so no attention mask is needed).
        scored: (B, T) bool, True at the continuation's tokens; False at the prompt and the padding.
            ``scored[:, 0]`` must be False: the first token has no prediction.

    Returns:
        (B,) log pi(continuation | prompt) in nats.
    """
    if scored[:, 0].any():
        raise ValueError("scored[:, 0] must be False: the first token of a sequence is not predicted")
    return (token_logprobs(logits, ids) * scored[:, 1:]).sum(dim=-1)


def continuation_kl(policy_logits: Tensor, reference_logits: Tensor, scored: Tensor) -> Tensor:
    """Exact KL(pi || pi_ref) of the next-token distributions at every scored token's position, summed.

    At the position that predicts scored token t, ``sum_v pi(v) (log pi(v) - log pi_ref(v))`` over the
    whole vocabulary given the same prefix; so it is >= 0 and needs no sampling beyond the prefixes.

    Args:
        policy_logits, reference_logits: (B, T, V) logits of the two models on the same ids.
        scored: (B, T) bool, True at the tokens whose prediction counts (the continuation).

    Returns:
        (B,) summed KL in nats (divide by ``scored.sum(-1)`` for nats per token).
    """
    log_p = policy_logits[:, :-1].float().log_softmax(dim=-1)  # (B, T - 1, V)
    log_q = reference_logits[:, :-1].float().log_softmax(dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (B, T - 1)
    return (kl * scored[:, 1:]).sum(dim=-1)


@dataclass
class DPOTerms:
    """The loss of each pair and the implicit rewards it is made of, all (B,)."""

    losses: Tensor
    chosen_rewards: Tensor
    """beta * (log pi(y_w | x) - log pi_ref(y_w | x))."""
    rejected_rewards: Tensor
    """beta * (log pi(y_l | x) - log pi_ref(y_l | x))."""

    @property
    def margins(self) -> Tensor:
        """chosen minus rejected implicit reward: > 0 where the policy already prefers y_w (relative to pi_ref)."""
        return self.chosen_rewards - self.rejected_rewards


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, reference_chosen: Tensor, reference_rejected: Tensor, beta: float
) -> DPOTerms:
    """The DPO loss of a batch of pairs, from (B,) sequence log-probabilities (:func:`continuation_logprobs`).

    Args:
        policy_chosen, policy_rejected: log pi(y_w | x), log pi(y_l | x) (with gradient).
        reference_chosen, reference_rejected: the same under the frozen reference (no gradient).
        beta: temperature (> 0): larger keeps the policy closer to the reference.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    chosen = beta * (policy_chosen - reference_chosen.detach())
    rejected = beta * (policy_rejected - reference_rejected.detach())
    return DPOTerms(-F.logsigmoid(chosen - rejected), chosen, rejected)
