"""The DPO loss and its parts against independent references: a hand-computed loss, log-probabilities
from one forward per prefix, the exact KL of two softmaxes; the reference model stays frozen."""

import math

import pytest
import torch

from anyformer.core.config import TransformerConfig
from anyformer.text.gpt.gpt import GPT, GPTConfig
from anyformer.text.preference.data import collate_pairs
from anyformer.text.preference.dpo import continuation_kl, continuation_logprobs, dpo_loss


def _toy_policy(seed: int, vocab_size: int = 7) -> GPT:
    torch.manual_seed(seed)
    transformer = TransformerConfig(dim=16, n_layers=2, n_heads=2, max_seq_len=16, dropout=0.0)
    return GPT(GPTConfig(vocab_size=vocab_size, transformer=transformer)).eval()


def _logprob_by_prefixes(model: GPT, prompt: list[int], continuation: list[int]) -> float:
    """log p(continuation | prompt) as a product of next-token probabilities, one forward per prefix."""
    total, sequence = 0.0, list(prompt)
    for token in continuation:
        logits = model(torch.tensor([sequence]))[0, -1]  # (V,) next-token logits after the whole prefix
        total += math.log(torch.softmax(logits.double(), dim=-1)[token].item())
        sequence.append(token)
    return total


def test_dpo_loss_equals_the_hand_computed_value():
    # chosen: beta * (-3 - -4) = 0.5; rejected: beta * (-5 - -4.5) = -0.25; margin 0.75.
    terms = dpo_loss(torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5]), beta=0.5)
    assert terms.chosen_rewards.item() == pytest.approx(0.5)
    assert terms.rejected_rewards.item() == pytest.approx(-0.25)
    assert terms.margins.item() == pytest.approx(0.75)
    assert terms.losses.item() == pytest.approx(math.log(1 + math.exp(-0.75)), rel=1e-6)  # -log sigmoid(0.75)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta=0.0)


def test_dpo_loss_on_a_toy_policy_matches_log_probabilities_computed_prefix_by_prefix():
    policy, reference = _toy_policy(0), _toy_policy(1)
    pairs = [([1, 2], [3, 4, 5], [6]), ([2, 3, 4], [1], [5, 5, 5, 2])]  # (prompt, chosen, rejected)
    items = [{"chosen": p + c, "rejected": p + r, "prompt_len": len(p)} for p, c, r in pairs]
    batch = collate_pairs(items, pad_id=0)
    ids, scored = batch["input_ids"], batch["scored"]
    with torch.no_grad():
        policy_lp = continuation_logprobs(policy(ids), ids, scored)
        reference_lp = continuation_logprobs(reference(ids), ids, scored)
    terms = dpo_loss(policy_lp[:2], policy_lp[2:], reference_lp[:2], reference_lp[2:], beta=0.1)
    for row, (prompt, chosen, rejected) in enumerate(pairs):
        margin = 0.1 * (
            _logprob_by_prefixes(policy, prompt, chosen)
            - _logprob_by_prefixes(reference, prompt, chosen)
            - _logprob_by_prefixes(policy, prompt, rejected)
            + _logprob_by_prefixes(reference, prompt, rejected)
        )
        assert terms.losses[row].item() == pytest.approx(math.log1p(math.exp(-margin)), abs=1e-5)


def test_continuation_logprobs_sum_only_the_continuation_and_equal_an_unpadded_full_forward():
    model = _toy_policy(2)
    prompt, continuation = [3, 1, 4], [1, 5, 2]
    # Padded to length 9 with two different pad ids: the padding must not change anything.
    for pad_id in (0, 6):
        batch = collate_pairs(
            [{"chosen": prompt + continuation, "rejected": [3, 1, 4, 6], "prompt_len": 3}] * 3, pad_id
        )
        ids, scored = batch["input_ids"], batch["scored"]
        assert scored[0].tolist() == [False] * 3 + [True] * 3  # the prompt is not scored
        assert scored[3].tolist() == [False] * 3 + [True] + [False] * 2  # nor is the padding
        with torch.no_grad():
            padded = continuation_logprobs(model(ids), ids, scored)[0].item()
            # One forward of the bare sequence; its last three next-token predictions are the continuation's.
            full = model(torch.tensor([prompt + continuation]))[0].log_softmax(-1)
        by_full_forward = sum(full[position - 1, token].item() for position, token in enumerate(continuation, 3))
        assert padded == pytest.approx(by_full_forward, abs=1e-5)
        assert padded == pytest.approx(_logprob_by_prefixes(model, prompt, continuation), abs=1e-5)
    with pytest.raises(ValueError, match="first token"):
        continuation_logprobs(
            torch.zeros(1, 2, 7), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool)
        )


def test_continuation_kl_is_the_exact_kl_of_the_next_token_distributions_at_scored_positions():
    policy_logits, reference_logits = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    scored = torch.tensor([[False, False, True, True, False], [False, True, False, False, False]])
    p, q = policy_logits.softmax(-1).double(), reference_logits.softmax(-1).double()

    def kl(row: int, position: int) -> float:  # KL at the position that predicts the token after it
        return float((p[row, position] * (p[row, position] / q[row, position]).log()).sum())

    expected = [kl(0, 1) + kl(0, 2), kl(1, 0)]
    assert continuation_kl(policy_logits, reference_logits, scored).tolist() == pytest.approx(expected, abs=1e-5)
    assert continuation_kl(policy_logits, policy_logits, scored).abs().max().item() < 1e-6
