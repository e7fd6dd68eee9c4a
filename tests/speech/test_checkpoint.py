"""Checkpoints written before the speech transformer became the core ViT over a spectrogram image
still load (``anyformer.core.train.checkpoint.load_task``) and give the logits they gave then."""

import json
import math
from pathlib import Path

import torch

from anyformer.core.train.checkpoint import load_task, read_checkpoint
from anyformer.speech.speech_task import upgrade_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
OLD_CHECKPOINT = FIXTURES / "speech_v1.ckpt"
"""2 steps of speech_synthetic.yaml at dim 32 and 1 layer, written by commit d32767e's code."""


def old_clips(n_samples: int, rate: int) -> torch.Tensor:
    """(2, n_samples): a two-tone clip and a decaying chirp, the clips the expected logits were computed on."""
    t = torch.arange(n_samples, dtype=torch.float64) / rate
    return torch.stack([
        0.3 * torch.sin(2 * math.pi * 440 * t) + 0.2 * torch.sin(2 * math.pi * 1300 * t) * (t > 0.4),
        0.4 * torch.sin(2 * math.pi * (200 + 900 * t) * t) * torch.exp(-2 * t),
    ]).float()  # fmt: skip


def test_the_fixture_has_the_old_weight_names():
    names = set(read_checkpoint(OLD_CHECKPOINT)["state_dict"])
    assert {"model.tokenizer.pos_embed", "model.encoder.final_norm.weight", "model.head.weight"} <= names
    assert not any(name.startswith("model.vit.") for name in names)


def test_an_old_checkpoint_loads_and_gives_the_logits_it_gave_before():
    expected = json.loads((FIXTURES / "speech_v1_logits.json").read_text())
    module = load_task(OLD_CHECKPOINT, tasks=("speech",))
    assert module.class_names == expected["class_names"]
    assert module.config.position == "learned" and module.config.vit.pad  # the old tokenizer's behaviour
    spectrogram = module.config.spectrogram
    with torch.no_grad():
        logits = module(old_clips(spectrogram.n_samples, spectrogram.sample_rate))
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), rtol=0, atol=1e-5)


def test_upgrade_renames_only_the_old_vit_weights():
    old = {"model.tokenizer.proj.weight": 1, "model.encoder.blocks.0.norm1.bias": 2, "model.head.bias": 3}
    new = {"model.vit.tokenizer.proj.weight": 1, "model.vit.encoder.blocks.0.norm1.bias": 2, "model.vit.head.bias": 3}
    front_end = {"model.front_end.mel.mel_scale.fb": 4}
    assert upgrade_state_dict(old | front_end) == new | front_end
    assert upgrade_state_dict(new | front_end) == new | front_end  # today's checkpoints are left alone
