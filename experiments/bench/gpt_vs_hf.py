"""GPT speed beside Hugging Face transformers' GPT2LMHeadModel at the same shapes.

Prints training tokens/s (forward + backward + AdamW step) and generation tokens/s (batch 1,
greedy, KV cache), each the median of interleaved repeats (ours, theirs, ours, theirs, ...)
so both see the same machine state.

    python -m experiments.bench.gpt_vs_hf --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core import TransformerConfig
from core.decoding import GenerationConfig, generate
from text.gpt import GPT, GPTConfig


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    context: int
    n_layers: int
    n_heads: int
    dim: int
    vocab: int


SHAPES = {
    "gpt-cpu": Shape("gpt-cpu", 12, 64, 4, 4, 128, 65),
    "gpt-small": Shape("gpt-small", 8, 256, 6, 6, 384, 65),
}


def build_models(shape: Shape, max_len: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our GPT and GPT-2, configured alike (learned positions, tanh GELU, pre-norm, tied head)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    ours = GPT(
        GPTConfig(
            vocab_size=shape.vocab,
            transformer=TransformerConfig(
                dim=shape.dim, n_layers=shape.n_layers, n_heads=shape.n_heads, max_seq_len=max_len,
                position="learned", activation="gelu_tanh",
            ),
        )
    )  # fmt: skip
    theirs = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=shape.vocab, n_positions=max_len, n_embd=shape.dim, n_layer=shape.n_layers,
            n_head=shape.n_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa",
            bos_token_id=0, eos_token_id=0,
        ),
    )  # fmt: skip
    return ours, theirs


def train_step_fn(model: torch.nn.Module, shape: Shape, hf: bool) -> Callable[[], None]:
    ids = torch.randint(0, shape.vocab, (shape.batch, shape.context))
    targets = torch.randint(0, shape.vocab, (shape.batch, shape.context))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        logits = model(ids).logits if hf else model(ids)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def generate_fn(model: torch.nn.Module, vocab: int, new_tokens: int, hf: bool) -> Callable[[], None]:
    prompt = torch.randint(0, vocab, (1, 1))
    model.eval()
    if hf:
        return lambda: model.generate(
            prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True,
            pad_token_id=0,
        )  # fmt: skip
    cfg = GenerationConfig("greedy", max_new_tokens=new_tokens)
    return lambda: generate(model, prompt, cfg)


def interleaved(fns: dict[str, Callable[[], None]], calls: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, alternating between them every repeat."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} interleaved repeats")
    print(f"{'shape':<10} {'measure':<28} {'anyformer':>12} {'transformers':>13} {'ratio':>6}")
    for name in args.shapes:
        shape = SHAPES[name]
        ours, theirs = build_models(shape, max_len=max(shape.context, args.new_tokens + 1))
        train = interleaved(
            {"ours": train_step_fn(ours, shape, False), "theirs": train_step_fn(theirs, shape, True)},
            calls=5, repeats=args.repeats,
        )  # fmt: skip
        tokens = shape.batch * shape.context
        ours_tps, theirs_tps = tokens / train["ours"], tokens / train["theirs"]
        print(f"{name:<10} {'train tokens/s':<28} {ours_tps:>12.0f} {theirs_tps:>13.0f} {ours_tps / theirs_tps:>6.2f}")
        with torch.no_grad():
            gen = interleaved(
                {"ours": generate_fn(ours, shape.vocab, args.new_tokens, False),
                 "theirs": generate_fn(theirs, shape.vocab, args.new_tokens, True)},
                calls=1, repeats=args.repeats,
            )  # fmt: skip
        ours_tps, theirs_tps = args.new_tokens / gen["ours"], args.new_tokens / gen["theirs"]
        label = f"generate tokens/s (B=1, {args.new_tokens})"
        print(f"{name:<10} {label:<28} {ours_tps:>12.0f} {theirs_tps:>13.0f} {ours_tps / theirs_tps:>6.2f}")


if __name__ == "__main__":
    main()
