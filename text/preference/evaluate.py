"""``anyformer preference-eval``: how a policy's continuations of held-out prompts read, judged by a
classifier that is not the reward model.

    anyformer preference-eval --policy runs/dpo_sst2/checkpoints/last.ckpt \\
        --reference runs/gpt_sst2_policy/checkpoints/last.ckpt \\
        --reward runs/bert_reward_sst2/checkpoints/last.ckpt --judge runs/bow_sst2/checkpoints/last.ckpt \\
        --prompts 500 [--best-of 16] [--run-name NAME]

The prompts are the first ``--prompt-words`` words of distinct SST-2 dev sentences (held out: the
pairs come from the training sentences). Each is continued once by sampling from the policy
(temperature 1, until the end of the sentence or ``--new-tokens``); with ``--best-of N``, N times, and
the continuation the reward model scores highest is kept (best-of-n at inference). Metrics:

- ``judge_positive``: share of the sentences (prompt + continuation) the judge (``--judge``, e.g. the
  ``text-bow`` classifier, trained apart from the reward model) finds positive (probability > 0.5).
- ``reward_mean``: the reward model's mean probability of positive: what the tuning optimised, so
  it can be gamed; the judge is the check.
- ``kl_per_token``: KL(policy || reference) in nats per continuation token: the exact KL of the two
  next-token distributions at each position of the kept continuations, averaged over tokens.
  Best-of-n changes which samples are kept, not the policy, so its ``kl_per_token`` is that of the
  policy alone; ``bon_kl_bound`` is the known bound on the KL of best-of-n sampling to its policy,
  ``log n - (n - 1) / n`` nats per sequence, divided by the mean continuation length.
- ``ref_ppl``: perplexity of the continuations under the reference (exp of the mean negative
  log-likelihood per token): high when the policy writes text the reference finds unlikely.
- ``distinct_1``, ``distinct_2``: distinct token n-grams / all n-grams of the continuations pooled.
- ``mean_tokens``: mean continuation length in tokens (the end-of-sentence newline included).

With ``--run-name NAME`` the metrics are recorded in ``runs/NAME/run.json`` and every sample in
``runs/NAME/samples.jsonl`` (``{"prompt", "continuation", "reward", "judge"}`` per line, prompt order).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch

from anyformer.core.cli.errors import ArgumentParser, UsageError, positive_int, reports_usage_errors
from anyformer.core.train import run_record
from anyformer.core.train.atomic import atomic_write_text
from anyformer.text.gpt.decode_eval import distinct_n
from anyformer.text.preference.dpo import continuation_kl, continuation_logprobs
from anyformer.text.preference.sampling import (
    Continuation,
    add_prompt_arguments,
    encode_prompt,
    load_classifier,
    load_policy,
    positive_probability,
    read_prompts,
    same_tokenizer,
    sample_continuations,
)

PROG = "anyformer preference-eval"
SCORING_ROWS = 128
"""Sequences scored together by the policy and the reference."""


@torch.no_grad()
def likelihood_terms(
    policy: Any, reference: Any, prompts: Sequence[list[int]], continuations: Sequence[Sequence[int]]
) -> tuple[float, float, int]:
    """(summed KL(policy || reference), summed reference log-likelihood, token count) over the continuations.

    Args:
        policy, reference: GPTs with the same vocabulary.
        prompts: each continuation's prompt ids, as the policy read them.
        continuations: the continuation ids.
    """
    kl = log_likelihood = 0.0
    tokens = 0
    for start in range(0, len(prompts), SCORING_ROWS):
        rows = [list(p) + list(c) for p, c in zip(prompts[start : start + SCORING_ROWS], continuations[start:])]
        prompt_lens = [len(p) for p in prompts[start : start + SCORING_ROWS]]
        ids = torch.zeros((len(rows), max(map(len, rows))), dtype=torch.long)  # right padding, never scored
        scored = torch.zeros(ids.shape, dtype=torch.bool)
        for i, (row, prompt_len) in enumerate(zip(rows, prompt_lens)):
            ids[i, : len(row)] = torch.tensor(row)
            scored[i, prompt_len : len(row)] = True
        policy_logits, reference_logits = policy(ids), reference(ids)
        kl += continuation_kl(policy_logits, reference_logits, scored).sum().item()
        log_likelihood += continuation_logprobs(reference_logits, ids, scored).sum().item()
        tokens += int(scored.sum())
    return kl, log_likelihood, tokens


def best_of(rows: Sequence[Sequence[Continuation]], scores: Sequence[float]) -> tuple[list[Continuation], list[float]]:
    """The highest-scored continuation of each row (``scores`` flat, row after row) and its score."""
    kept, kept_scores, at = [], [], 0
    for row in rows:
        best = max(range(len(row)), key=lambda i: scores[at + i])
        kept.append(row[best])
        kept_scores.append(scores[at + best])
        at += len(row)
    return kept, kept_scores


def _distinct(continuations: Sequence[Sequence[int]], n: int) -> float:
    try:
        return distinct_n(continuations, n)
    except ValueError:  # every continuation shorter than n: no n-gram at all
        return 0.0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Continue held-out SST-2 prompts with a policy (optionally best "
        "of n by a reward model) and judge the sentences with a separate classifier.",
    )
    parser.add_argument("--policy", required=True, help="checkpoint of `anyformer gpt fit` or `anyformer dpo fit`")
    parser.add_argument("--reference", required=True, help="GPT checkpoint the KL and perplexity are measured against")
    parser.add_argument("--reward", required=True, help="the reward model (sentence classifier)")
    parser.add_argument("--judge", required=True, help="another sentence classifier (`anyformer text-bow fit`)")
    parser.add_argument("--prompts", type=positive_int, default=500, help="number of prompts (default 500)")
    parser.add_argument("--best-of", type=positive_int, default=1, help="samples per prompt, the reward's best kept")
    add_prompt_arguments(parser, split="dev")
    parser.add_argument("--positive", default="positive", help="the classifiers' positive class")
    parser.add_argument("--show", type=int, default=3, help="samples to print (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    parser.add_argument("--run-name", help="also record the metrics in runs/RUN_NAME/run.json")
    return parser


@reports_usage_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``anyformer preference-eval``; returns the exit code (2: bad input, one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    typed = ["anyformer", "preference-eval", *argv]
    run_dir = run_record.evaluation_dir(args.run_name, typed) if args.run_name is not None else None
    started = run_record.utc_now()
    policy = load_policy(args.policy)
    reference = load_policy(args.reference, "--reference")
    if not same_tokenizer(policy.tokenizer, reference.tokenizer):
        raise UsageError(
            f"--policy {args.policy} and --reference {args.reference} have different tokenizers; the KL compares "
            "their probabilities of the same tokens"
        )
    reward = load_classifier(args.reward, "--reward", args.positive)
    judge = load_classifier(args.judge, "--judge", args.positive)
    prompts = read_prompts(args.split, args.prompt_file, args.prompts, args.prompt_words, args.first)
    generator = torch.Generator().manual_seed(args.seed)
    rows = sample_continuations(policy.model, policy.tokenizer, prompts, args.best_of, args.new_tokens, 1.0, generator)
    sentences = [prompt + c.text for prompt, row in zip(prompts, rows) for c in row]
    kept, rewards = best_of(rows, positive_probability(reward, sentences, args.positive))
    judged = positive_probability(judge, [prompt + c.text for prompt, c in zip(prompts, kept)], args.positive)
    prompt_ids = [encode_prompt(policy.tokenizer, prompt) for prompt in prompts]
    kl, log_likelihood, tokens = likelihood_terms(policy.model, reference.model, prompt_ids, [c.ids for c in kept])
    mean_tokens = tokens / len(kept)
    metrics = {
        "judge_positive": sum(p > 0.5 for p in judged) / len(judged),
        "reward_mean": sum(rewards) / len(rewards),
        "kl_per_token": kl / tokens,
        "ref_ppl": math.exp(-log_likelihood / tokens),
        "distinct_1": _distinct([c.ids for c in kept], 1),
        "distinct_2": _distinct([c.ids for c in kept], 2),
        "mean_tokens": mean_tokens,
    }
    if args.best_of > 1:
        metrics["bon_kl_bound"] = (math.log(args.best_of) - (args.best_of - 1) / args.best_of) / mean_tokens
    print(
        f"{len(prompts)} prompts, best of {args.best_of} by the reward model"
        if args.best_of > 1
        else f"{len(prompts)} prompts, one sample each"
    )
    for prompt, continuation, score, verdict in list(zip(prompts, kept, rewards, judged))[: args.show]:
        print(f"  {prompt!r} -> {continuation.text!r}  reward {score:.3f}  judge {verdict:.3f}")
    for name, value in metrics.items():
        print(f"{name:<16} {value:.4f}")
    if run_dir is not None:
        run_record.record_evaluation(run_dir, typed, metrics, started, run_record.utc_now())
        lines = [
            json.dumps({"prompt": p, "continuation": c.text, "reward": r, "judge": j}, ensure_ascii=False)
            for p, c, r, j in zip(prompts, kept, rewards, judged)
        ]
        atomic_write_text(run_dir / run_record.SAMPLES_FILE, "\n".join(lines) + "\n")
        print(f"recorded in {run_dir / run_record.RUN_FILE} (samples: {run_record.SAMPLES_FILE})")
    return 0
