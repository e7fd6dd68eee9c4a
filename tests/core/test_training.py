import itertools
import math

import pytest
import torch
from torch import nn

from core import TransformerConfig
from core.training import AtomicCheckpointIO, OptimConfig, dataclass_from_dict, param_groups, warmup_cosine
from tests.core.conftest import TinyLM


def test_param_groups_decay_only_weight_matrices():
    model = TinyLM()
    model.no_weight_decay = lambda: {"decoder.blocks.0.attn.out_proj.weight"}
    decay, no_decay = param_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "decoder.blocks.0.attn.qkv_proj.weight" in decayed
    assert "decoder.blocks.1.mlp.fc2.weight" in decayed
    assert not any(n.endswith(".bias") or "norm" in n or "embedding" in n or "positions" in n for n in decayed)
    assert "decoder.blocks.0.attn.out_proj.weight" not in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_cosine_schedule_shape():
    lrs = [warmup_cosine(step, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) for step in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_dataclass_from_dict_rebuilds_nested_configs():
    from dataclasses import asdict

    from text.gpt import GPTConfig

    config = GPTConfig(vocab_size=77, transformer=TransformerConfig(dim=48, n_heads=6, position="rope"))
    assert dataclass_from_dict(GPTConfig, asdict(config)) == config
    assert dataclass_from_dict(OptimConfig, {"lr": 0.5}).lr == 0.5


def test_atomic_checkpoint_io_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.ones(3)}, path)
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"weights": torch.zeros(3)}, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    from core.init import init_weights

    model = TinyLM(dim=256, n_layers=8, n_heads=4)
    init_weights(model, n_layers=8, std=0.02)
    assert model.decoder.blocks[0].attn.qkv_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.decoder.blocks[0].mlp.fc2.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert isinstance(model.decoder.blocks[0].norm1, nn.LayerNorm)
