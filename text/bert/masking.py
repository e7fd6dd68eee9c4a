"""BERT's masked-LM corruption: which tokens are chosen, and what each chosen token becomes."""

from __future__ import annotations

import torch
from torch import Tensor

from anyformer.text.batching import IGNORE_INDEX
from anyformer.text.tokenizer import DEFAULT_SPECIALS, Tokenizer


def mask_tokens(
    ids: Tensor,
    candidates: Tensor,
    *,
    mask_id: int,
    random_ids: Tensor,
    generator: torch.Generator | None = None,
    mask_prob: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """BERT's masked-LM corruption of (..., T) ids.

    In each sequence, ``max(1, round(mask_prob * n))`` of its ``n`` candidate positions are
    chosen uniformly (none if it has no candidate); a chosen token becomes ``[MASK]`` with
    probability 0.8, a uniformly drawn id of ``random_ids`` with 0.1, and stays as it is with 0.1.

    Args:
        ids: (..., T) token ids.
        candidates: (..., T) bool, True where a token may be chosen (not [CLS]/[SEP]/[PAD]).
        mask_id: id of ``[MASK]``.
        random_ids: (R,) ids a random replacement is drawn from (the non-special ids).
        generator: source of randomness.
        mask_prob: share of candidates chosen.

    Returns:
        ``(inputs, labels)``: corrupted (..., T) ids, and (..., T) labels holding the original id
        at chosen positions and :data:`~anyformer.text.batching.IGNORE_INDEX` elsewhere.
    """
    scores = torch.rand(ids.shape, generator=generator).masked_fill(~candidates, 2.0)
    rank = scores.argsort(dim=-1).argsort(dim=-1)  # (..., T): 0 for the lowest score
    n_candidates = candidates.sum(dim=-1, keepdim=True)
    n_chosen = torch.where(n_candidates > 0, (n_candidates * mask_prob).round().clamp(min=1), 0)
    chosen = (rank < n_chosen) & candidates
    action = torch.rand(ids.shape, generator=generator)
    replacements = random_ids[torch.randint(len(random_ids), ids.shape, generator=generator)]
    inputs = torch.where(chosen & (action < 0.8), mask_id, ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), replacements, inputs)
    return inputs, torch.where(chosen, ids, IGNORE_INDEX)


def special_ids(tokenizer: Tokenizer) -> list[int]:
    """Ids of the default special tokens the tokenizer has."""
    found = []
    for token in DEFAULT_SPECIALS:
        try:
            found.append(tokenizer.token_id(token))
        except KeyError:
            continue
    return found
