"""``anyformer preferences``: preference pairs from a policy and a reward model.

    anyformer preferences --policy runs/gpt_sst2_policy/checkpoints/last.ckpt \\
        --reward runs/bert_reward_sst2/checkpoints/last.ckpt --prompts 2000 --samples 8 \\
        --out runs/preference_pairs_sst2/pairs.jsonl [--run-name NAME]

The prompts are the first ``--prompt-words`` words of distinct SST-2 sentences of ``--split`` (the
training sentences by default; ``anyformer preference-eval`` holds out the dev ones). The policy
samples ``--samples`` continuations of each (temperature ``--temperature``, until the end of the
sentence or ``--new-tokens``); the reward model scores each whole sentence (its probability of
``positive``); the highest-scored continuation is ``chosen`` and the lowest ``rejected``. A prompt
whose continuations all score the same gives no pair. The file format: :mod:`anyformer.text.preference.pairs`.

Printed (and with ``--run-name`` recorded in ``runs/NAME/run.json``): ``pairs``, ``reward_mean`` (the
mean reward of every sample: the policy's own level), ``chosen_reward``, ``rejected_reward`` (means
over the pairs).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from anyformer.core.cli.errors import ArgumentParser, UsageError, positive_int, reports_usage_errors
from anyformer.core.train import run_record
from anyformer.text.preference.pairs import PreferencePair, write_pairs
from anyformer.text.preference.sampling import (
    add_prompt_arguments,
    load_classifier,
    load_policy,
    positive_probability,
    read_prompts,
    sample_continuations,
)

PROG = "anyformer preferences"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Sample continuations from a policy, score them with a reward "
        "model, and write the best and worst of each prompt as a preference pair (JSONL).",
    )
    parser.add_argument("--policy", required=True, help="checkpoint of `anyformer gpt fit` (or `anyformer dpo fit`)")
    parser.add_argument("--reward", required=True, help="sentence classifier (`anyformer bert-classify fit`)")
    parser.add_argument("--prompts", type=positive_int, required=True, help="number of prompts")
    parser.add_argument("--samples", type=positive_int, required=True, help="continuations per prompt (>= 2)")
    parser.add_argument("--out", required=True, help="the JSONL file to write")
    add_prompt_arguments(parser, split="train")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    parser.add_argument("--positive", default="positive", help="the reward model's class to reward")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    parser.add_argument("--run-name", help="also record the summary in runs/RUN_NAME/run.json")
    return parser


def best_and_worst(prompt: str, texts: Sequence[str], scores: Sequence[float]) -> PreferencePair | None:
    """The pair (highest-scored, lowest-scored continuation), or None when every score is equal."""
    best = max(range(len(texts)), key=lambda i: scores[i])
    worst = min(range(len(texts)), key=lambda i: scores[i])
    if scores[best] == scores[worst]:
        return None
    return PreferencePair(prompt, texts[best], texts[worst], scores[best], scores[worst])


@reports_usage_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``anyformer preferences``; returns the exit code (2: bad input, one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    typed = ["anyformer", "preferences", *argv]
    run_dir = run_record.evaluation_dir(args.run_name, typed) if args.run_name is not None else None
    started = run_record.utc_now()
    if args.samples < 2:
        raise UsageError("--samples must be at least 2: a pair needs two continuations to compare")
    if not 0 < args.temperature < float("inf"):
        raise UsageError(f"--temperature must be > 0 and finite, got {args.temperature}")
    out = Path(args.out)
    if run_dir is not None and out.parent.resolve() == run_dir.resolve():
        run_dir.mkdir(parents=True, exist_ok=True)  # the run's own folder: made as the run record will be
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: the folder {out.parent} does not exist")
    policy = load_policy(args.policy)
    reward = load_classifier(args.reward, "--reward", args.positive)
    prompts = read_prompts(args.split, args.prompt_file, args.prompts, args.prompt_words, args.first)
    generator = torch.Generator().manual_seed(args.seed)
    samples = sample_continuations(
        policy.model, policy.tokenizer, prompts, args.samples, args.new_tokens, args.temperature, generator
    )
    texts = [[continuation.text for continuation in row] for row in samples]
    flat_scores = positive_probability(
        reward, [prompt + text for prompt, row in zip(prompts, texts) for text in row], args.positive
    )
    pairs = []
    for i, (prompt, row) in enumerate(zip(prompts, texts)):
        pair = best_and_worst(prompt, row, flat_scores[i * args.samples : (i + 1) * args.samples])
        if pair is not None:
            pairs.append(pair)
    if not pairs:
        raise UsageError("every prompt's continuations scored the same: no preference pair to write")
    write_pairs(out, pairs)
    metrics = {
        "pairs": len(pairs),
        "reward_mean": sum(flat_scores) / len(flat_scores),
        "chosen_reward": sum(pair.chosen_score for pair in pairs) / len(pairs),
        "rejected_reward": sum(pair.rejected_score for pair in pairs) / len(pairs),
    }
    print(f"{len(pairs)} pairs from {len(prompts)} prompts x {args.samples} samples -> {out}")
    for name, value in metrics.items():
        print(f"{name:<16} {value:.4f}")
    if run_dir is not None:
        run_record.record_evaluation(run_dir, typed, metrics, started, run_record.utc_now())
        print(f"recorded in {run_dir / run_record.RUN_FILE}")
    return 0
