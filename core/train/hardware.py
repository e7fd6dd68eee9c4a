"""What this CPU can do, asked of the CPU itself: never assumed from one host's numbers.

The hosts the suite meets differ in what pays off: AVX2-only machines, AVX-512 ones with or
without bf16 dot products (``avx512_bf16``), and some with AMX tiles. bf16 autocast on a CPU
without bf16 units converts every operand and then multiplies in fp32, so it runs slower than
plain fp32 there; with them, its matmuls run at up to twice the fp32 rate.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
"""The /proc/cpuinfo flags the fast paths depend on: fp32 GEMM width and bf16 units."""


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_signature(cpuinfo: str | None = None) -> dict[str, object]:
    """The first CPU's ``family`` and ``model`` numbers (None where unknown) and which of ``ISA_FLAGS`` it has.

    Two CPUs of one marketing name ("AMD EPYC") can be a Zen 4 (family 25) and a Zen 5 (family 26),
    whose GEMM rates differ by up to 2x: the numbers say which one ran.
    """
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    first = text.split("\n\n", 1)[0]

    def field(name: str) -> str | None:
        found = re.search(rf"^{name}\s*:\s*(.*)$", first, flags=re.MULTILINE)
        return found.group(1).strip() if found else None

    family, model, flags = field("cpu family"), field("model"), set((field("flags") or "").split())
    return {
        "family": int(family) if family and family.isdigit() else None,
        "model": int(model) if model and model.isdigit() else None,
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
    }


def has_bf16_units() -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX), as torch's own dispatch sees it."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is not None for probe in probes):
        return any(probe() for probe in probes if probe is not None)
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_signature()["isa"]))  # a torch without the probes


def bf16_warning(precision: str, on_cpu: bool) -> str | None:
    """The warning for a bf16 ``precision`` (Lightning's name) on a CPU without bf16 units, else None."""
    if "bf16" not in precision or not on_cpu or has_bf16_units():
        return None
    return (
        f"precision {precision} on a CPU without bf16 units (no avx512_bf16 or AMX): every bf16 product is "
        "emulated in fp32 here, so this fit runs slower than with the default fp32 precision"
    )
