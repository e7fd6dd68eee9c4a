import dataclasses

import pytest
import torch

from anyformer.core.config import TransformerConfig
from anyformer.core.train.base import param_groups
from anyformer.core.vit import ViT, ViTConfig
from anyformer.speech.cnn import SpeechCNN, SpeechCNNConfig
from anyformer.speech.features import LogMelSpectrogram, SpectrogramConfig
from anyformer.speech.front_end import SpeechFrontEnd
from anyformer.speech.speech import SpeechConfig, SpeechTransformer
from anyformer.speech.speech_task import SpeechCNNModule, SpeechModule

SPECTROGRAM = SpectrogramConfig(n_mels=32, duration_s=0.5, normalize=True, mean=-8.0, std=5.0)  # 32 x 51


def tiny_config(**overrides) -> SpeechConfig:
    transformer = TransformerConfig(dim=32, n_layers=2, n_heads=4, mlp_ratio=2.0, position="none")
    settings = dict(num_classes=5, spectrogram=SPECTROGRAM, patch_size=8, transformer=transformer) | overrides
    return SpeechConfig(**settings)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"transformer.position='learned' must be 'none'"):
        tiny_config(transformer=TransformerConfig(dim=32, n_heads=4, position="learned"))
    with pytest.raises(ValueError, match=r"SpeechConfig\.pool='max' is not one of \['cls', 'mean'\]"):
        tiny_config(pool="max")
    with pytest.raises(ValueError, match=r"SpeechConfig\.position='rope' is not one of \['learned', 'sinusoidal'"):
        tiny_config(position="rope")
    with pytest.raises(ValueError, match=r"SpeechConfig\.patch_size"):
        tiny_config(patch_size=(8, 0))
    with pytest.raises(ValueError, match=r"SpeechConfig\.num_classes must be >= 1"):
        tiny_config(num_classes=0)
    cfg = tiny_config(patch_size=[16, 8], patch_stride=[8, 4])
    assert cfg.patch_size == (16, 8) and cfg.patch_stride == (8, 4)  # YAML lists become pairs
    assert cfg.spectrogram_size == (32, 51) and cfg.vit.grid_size == (3, 12) and cfg.vit.num_patches == 36
    assert (cfg.vit.image_size, cfg.vit.in_channels, cfg.vit.pad) == ((32, 51), 1, True)


@pytest.mark.parametrize("kind", ["transformer", "cnn"])
def test_both_models_share_one_front_end_with_the_weight_names_of_older_checkpoints(kind):
    torch.manual_seed(0)
    cnn_config = SpeechCNNConfig(num_classes=5, spectrogram=SPECTROGRAM, channels=[4, 8])
    model = SpeechTransformer(tiny_config()) if kind == "transformer" else SpeechCNN(cnn_config)
    assert type(model.front_end) is SpeechFrontEnd
    assert {"front_end.mel.spectrogram.window", "front_end.mel.mel_scale.fb"} <= set(model.state_dict())
    waves = 0.1 * torch.randn(3, SPECTROGRAM.n_samples)
    model.eval()
    torch.testing.assert_close(model.spectrogram(waves), LogMelSpectrogram(SPECTROGRAM)(waves))
    torch.testing.assert_close(model(waves), model(waves))  # deterministic in eval
    model.train()
    masked = model.spectrogram(waves)
    assert (masked != LogMelSpectrogram(SPECTROGRAM)(waves)).any()
    with pytest.raises(ValueError, match=r"\(B, 4000\).*0.5 s at 8000 Hz.*got \(4000,\)"):
        model(waves[0])


def test_forward_shapes_and_waveform_length_check():
    model = SpeechTransformer(tiny_config(patch_stride=(4, 4))).eval()
    waves = 0.1 * torch.randn(2, SPECTROGRAM.n_samples)
    spec = model.spectrogram(waves)
    assert spec.shape == (2, 32, 51)
    features = model.vit.forward_features(model.image(waves))
    assert features.shape == (2, 1 + model.cfg.vit.num_patches, 32)
    assert model(waves).shape == (2, 5)
    with pytest.raises(ValueError, match=r"\(B, 4000\).*0.5 s at 8000 Hz.*got \(2, 3999\)"):
        model(waves[:, :-1])


def test_mean_pool_reads_the_patch_tokens_only():
    model = SpeechTransformer(tiny_config(pool="mean")).eval()
    features = torch.randn(2, 1 + model.cfg.vit.num_patches, 32)
    changed = features.clone()
    changed[:, 0] += 10  # the [CLS] token does not reach a mean-pooled head
    torch.testing.assert_close(model.vit.forward_head(features), model.vit.forward_head(changed))
    torch.testing.assert_close(model.vit.forward_head(features), model.vit.head(features[:, 1:].mean(dim=1)))


@pytest.mark.parametrize("overrides", [{}, {"patch_stride": (4, 4), "pool": "mean"}, {"position": "sinusoidal"}])
def test_the_speech_model_is_the_core_vit_over_the_front_ends_spectrogram(overrides):
    torch.manual_seed(0)
    model = SpeechTransformer(tiny_config(**overrides)).eval()
    vit = ViT(ViTConfig(
        image_size=(32, 51), patch_size=8, pad=True, in_channels=1, num_classes=5, transformer=model.cfg.transformer,
        **overrides,
    )).eval()  # fmt: skip
    vit.load_state_dict(model.vit.state_dict())  # same weights, built without the speech config
    waves = 0.1 * torch.randn(3, SPECTROGRAM.n_samples)
    spec = LogMelSpectrogram(SPECTROGRAM)(waves)  # (B, F, T): the front end in eval mode
    with torch.no_grad():
        torch.testing.assert_close(model(waves), vit(spec[:, None]), rtol=0, atol=0)


def test_cls_token_and_positions_are_not_decayed():
    module = SpeechModule(tiny_config())
    decay, no_decay = param_groups(module, 0.1)
    names = {id(p): n for n, p in module.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert {"model.vit.tokenizer.cls_token", "model.vit.tokenizer.pos_embed"} <= no_decay_names
    assert "model.vit.tokenizer.proj.weight" in {names[id(p)] for p in decay["params"]}


def test_cnn_baseline_shapes_and_validation():
    cfg = SpeechCNNConfig(num_classes=7, spectrogram=SPECTROGRAM, channels=[4, 8, 16])
    model = SpeechCNN(cfg).eval()
    waves = 0.1 * torch.randn(3, SPECTROGRAM.n_samples)
    assert model.forward_features(model.spectrogram(waves)).shape == (3, 16)
    logits = model(waves)
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    too_deep = dataclasses.replace(SPECTROGRAM, n_mels=8)
    with pytest.raises(ValueError, match="at most 3 blocks"):
        SpeechCNNConfig(spectrogram=too_deep, channels=[4, 4, 4, 4])
    assert SpeechCNNModule(cfg).task_name == "speech-cnn"
