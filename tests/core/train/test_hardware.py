"""What the CPU can do: /proc/cpuinfo parsed for family, model and the ISA flags the fast paths use,
and the warning a bf16 fit gets on a CPU that would emulate bf16 in fp32."""

import logging

import pytest
import yaml

from anyformer.core.train import hardware
from tests.helpers import run_cli

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni

processor\t: 1
cpu family\t: 99
"""


def test_signature_reads_the_first_cpu_and_keeps_only_the_flags_that_matter():
    assert hardware.cpu_signature(ZEN4) == {"family": 25, "model": 17, "isa": ["avx2", "avx512f", "avx512_bf16"]}
    assert hardware.cpu_signature("flags : sse2 avx2\n") == {"family": None, "model": None, "isa": ["avx2"]}
    assert hardware.cpu_signature("") == {"family": None, "model": None, "isa": []}


@pytest.mark.parametrize("units", [True, False])
def test_only_a_bf16_precision_on_a_cpu_without_bf16_units_is_warned(monkeypatch, units):
    monkeypatch.setattr(hardware, "has_bf16_units", lambda: units)
    warned = hardware.bf16_warning("bf16-mixed", on_cpu=True)
    assert (warned is not None) == (not units)
    if warned:
        assert "bf16-mixed" in warned and "slower than with the default fp32" in warned
    assert hardware.bf16_warning("32-true", on_cpu=True) is None
    assert hardware.bf16_warning("bf16-mixed", on_cpu=False) is None  # a GPU has its own bf16 story


def test_the_bf16_units_probe_agrees_with_the_flags_the_cpu_reports():
    isa = set(hardware.cpu_signature()["isa"])
    if not isa:
        pytest.skip("no /proc/cpuinfo flags on this platform to compare with")
    assert hardware.has_bf16_units() == bool({"avx512_bf16", "amx_bf16"} & isa)


def test_a_bf16_fit_on_a_cpu_without_bf16_units_says_fp32_is_faster(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(hardware, "has_bf16_units", lambda: False)
    (tmp_path / "corpus.txt").write_text("to be or not to be, that is the question\n" * 40)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({
        "trainer": {"max_steps": 1, "limit_val_batches": 1, "accelerator": "cpu", "precision": "bf16-mixed",
                    "enable_progress_bar": False, "enable_model_summary": False},
        "model": {"config": {"transformer": {"dim": 16, "n_layers": 1, "n_heads": 2}}},
        "data": {"source": "corpus.txt", "tokenizer": "char", "context_len": 8, "batch_size": 2,
                 "train_batches_per_epoch": 2, "val_batches": 1},
    }))  # fmt: skip
    with caplog.at_level(logging.WARNING):
        run_cli(tmp_path, ["gpt", "fit", "--config", "tiny.yaml"])
    assert any("CPU without bf16 units" in record.getMessage() for record in caplog.records)
