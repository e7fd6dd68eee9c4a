"""``anyformer generate``: stream text from a GPT checkpoint."""

from __future__ import annotations

import re
import sys

import torch

from anyformer.core.cli.errors import ArgumentParser, UsageError, reports_usage_errors
from anyformer.core.decoding import STRATEGIES, GenerationConfig, beam_search, stream_tokens
from anyformer.core.quantize import WEIGHT_DTYPES, store_weights
from anyformer.core.train.checkpoint import load_task

PROG = "anyformer generate"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Generate text from a GPT checkpoint.")
    parser.add_argument("--ckpt", required=True, help="checkpoint of `anyformer gpt fit` or `anyformer lstm fit`")
    parser.add_argument("--prompt", default="", help="text to continue (empty: start from <|endoftext|>)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="top-k")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--stop-at-eos", action="store_true", help="stop when the model emits <|endoftext|>")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampler (reproducible output)")
    parser.add_argument(
        "--dtype", choices=WEIGHT_DTYPES, default="fp32",
        help="how the Linear weights are stored while decoding: bf16 or int8 read fewer bytes per token "
        "(weight-only, see anyformer.core.quantize; check the effect with `anyformer decode-eval --dtype`)",
    )  # fmt: skip
    return parser


class _Printer:
    """Prints decoded text as tokens arrive, holding back a byte-level token that ends mid-character."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.ids, self.printed = tokenizer, [], 0

    def add(self, token_id: int) -> None:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if not text.endswith("\ufffd"):
            sys.stdout.write(text[self.printed :])
            sys.stdout.flush()
            self.printed = len(text)


def _as_flags(message: str) -> str:
    """``GenerationConfig.top_p must be ...`` -> ``--top-p must be ...``: name the option the user typed."""
    return re.sub(r"GenerationConfig\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), message)


@reports_usage_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``anyformer generate``; returns the exit code (2: bad input, one line on stderr)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = GenerationConfig(
            strategy=args.strategy, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, beams=args.beams, length_penalty=args.length_penalty,
            repetition_penalty=args.repetition_penalty,
        )  # fmt: skip
    except ValueError as err:
        raise UsageError(_as_flags(str(err))) from None
    module = load_task(args.ckpt, tasks=("gpt", "lstm"))  # CheckpointError is a UsageError
    tokenizer = module.tokenizer
    if tokenizer is None:
        raise UsageError(f"{args.ckpt} holds no tokenizer; expected a checkpoint written by `anyformer gpt fit`")
    cfg.eos_id = tokenizer.eos_id if args.stop_at_eos else None
    try:
        prompt_ids = tokenizer.encode(args.prompt) or [tokenizer.eos_id]
    except ValueError as err:  # a character the tokenizer cannot encode (char alphabet, lone surrogate)
        raise UsageError(f"--prompt cannot be encoded by the checkpoint's {tokenizer.kind} tokenizer: {err}") from None
    model = store_weights(module.model, args.dtype)
    prompt = torch.tensor([prompt_ids])
    if cfg.strategy == "beam":
        for rank, hyp in enumerate(beam_search(model, prompt, cfg)[0]):
            sys.stdout.write(f"{args.prompt}{tokenizer.decode(hyp.tokens)}\n--- beam {rank}: score {hyp.score:.3f}\n")
        return 0
    sys.stdout.write(args.prompt)
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    printer = _Printer(tokenizer)
    for next_ids in stream_tokens(model, prompt, cfg, generator):
        printer.add(int(next_ids[0]))
    sys.stdout.write("\n")
    return 0
