"""Training-step throughput (forward + backward + AdamW) and model FLOP utilization."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyformer.core.train import hardware
from anyformer.experiments.bench.peers import GPT_PEERS, VIT_PEERS, Contender
from anyformer.experiments.bench.report import Row, Target
from anyformer.experiments.bench.shapes import GPTShape, ViTShape
from anyformer.experiments.bench.timing import Runtime, interleaved, matmul_probes

TRAIN_VS_TRANSFORMERS = Target(1.3)
TRAIN_VS_PLAIN = Target(1.0)  # x-transformers and the minimal GPT: >= 1.0 against both is >= the faster
TRAIN_VS_TIMM = Target(1.0)
MFU_TARGET = Target(0.75)
BF16_VS_FP32 = Target(1.5)  # bf16-mixed against fp32 training, on a CPU with bf16 units


def train_step(
    contender: Contender, inputs: Tensor, targets: Tensor, runtime: Runtime, cpu_bf16: bool = False
) -> Callable[[], None]:
    """One optimizer step on a fixed batch; every contender gets the same loss and the same AdamW,
    torch's fused one (several times faster than the default on CPU too, so the optimizer does
    not dilute the comparison of the models). ``cpu_bf16``: under CPU bf16 autocast, as
    ``--trainer.precision bf16-mixed`` trains."""
    model = contender.model.to(runtime.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    inputs, targets = inputs.to(runtime.device), targets.to(runtime.device)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16) if cpu_bf16 else runtime.autocast():
            logits = contender.logits(inputs)
            loss = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def gpt_batch(shape: GPTShape) -> tuple[Tensor, Tensor]:
    """Random (B, T) ids and next-token targets."""
    ids = torch.randint(0, shape.vocab, (shape.batch, shape.context + 1))
    return ids[:, :-1], ids[:, 1:]


def vit_batch(shape: ViTShape) -> tuple[Tensor, Tensor]:
    """Random (B, C, H, W) images and (B,) labels."""
    images = torch.randn(shape.batch, shape.channels, shape.image_size, shape.image_size)
    return images, torch.randint(0, shape.num_classes, (shape.batch,))


def matmul_parameters(model: nn.Module) -> int:
    """Weights that take part in a matmul per token: every Linear (a tied LM head counts once,
    as the matmul it is); embedding look-ups, norms and biases do not."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def gpt_flops_per_token(model: nn.Module, shape: GPTShape) -> float:
    """Training FLOPs per token (PaLM appendix B / nanoGPT): 6 N for the weights' forward and
    backward plus 12 L H Dh T for the attention scores and their use (no causal discount)."""
    head_dim = shape.dim // shape.n_heads
    return 6 * matmul_parameters(model) + 12 * shape.n_layers * shape.n_heads * head_dim * shape.context


def gpt_train_rows(name: str, shape: GPTShape, runtime: Runtime, matmul_size: int) -> list[Row]:
    """anyformer's tokens/s beside every GPT peer, its MFU and (with ``runtime.compile``) compiled vs eager.

    The matmul that measures the machine's peak takes its turns among the training steps.
    """
    torch.manual_seed(0)
    inputs, targets = gpt_batch(shape)
    contenders = {peer: build(shape) for peer, build in GPT_PEERS.items()}
    steps = {peer: train_step(c, inputs, targets, runtime) for peer, c in contenders.items()}
    probes, matmul_flops = matmul_probes(runtime, matmul_size)
    steps.update(probes)
    if runtime.device == "cpu":
        steps["anyformer bf16"] = train_step(GPT_PEERS["anyformer"](shape), inputs, targets, runtime, cpu_bf16=True)
    if runtime.compile:
        model = GPT_PEERS["anyformer"](shape).model
        compiled = Contender("anyformer compiled", model, torch.compile(model))
        steps["anyformer compiled"] = train_step(compiled, inputs, targets, runtime)
    seconds = interleaved(steps, runtime, calls=runtime.calls)
    tokens = shape.batch * shape.context
    tps = {peer: tokens / s for peer, s in seconds.items() if peer not in probes}
    targets = {"transformers": TRAIN_VS_TRANSFORMERS, "x-transformers": TRAIN_VS_PLAIN, "minimal": TRAIN_VS_PLAIN}
    rows = [
        Row(name, "train throughput", "tokens/s", tps["anyformer"], peer, tps[peer], target=target)
        for peer, target in targets.items()
    ]
    if runtime.device == "cpu":
        # bf16 pays only where the CPU multiplies bf16 natively; elsewhere the row shows what it costs.
        units = hardware.has_bf16_units()
        label = "train throughput, bf16-mixed" + ("" if units else " (CPU without bf16 units)")
        rows.append(Row(name, label, "tokens/s", tps["anyformer bf16"], "anyformer fp32", tps["anyformer"],
                        target=BF16_VS_FP32 if units and name == "gpt-small" else None))  # fmt: skip
    if runtime.compile:
        # `anyformer <task> fit --compile` trains this way; the peers stay eager, as their users run them.
        label, compiled_tps = "train throughput, torch.compile", tps["anyformer compiled"]
        rows.append(Row(name, label, "tokens/s", compiled_tps, "anyformer eager", tps["anyformer"]))
        rows += [Row(name, label, "tokens/s", compiled_tps, peer, tps[peer], target=t) for peer, t in targets.items()]
    achieved = gpt_flops_per_token(contenders["anyformer"].model, shape) * tps["anyformer"]
    rates = {probe: matmul_flops / seconds[probe] for probe in probes}
    peak_name = max(rates, key=rates.get)
    # The 75% target is the CPU's at gpt-small; on a GPU that shape is launch-bound and MFU is a reading.
    mfu_target = MFU_TARGET if name == "gpt-small" and runtime.device == "cpu" else None
    rows.append(mfu_row(name, achieved, peak_name, rates[peak_name], target=mfu_target))
    rows += [
        Row(name, "peak matmul rate", "GFLOP/s", rates[peak_name] / 1e9, probe, rate / 1e9)
        for probe, rate in rates.items()
        if probe != peak_name
    ]
    return rows


def mfu_row(name: str, achieved: float, peak_name: str, peak_flops: float, target: Target | None) -> Row:
    """Model FLOP/s of anyformer's training over the machine's fastest measured matmul FLOP/s."""
    return Row(
        name, "train MFU", "GFLOP/s", achieved / 1e9, peak_name, peak_flops / 1e9, target=target,
        ratio_override=achieved / peak_flops,
    )  # fmt: skip


def vit_train_rows(name: str, shape: ViTShape, runtime: Runtime) -> list[Row]:
    """anyformer's training images/s beside timm's VisionTransformer."""
    torch.manual_seed(0)
    images, labels = vit_batch(shape)
    steps = {peer: train_step(build(shape), images, labels, runtime) for peer, build in VIT_PEERS.items()}
    seconds = interleaved(steps, runtime, calls=runtime.calls)
    ips = {peer: shape.batch / s for peer, s in seconds.items()}
    return [Row(name, "train throughput", "images/s", ips["anyformer"], "timm", ips["timm"], target=TRAIN_VS_TIMM)]
