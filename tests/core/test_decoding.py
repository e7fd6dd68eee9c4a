"""Decoding strategies: invariants between strategies and against a no-cache reference."""

import pytest
import torch

from anyformer.core.decoding import GenerationConfig, beam_search, filter_top_p, generate, stream_tokens

PROMPT = torch.tensor([[3, 7, 1, 4]])


def _greedy_without_cache(model, prompt, n):
    ids = prompt
    for _ in range(n):
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def test_greedy_with_cache_equals_full_recompute(tiny_lm):
    out = generate(tiny_lm, PROMPT, GenerationConfig("greedy", max_new_tokens=20))
    torch.testing.assert_close(out, _greedy_without_cache(tiny_lm, PROMPT, 20))


def test_greedy_past_the_context_window_keeps_going(tiny_lm):
    out = generate(tiny_lm, PROMPT, GenerationConfig("greedy", max_new_tokens=100))
    assert out.shape == (1, 104)  # 48-token window: the cache is re-primed twice on the way


def test_top_k_one_equals_greedy(tiny_lm):
    greedy = generate(tiny_lm, PROMPT, GenerationConfig("greedy", max_new_tokens=15))
    top1 = generate(tiny_lm, PROMPT, GenerationConfig("top-k", top_k=1, max_new_tokens=15, temperature=0.7),
                    torch.Generator().manual_seed(5))  # fmt: skip
    torch.testing.assert_close(top1, greedy)


def test_one_beam_equals_greedy(tiny_lm):
    greedy = generate(tiny_lm, PROMPT, GenerationConfig("greedy", max_new_tokens=15))
    (best,) = beam_search(tiny_lm, PROMPT, GenerationConfig("beam", beams=1, max_new_tokens=15))[0]
    assert best.tokens == greedy[0, 4:].tolist()


@pytest.mark.parametrize("strategy", ["sample", "top-k", "top-p"])
def test_seeded_sampling_is_reproducible(tiny_lm, strategy):
    cfg = GenerationConfig(strategy, max_new_tokens=30, temperature=1.5)
    runs = [generate(tiny_lm, PROMPT.repeat(3, 1), cfg, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    torch.testing.assert_close(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_beam_scores_are_sorted_and_consistent_with_the_model(tiny_lm):
    cfg = GenerationConfig("beam", beams=4, max_new_tokens=6, length_penalty=0.0)
    hyps = beam_search(tiny_lm, PROMPT, cfg)[0]
    assert len(hyps) == 4
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    for hyp in hyps:  # the reported log-probability is the model's, recomputed without cache
        ids = torch.cat([PROMPT, torch.tensor([hyp.tokens])], dim=1)
        log_probs = tiny_lm(ids[:, :-1]).log_softmax(-1)[0, 3:]
        total = log_probs.gather(-1, torch.tensor(hyp.tokens)[:, None]).sum().item()
        assert hyp.log_prob == pytest.approx(total, abs=1e-4)
    # The best beam is at least as likely as the greedy continuation.
    greedy = generate(tiny_lm, PROMPT, GenerationConfig("greedy", max_new_tokens=6))
    greedy_lp = tiny_lm(greedy[:, :-1]).log_softmax(-1)[0, 3:].gather(-1, greedy[0, 4:, None]).sum().item()
    assert hyps[0].log_prob >= greedy_lp - 1e-5


def test_batched_beam_search_equals_one_row_at_a_time(tiny_lm):
    prompts = torch.tensor([[3, 7, 1, 4], [9, 9, 2, 5]])
    cfg = GenerationConfig("beam", beams=3, max_new_tokens=8, eos_id=0)
    together = beam_search(tiny_lm, prompts, cfg)
    for row in range(2):
        alone = beam_search(tiny_lm, prompts[row : row + 1], cfg)[0]
        assert [h.tokens for h in together[row]] == [h.tokens for h in alone]


def test_stop_on_eos(tiny_lm):
    first = generate(tiny_lm, PROMPT, GenerationConfig("greedy", max_new_tokens=1))[0, -1].item()
    steps = list(stream_tokens(tiny_lm, PROMPT, GenerationConfig("greedy", max_new_tokens=10, eos_id=first)))
    assert len(steps) == 1 and steps[0].item() == first


def test_repetition_penalty_discourages_seen_tokens(tiny_lm):
    plain = generate(tiny_lm, PROMPT, GenerationConfig("greedy", max_new_tokens=40))[0, 4:]
    penalized = generate(tiny_lm, PROMPT, GenerationConfig("greedy", max_new_tokens=40, repetition_penalty=3.0))[0, 4:]
    assert len(set(penalized.tolist())) > len(set(plain.tolist()))


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_top_p(logits, 0.75).isfinite()[0].tolist()
    assert kept == [True, True, False, False]
    assert filter_top_p(logits, 0.01).isfinite()[0].tolist() == [True, False, False, False]


def test_long_prompt_is_cropped_from_the_left_with_a_warning(tiny_lm, caplog):
    long_prompt = torch.randint(0, 23, (1, 100))
    out = generate(tiny_lm, long_prompt, GenerationConfig("greedy", max_new_tokens=2))
    assert "keeping the last 47" in caplog.text
    expected = _greedy_without_cache(tiny_lm, long_prompt[:, -47:], 2)[:, -2:]
    torch.testing.assert_close(out[:, -2:], expected)


def test_bad_generation_settings_are_rejected():
    with pytest.raises(ValueError, match="strategy='nucleus' is not one of"):
        GenerationConfig("nucleus")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        GenerationConfig("sample", temperature=0)
