"""The attention the speech tools draw (``anyformer attention``'s figure, ``anyformer classify
--attention-map``) is read from the maps of the model's own ``vit.forward_features(..., maps=...)``."""

from __future__ import annotations

import math

import pytest
import torch

from anyformer.core.attention import AttentionMaps
from anyformer.core.config import TransformerConfig
from anyformer.core.rollout import attention_rollout, summary_weights
from anyformer.speech.classify import cls_attention
from anyformer.speech.features import SpectrogramConfig
from anyformer.speech.figure import speech_rollout
from anyformer.speech.speech import SpeechConfig
from anyformer.speech.speech_task import SpeechModule

SPECTROGRAM = SpectrogramConfig(sample_rate=8000, duration_s=0.25, n_mels=16)  # 16 x 26
CONFIGS = {
    "square": {"patch_size": 8},
    "overlapping strips": {"patch_size": (16, 4), "patch_stride": (16, 2)},
    "overlapping, mean pool": {"patch_size": (8, 4), "patch_stride": (4, 2), "pool": "mean", "position": "sinusoidal"},
}


def tiny_module(**overrides) -> SpeechModule:
    torch.manual_seed(0)
    transformer = TransformerConfig(dim=16, n_layers=3, n_heads=2, position="none")
    return SpeechModule(SpeechConfig(2, SPECTROGRAM, transformer=transformer, **overrides)).eval()


def chirp() -> torch.Tensor:
    t = torch.arange(SPECTROGRAM.n_samples) / SPECTROGRAM.sample_rate
    return 0.5 * torch.sin(2 * math.pi * (300 + 2000 * t) * t)


def own_maps(module: SpeechModule, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The spectrogram, every layer's attention from the model's own ``vit.forward_features``, and the logits."""
    model, maps = module.model, AttentionMaps()
    with torch.no_grad():
        spec = model.spectrogram(wave[None])  # (1, F, T)
        model.vit.forward_features(spec[:, None], maps=maps)
        logits = model(wave[None])[0]
    return spec[0], maps.self_attn, logits


def spread(module: SpeechModule, attention: torch.Tensor) -> torch.Tensor:
    """(1, 1+N, 1+N) attention -> (F, T) summary weights over the spectrogram, scaled to [0, 1]."""
    heat = module.model.vit.tokenizer.patch_map(summary_weights(attention, module.config.pool))[0]
    heat = heat - heat.min()
    return heat / heat.max()


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("layer", [1, 3, None])
def test_the_figures_rollout_is_read_from_the_models_own_maps(name, layer):
    module = tiny_module(**CONFIGS[name])
    spec_ref, attentions, logits_ref = own_maps(module, chirp())
    spec, heat, logits = speech_rollout(module, chirp(), layer)
    torch.testing.assert_close(spec, spec_ref, rtol=0, atol=0)
    assert heat.shape == spec.shape == (16, 26)
    torch.testing.assert_close(heat, spread(module, attention_rollout(attentions[: layer or 3])))
    torch.testing.assert_close(logits, logits_ref)


@pytest.mark.parametrize("name", CONFIGS)
def test_classify_draws_the_last_layers_maps_of_the_model(name):
    module = tiny_module(**CONFIGS[name])
    spec_ref, attentions, logits_ref = own_maps(module, chirp())
    spec, heat, logits = cls_attention(module.model, chirp())
    torch.testing.assert_close(spec, spec_ref, rtol=0, atol=0)
    torch.testing.assert_close(heat, spread(module, attentions[-1].mean(dim=1)))
    torch.testing.assert_close(logits, logits_ref)
