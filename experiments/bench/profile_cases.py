"""The cases ``python -m anyformer.experiments.bench --profile`` profiles, and the markdown it writes.

Training: one optimizer step (the benchmark's ``train_step``) of anyformer and the peers whose
targets it is measured against. Decoding: one greedy token at batch 1 as each library's own
generation loop makes it (anyformer's ``stream_tokens``, transformers' ``generate()``, whose
streamer hook marks each token), after a fixed prompt: the model forward, the cache update and
the loop's own work, exactly what the benchmark's generation rows time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from anyformer.core.decoding import GenerationConfig, stream_tokens
from anyformer.experiments.bench.generation import transformers_fn
from anyformer.experiments.bench.peers import GPT_PEERS, VIT_PEERS, anyformer_gpt, transformers_gpt2
from anyformer.experiments.bench.profiling import GROUPS, Driver, StepProfile, group_of, profile_steps, what_dominates
from anyformer.experiments.bench.shapes import GENERATION_SHAPES, GPT_SHAPES, VIT_SHAPES, GenerationShape
from anyformer.experiments.bench.timing import Runtime
from anyformer.experiments.bench.train import gpt_batch, train_step, vit_batch

PROFILED_GPT_PEERS = ("anyformer", "transformers", "minimal")  # those with an unmet training target
TRAIN_SKIP = 2  # unprofiled steps first: the first one allocates AdamW's state
DECODE_SKIP = 3  # the set-up before the prompt, the prefill and the first decoded token
DECODE_PROMPT = 64  # tokens in the cache when the profiled steps start
TOP_OPERATORS = 12


@dataclass(frozen=True)
class ProfileCase:
    """One shape and kind of step, profiled for every implementation (anyformer first)."""

    shape: str
    title: str
    profiles: list[StepProfile]


def _train_driver(step) -> Driver:
    def drive(tick, n_ticks: int) -> None:
        for _ in range(n_ticks):
            step()
            tick()

    return drive


def train_case(name: str, runtime: Runtime, steps: int) -> ProfileCase:
    """Training steps of anyformer and its GPT peers (or timm for a ViT shape) on one batch."""
    torch.manual_seed(0)
    if name in GPT_SHAPES:
        shape = GPT_SHAPES[name]
        builders = {peer: GPT_PEERS[peer] for peer in PROFILED_GPT_PEERS}
        inputs, targets = gpt_batch(shape)
        title = f"training step, batch {shape.batch} x {shape.context} tokens, {shape.n_layers} layers, D={shape.dim}"
    else:
        shape = VIT_SHAPES[name]
        builders = VIT_PEERS
        inputs, targets = vit_batch(shape)
        title = f"training step, batch {shape.batch} images {shape.image_size}px, {shape.depth} layers, D={shape.dim}"
    profiles = []
    for peer, build in builders.items():
        step = train_step(build(shape), inputs, targets, runtime)
        profiles.append(profile_steps(peer, _train_driver(step), skip=TRAIN_SKIP, active=steps))
    return ProfileCase(name, title + " (forward + backward + fused AdamW)", profiles)


class _TickStreamer:
    """transformers' streamer protocol: ``put`` gets the prompt, then every new token; ``end`` closes."""

    def __init__(self, tick) -> None:
        self.tick = tick

    def put(self, ids: Tensor) -> None:
        self.tick()

    def end(self) -> None:
        pass


def _anyformer_decode_driver(model: nn.Module, prompt: Tensor, runtime: Runtime) -> Driver:
    def drive(tick, n_ticks: int) -> None:
        with runtime.autocast():
            tick()  # as transformers' streamer gets the prompt: step 1 is then the prefill in both
            for _ in stream_tokens(model, prompt, GenerationConfig("greedy", max_new_tokens=n_ticks - 1)):
                tick()

    return drive


def _transformers_decode_driver(model: nn.Module, prompt: Tensor, runtime: Runtime) -> Driver:
    def drive(tick, n_ticks: int) -> None:
        transformers_fn(model, prompt, n_ticks - 1, runtime, do_sample=False, streamer=_TickStreamer(tick))()

    return drive


def decode_case(name: str, shape: GenerationShape, runtime: Runtime, steps: int) -> ProfileCase:
    """Greedy decoding steps at batch 1 through each library's cache, after a ``DECODE_PROMPT``-token prompt."""
    torch.manual_seed(0)
    model_shape = shape.model
    if DECODE_PROMPT + DECODE_SKIP + steps + 1 > model_shape.context:
        raise ValueError(f"{name}: context {model_shape.context} cannot hold the profiled decoding steps")
    ours = anyformer_gpt(model_shape).model.to(runtime.device).eval()
    theirs = transformers_gpt2(model_shape).model.to(runtime.device).eval()
    prompt = torch.randint(0, model_shape.vocab, (1, DECODE_PROMPT), device=runtime.device)
    profiles = [
        profile_steps("anyformer", _anyformer_decode_driver(ours, prompt, runtime), skip=DECODE_SKIP, active=steps),
        profile_steps(
            "transformers", _transformers_decode_driver(theirs, prompt, runtime), skip=DECODE_SKIP, active=steps
        ),
    ]
    title = (
        f"one greedy decoding step at batch 1 in each library's generation loop, {DECODE_PROMPT}-token prompt "
        f"cached, {model_shape.n_layers} layers, D={model_shape.dim}"
    )
    return ProfileCase(name, title, profiles)


def profile_cases(names: list[str], runtime: Runtime, steps: int) -> list[ProfileCase]:
    """Profile every shape in ``names`` (training shapes and generation shapes), ``steps`` steps each."""
    return [
        decode_case(name, GENERATION_SHAPES[name], runtime, steps)
        if name in GENERATION_SHAPES
        else train_case(name, runtime, steps)
        for name in names
    ]


def _ms(value: float) -> str:
    return f"{value:.3g}"


def render_case(case: ProfileCase) -> list[str]:
    """A case's section: the sentence, the per-implementation group table, each one's top operators."""
    lines = [f"## {case.shape}: {case.title}", "", f"**What dominates.** {what_dominates(case.profiles)}", ""]
    lines += [
        "| implementation | wall ms/step | in operators ms/step | operator calls/step | " + " | ".join(GROUPS) + " |",
        "|" + "---|" * (4 + len(GROUPS)),
    ]
    for profile in case.profiles:
        shares = profile.shares()
        cells = [profile.implementation, _ms(profile.wall_ms), _ms(profile.ops_ms), f"{profile.calls:,.0f}"]
        lines.append("| " + " | ".join(cells + [f"{shares[g]:.0%}" for g in GROUPS]) + " |")
    for profile in case.profiles:
        whole = max(profile.wall_us, sum(op.self_us for op in profile.ops))
        lines += [
            "",
            f"### {case.shape}, {profile.implementation}: top {TOP_OPERATORS} operators by self CPU time",
            "",
            "| operator | group | self CPU ms/step | calls/step | share of step |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| `{op.name}` | {group_of(op.name)} | {_ms(op.self_us / profile.steps / 1e3)} | "
            f"{op.calls / profile.steps:,.4g} | {op.self_us / whole:.1%} |"
            for op in profile.top(TOP_OPERATORS)
        ]
    return lines


def render_profile(cases: list[ProfileCase], header: str) -> str:
    """``header`` (how it was measured) and one section per case, as GitHub markdown."""
    lines = [header]
    for case in cases:
        lines += ["", *render_case(case)]
    return "\n".join(lines) + "\n"
