"""Decoding speed through the KV cache: greedy at batch 1 (beside its memory-bandwidth bound,
and over a long generation, where per-token time should stay flat), beam search and batched
sampling, each beside ``transformers``' ``generate()`` on the same GPT-2-shaped model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from anyformer.core.decoding import GenerationConfig, beam_search, generate
from anyformer.core.quantize import store_weights, weight_bytes_per_token
from anyformer.experiments.bench.peers import anyformer_gpt, transformers_gpt2
from anyformer.experiments.bench.report import Row, Target
from anyformer.experiments.bench.shapes import GenerationShape
from anyformer.experiments.bench.timing import Runtime, copy_probe, interleaved

GREEDY_VS_TRANSFORMERS = Target(3.0)
WEIGHT_ONLY = ("bf16", "int8")
"""Weight storages timed beside fp32 (CPU only: the int8 kernel is torch's CPU one)."""


def ours_fn(model: nn.Module, prompt: Tensor, cfg: GenerationConfig, runtime: Runtime) -> Callable[[], object]:
    def run() -> object:
        with runtime.autocast():
            return beam_search(model, prompt, cfg) if cfg.strategy == "beam" else generate(model, prompt, cfg)

    return run


def transformers_fn(model: nn.Module, prompt: Tensor, new_tokens: int, runtime: Runtime, **options) -> Callable:
    """``generate()`` for exactly ``new_tokens`` tokens (the model has no end-of-sequence token)."""

    def run() -> Tensor:
        with runtime.autocast(), torch.no_grad():
            return model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, use_cache=True, **options
            )

    return run


def generation_rows(name: str, shape: GenerationShape, runtime: Runtime, quick: bool = False) -> list[Row]:
    """Greedy / beam / sampling throughput beside transformers, the bandwidth bound, per-token flatness,
    and (with ``runtime.compile``) greedy decoding through ``torch.compile(model, dynamic=True)``."""
    torch.manual_seed(0)
    ours = anyformer_gpt(shape.model).model.to(runtime.device).eval()
    theirs = transformers_gpt2(shape.model).model.to(runtime.device).eval()
    short, long = shape.new_tokens
    one = torch.zeros(1, 1, dtype=torch.long, device=runtime.device)
    batch = torch.zeros(shape.sample_batch, 1, dtype=torch.long, device=runtime.device)

    greedy = {
        "ours": ours_fn(ours, one, GenerationConfig("greedy", max_new_tokens=short), runtime),
        "theirs": transformers_fn(theirs, one, short, runtime, do_sample=False),
        "ours long": ours_fn(ours, one, GenerationConfig("greedy", max_new_tokens=long), runtime),
        "theirs long": transformers_fn(theirs, one, long, runtime, do_sample=False),
    }
    # Weight-only bf16 / int8 storage (`anyformer generate --dtype`): fewer bytes read per token.
    stored = {dtype: store_weights(copy.deepcopy(ours), dtype) for dtype in WEIGHT_ONLY if runtime.device == "cpu"}
    for dtype, model in stored.items():
        greedy[f"ours {dtype}"] = ours_fn(model, one, GenerationConfig("greedy", max_new_tokens=short), runtime)
        greedy[f"ours {dtype} long"] = ours_fn(model, one, GenerationConfig("greedy", max_new_tokens=long), runtime)
    greedy["copy"], copy_bytes = copy_probe(runtime, n_bytes=(32 if quick else 512) * 2**20)
    if runtime.compile:
        # dynamic=True: one graph for every cache length instead of a recompilation per step.
        compiled = torch.compile(ours, dynamic=True)
        greedy["ours compiled"] = ours_fn(compiled, one, GenerationConfig("greedy", max_new_tokens=short), runtime)
    seconds = interleaved(greedy, runtime)
    lengths = {"ours": short, "theirs": short, "ours long": long, "theirs long": long}
    tps = {key: n / seconds[key] for key, n in lengths.items()}
    bound = copy_bytes / seconds["copy"] / weight_bytes_per_token(ours)
    label = f"greedy B=1, {short} new"
    rows = [
        Row(name, label, "tokens/s", tps["ours"], "transformers", tps["theirs"], target=GREEDY_VS_TRANSFORMERS),
        Row(name, label, "tokens/s", tps["ours"], "weight-read bound", bound),
        Row(
            name, f"greedy B=1, {long} vs {short} new", "ms/token", 1e3 / tps["ours long"],
            f"anyformer, {short} new", 1e3 / tps["ours"], higher_is_better=False,
        ),
        Row(name, f"greedy B=1, {long} new", "tokens/s", tps["ours long"], "transformers", tps["theirs long"],
            target=GREEDY_VS_TRANSFORMERS),
    ]  # fmt: skip
    for dtype, model in stored.items():
        stored_tps = short / seconds[f"ours {dtype}"]
        stored_label = f"{label}, {dtype} weights"
        rows += [
            Row(name, stored_label, "tokens/s", stored_tps, "transformers", tps["theirs"],
                target=GREEDY_VS_TRANSFORMERS),
            Row(name, stored_label, "tokens/s", stored_tps, "weight-read bound",
                copy_bytes / seconds["copy"] / weight_bytes_per_token(model)),
            Row(name, f"greedy B=1, {long} new, {dtype} weights", "tokens/s", long / seconds[f"ours {dtype} long"],
                "transformers", tps["theirs long"], target=GREEDY_VS_TRANSFORMERS),
        ]  # fmt: skip
    if runtime.compile:
        compiled_tps = short / seconds["ours compiled"]
        rows.append(
            Row(name, f"{label}, torch.compile", "tokens/s", compiled_tps, "transformers", tps["theirs"],
                target=GREEDY_VS_TRANSFORMERS)
        )  # fmt: skip

    beams = GenerationConfig("beam", max_new_tokens=short, beams=shape.beams, length_penalty=1.0)
    sample = GenerationConfig("top-k", max_new_tokens=short, top_k=50)
    seconds = interleaved(
        {
            "ours beam": ours_fn(ours, one, beams, runtime),
            "theirs beam": transformers_fn(
                theirs, one, short, runtime, do_sample=False, num_beams=shape.beams, early_stopping=False,
            ),
            "ours sample": ours_fn(ours, batch, sample, runtime),
            "theirs sample": transformers_fn(theirs, batch, short, runtime, do_sample=True, top_k=50, top_p=1.0),
        },
        runtime,
    )  # fmt: skip
    labels = {"beam": f"beam search {shape.beams} beams, B=1", "sample": f"top-k sampling B={shape.sample_batch}"}
    tokens = {"beam": short, "sample": short * shape.sample_batch}  # new tokens of the output
    for kind, label in labels.items():
        ours_tps, theirs_tps = tokens[kind] / seconds[f"ours {kind}"], tokens[kind] / seconds[f"theirs {kind}"]
        rows.append(Row(name, f"{label}, {short} new", "tokens/s", ours_tps, "transformers", theirs_tps))
    return rows
