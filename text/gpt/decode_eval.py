"""``anyformer decode-eval``: how a decoding strategy's continuations of held-out prompts read.

    anyformer decode-eval --ckpt runs/gpt_shakespeare_char/checkpoints/last.ckpt --strategy top-p \\
        --top-p 0.9 --prompts 32 --prompt-tokens 32 --new-tokens 128 --seed 0 [--run-name NAME]

The prompts are ``--prompts`` windows of ``--prompt-tokens`` tokens at evenly spaced offsets of the
validation text of the checkpoint's training data (the ``data`` section of the ``config.yaml`` that
``anyformer gpt fit`` wrote into the run folder, split as ``anyformer.text.gpt.data.TextDataModule`` splits it), or
of ``--prompt-file``. Each is continued by ``--new-tokens`` tokens (no stop at end-of-text, so every
continuation has the same length), all prompts as one batch through ``anyformer.core.decoding.generate``.
Metrics, over the generated tokens only:

- ``gen_ppl``: exp of the mean negative log-likelihood of the generated tokens under the same model,
  teacher-forced after the prompt (the untempered, unfiltered model distribution; past the model's
  context window each token sees at least 3/4 of a window before it, see :func:`continuation_nll`).
  Low: the model finds its own text likely; greedy and beam search, which pick likely tokens, get
  low values, often by repeating themselves.
- ``distinct_1``, ``distinct_2``: distinct n-grams / all n-grams of all continuations pooled, at the
  token level (Li et al., 2016). Higher is more varied.
- ``repetition_rate``: the share of the 4-grams of each continuation that already occurred earlier in
  the same continuation, pooled over continuations (Welleck et al., 2019's seq-rep-4 when the
  continuations have equal length). 0: no 4-gram repeats; near 1: a loop.

With ``--run-name NAME`` the metrics are also recorded in ``runs/NAME/run.json``
(``anyformer.core.train.run_record.record_evaluation``), so a comparison can list the run in a table.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from anyformer.core.cli.errors import ArgumentParser, UsageError, positive_int, reports_usage_errors
from anyformer.core.decoding import STRATEGIES, CausalModel, GenerationConfig, generate
from anyformer.core.quantize import WEIGHT_DTYPES, greedy_agreement, mean_next_token_loss, store_weights
from anyformer.core.train import run_record
from anyformer.core.train.checkpoint import load_task
from anyformer.text.corpus import load_corpus
from anyformer.text.gpt.generate import _as_flags  # the same option names as `anyformer generate`

PROG = "anyformer decode-eval"
REPETITION_N = 4
"""``repetition_rate`` counts repeated 4-grams."""


# -- metrics --------------------------------------------------------------------------------
def ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """The n-grams of one token sequence, in order (none if it is shorter than n)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(continuations: Sequence[Sequence[int]], n: int) -> float:
    """Distinct n-grams / all n-grams over every continuation (n-grams do not cross continuations)."""
    grams = [gram for tokens in continuations for gram in ngrams(tokens, n)]
    if not grams:
        raise ValueError(f"no continuation has {n} tokens, so there is no {n}-gram to count")
    return len(set(grams)) / len(grams)


def repetition_rate(continuations: Sequence[Sequence[int]], n: int = REPETITION_N) -> float:
    """Share of n-grams that repeat an n-gram seen earlier in the same continuation, pooled."""
    repeats = total = 0
    for tokens in continuations:
        grams = ngrams(tokens, n)
        repeats += len(grams) - len(set(grams))  # every occurrence after the first is a repeat
        total += len(grams)
    if total == 0:
        raise ValueError(f"no continuation has {n} tokens, so there is no {n}-gram to count")
    return repeats / total


@torch.no_grad()
def continuation_nll(model: CausalModel, sequences: Tensor, prompt_len: int) -> Tensor:
    """Negative log-likelihood of every token after the prompt, teacher-forced.

    Sequences longer than the model's window ``W = model.max_seq_len`` are scored by windows of W
    tokens that slide by ``W // 4``: the first window scores its W next-token targets, each later
    one only its last ``W // 4``, so a token past the first window is predicted from at least
    ``3/4 W`` tokens before it, as the generator's own re-primed context gives it (anyformer.core.decoding).

    Args:
        model: A causal model whose ``model(ids)`` gives (B, T, V) next-token logits.
        sequences: (B, L) prompt followed by continuation.
        prompt_len: Tokens of prompt at the start of each row (>= 1).

    Returns:
        (B, L - prompt_len) NLL in nats of each continuation token.
    """
    window, stride = model.max_seq_len, max(1, model.max_seq_len // 4)
    inputs, targets = sequences[:, :-1], sequences[:, 1:]  # targets[:, j] follows inputs[:, : j + 1]
    nll, scored = [], 0
    while scored < inputs.shape[1]:
        end = min(scored + stride, inputs.shape[1]) if scored else min(window, inputs.shape[1])
        logits = model(inputs[:, max(0, end - window) : end])[:, -(end - scored) :].float()  # (B, new, V)
        nll.append(F.cross_entropy(logits.transpose(1, 2), targets[:, scored:end], reduction="none"))
        scored = end
    return torch.cat(nll, dim=1)[:, prompt_len - 1 :]


def decoding_metrics(model: CausalModel, sequences: Tensor, prompt_len: int) -> dict[str, float]:
    """``gen_ppl``, ``distinct_1``, ``distinct_2``, ``repetition_rate`` of the continuations of ``sequences``."""
    continuations = sequences[:, prompt_len:].tolist()
    return {
        "gen_ppl": math.exp(continuation_nll(model, sequences, prompt_len).mean().item()),
        "distinct_1": distinct_n(continuations, 1),
        "distinct_2": distinct_n(continuations, 2),
        "repetition_rate": repetition_rate(continuations),
    }


# -- prompts --------------------------------------------------------------------------------
def cut_prompts(ids: Sequence[int], n_prompts: int, prompt_tokens: int) -> Tensor:
    """(n_prompts, prompt_tokens) windows of ``ids`` at evenly spaced, distinct start offsets."""
    n_starts = len(ids) - prompt_tokens + 1
    if n_starts < n_prompts:
        raise UsageError(
            f"the prompt text has {len(ids)} tokens: too few for {n_prompts} distinct prompts of "
            f"{prompt_tokens} tokens; ask for fewer or shorter prompts"
        )
    starts = torch.linspace(0, n_starts - 1, n_prompts, dtype=torch.float64).long().tolist()
    return torch.tensor([ids[start : start + prompt_tokens] for start in starts], dtype=torch.long)


def validation_text(ckpt: Path) -> str:
    """The validation split of the corpus the checkpoint was trained on.

    Read from the run folder's ``config.yaml`` (``runs/NAME/checkpoints/x.ckpt`` -> ``runs/NAME/``)
    and split like ``TextDataModule._train_val_text``: the last ``val_fraction`` of the characters.
    """
    config_file = ckpt.resolve().parent.parent / "config.yaml"
    if not config_file.is_file():
        raise UsageError(
            f"{config_file} does not exist, so the training data of {ckpt} is unknown (expected a checkpoint "
            "in runs/NAME/checkpoints/ of `anyformer gpt fit`); pass --prompt-file"
        )
    data: dict[str, Any] = (yaml.safe_load(config_file.read_text()) or {}).get("data") or {}
    if "source" not in data:
        raise UsageError(f"{config_file} has no data.source; pass --prompt-file")
    try:
        text = load_corpus(data["source"], data.get("root"))
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read the training corpus {data['source']!r} named in {config_file}: {err}") from err
    return text[int(len(text) * (1 - data.get("val_fraction", 0.1))) :]


def prompt_ids(tokenizer: Any, ckpt: Path, prompt_file: Path | None) -> list[int]:
    """The ids of the text to cut prompts from: ``prompt_file``, else the checkpoint's validation text."""
    if prompt_file is None:
        text = validation_text(ckpt)
    else:
        try:
            text = prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"--prompt-file {prompt_file} cannot be read as UTF-8 text: {err}") from None
    try:
        return tokenizer.encode(text)
    except ValueError as err:  # a character the char tokenizer never saw
        raise UsageError(
            f"the prompt text cannot be encoded by the checkpoint's {tokenizer.kind} tokenizer: {err}"
        ) from None


# -- command line ---------------------------------------------------------------------------
def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Continue held-out prompts with one decoding strategy of a GPT checkpoint and report the "
        "continuations' perplexity under the model (gen_ppl), distinct-1/2 and 4-gram repetition rate.",
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint of `anyformer gpt fit` or `anyformer lstm fit`")
    parser.add_argument("--strategy", choices=STRATEGIES, default="greedy")
    parser.add_argument("--temperature", type=float, default=1.0, help="sample, top-k, top-p: logit divisor")
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--prompts", type=positive_int, default=32, help="number of prompts (default 32)")
    parser.add_argument("--prompt-file", type=Path, help="UTF-8 text to cut the prompts from (default: val split)")
    parser.add_argument("--prompt-tokens", type=positive_int, default=32, help="tokens per prompt (default 32)")
    parser.add_argument("--new-tokens", type=positive_int, default=128, help="tokens generated per prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    parser.add_argument("--run-name", help="also record the metrics in runs/RUN_NAME/run.json")
    parser.add_argument(
        "--dtype", choices=WEIGHT_DTYPES, default="fp32",
        help="how the Linear weights are stored while decoding (bf16, int8: weight-only, see "
        "anyformer.core.quantize); with bf16 or int8 also reports greedy_agreement and val_loss_change against fp32",
    )  # fmt: skip
    return parser


def weight_dtype_metrics(reference: CausalModel, model: CausalModel, prompts: Tensor, ids: list[int], new_tokens: int):
    """How far low-precision weights move the model from its fp32 ``reference``.

    ``greedy_agreement``: share of the first ``new_tokens`` greedy positions of every prompt where
    both pick the same token; ``val_loss`` / ``val_loss_fp32``: mean next-token loss over windows of
    the model's context length cut from ``ids`` (as many as there are prompts, fewer tokens if the
    text is short); ``val_loss_change``: their relative difference.
    """
    window = min(reference.max_seq_len, len(ids) - prompts.shape[0] + 1)
    windows = cut_prompts(ids, prompts.shape[0], window)
    loss, loss_fp32 = mean_next_token_loss(model, windows), mean_next_token_loss(reference, windows)
    return {
        "greedy_agreement": greedy_agreement(reference, model, prompts, new_tokens),
        "val_loss": loss,
        "val_loss_fp32": loss_fp32,
        "val_loss_change": (loss - loss_fp32) / loss_fp32,
    }


@reports_usage_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``anyformer decode-eval``; returns the exit code (2: bad input, one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    typed = ["anyformer", "decode-eval", *argv]
    run_dir = run_record.evaluation_dir(args.run_name, typed) if args.run_name is not None else None
    started = run_record.utc_now()
    if args.new_tokens < REPETITION_N:
        raise UsageError(f"--new-tokens must be at least {REPETITION_N}: repetition_rate counts {REPETITION_N}-grams")
    try:
        cfg = GenerationConfig(
            strategy=args.strategy, max_new_tokens=args.new_tokens, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, beams=args.beams,
        )  # fmt: skip
    except ValueError as err:
        raise UsageError(_as_flags(str(err))) from None
    module = load_task(args.ckpt, tasks=("gpt", "lstm"))  # CheckpointError is a UsageError
    tokenizer, model = module.tokenizer, module.model
    if tokenizer is None:
        raise UsageError(f"{args.ckpt} holds no tokenizer; expected a checkpoint written by `anyformer gpt fit`")
    if args.prompt_tokens >= model.max_seq_len:
        raise UsageError(
            f"--prompt-tokens {args.prompt_tokens} leaves no room to generate in the model's "
            f"{model.max_seq_len}-token context; use at most {model.max_seq_len - 1}"
        )
    ids = prompt_ids(tokenizer, Path(args.ckpt), args.prompt_file)
    prompts = cut_prompts(ids, args.prompts, args.prompt_tokens)
    reference = copy.deepcopy(model) if args.dtype != "fp32" else None
    store_weights(model, args.dtype)
    sequences = generate(model, prompts, cfg, torch.Generator().manual_seed(args.seed))
    metrics = decoding_metrics(model, sequences, args.prompt_tokens)
    if reference is not None:
        metrics.update(weight_dtype_metrics(reference, model, prompts, ids, args.new_tokens))

    print(f"{args.strategy}: {args.prompts} prompts x {args.prompt_tokens} tokens, {args.new_tokens} new tokens each")
    sample = tokenizer.decode(sequences[0, args.prompt_tokens :].tolist())
    print(f"sample: {tokenizer.decode(prompts[0].tolist())!r} -> {sample!r}")
    for name, value in metrics.items():
        print(f"{name:<16} {value:.4f}")
    if run_dir is not None:
        run_record.record_evaluation(run_dir, typed, metrics, started, run_record.utc_now())
        print(f"recorded in {run_dir / run_record.RUN_FILE}")
    return 0
