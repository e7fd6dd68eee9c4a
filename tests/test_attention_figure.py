"""``anyformer attention``: one figure per modality from a tiny checkpoint, the attention matrices
it draws checked against the definition, and bad inputs rejected with one line and no file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from anyformer.core.attention import AttentionMaps
from anyformer.core.cli.attention import layer_index
from anyformer.core.cli.errors import UsageError
from anyformer.core.cli.main import main as anyformer
from anyformer.core.config import TransformerConfig
from anyformer.core.train.checkpoint import load_task
from anyformer.rl.dt import DTConfig
from anyformer.rl.dt_task import DTModule
from anyformer.rl.figure import dt_attention, file_window, rollout_window
from anyformer.rl.trajectories import Trajectories, save_trajectories
from anyformer.speech.classify import cls_attention, load_clip
from anyformer.speech.features import SpectrogramConfig
from anyformer.speech.figure import default_clip, speech_rollout
from anyformer.speech.model import SpeechConfig
from anyformer.speech.sources import FSDD_ROOT, FSDD_TEST_INDICES
from anyformer.speech.speech_task import SpeechModule
from anyformer.text.bert.bert import BertConfig
from anyformer.text.bert.bert_task import BertClassifierModule, BertPretrainModule
from anyformer.text.figure import MAX_TOKENS, bert_attention, gpt_attention
from anyformer.text.gpt.gpt import GPTConfig, GPTModule
from anyformer.text.tokenizer import CharTokenizer
from anyformer.vision.cnn import ImageCNNConfig
from anyformer.vision.data import DIGITS, SOURCES
from anyformer.vision.figure import default_test_image, vit_rollout
from anyformer.vision.vit import ViTConfig
from anyformer.vision.vit_task import ImageCNNModule, ViTModule

TEXT = "the quick brown fox jumps over the lazy dog, and the dog sleeps on $5.\n"
RATE = 8000


def _stack(n_layers: int = 2, **overrides) -> TransformerConfig:
    return TransformerConfig(dim=16, n_layers=n_layers, n_heads=2, **overrides)


def _save(module, path: Path) -> Path:
    """Write ``module`` in the format ``anyformer <task> fit`` writes (config and inference state included)."""
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("attention_ckpts")
    tokenizer = CharTokenizer.train([TEXT])
    paths = {}
    gpt = GPTModule(GPTConfig(tokenizer.vocab_size, _stack(max_seq_len=64)))
    gpt.tokenizer = tokenizer
    paths["gpt"] = _save(gpt, root / "gpt.ckpt")
    bert_config = BertConfig(
        tokenizer.vocab_size, num_classes=2,
        transformer=_stack(norm_position="post", input_norm=True, max_seq_len=32, dropout=0.1, attn_dropout=0.1),
    )  # fmt: skip
    for name, cls in [("bert", BertPretrainModule), ("bert-classify", BertClassifierModule)]:
        bert = cls(bert_config)
        bert.tokenizer = tokenizer
        paths[name] = _save(bert, root / f"{name}.ckpt")
    vit = ViTModule(
        ViTConfig(image_size=8, patch_size=4, in_channels=1, num_classes=10, transformer=_stack(position="none"))
    )
    digits = SOURCES["digits"]
    vit.class_names, vit.mean, vit.std = list(DIGITS), list(digits.mean), list(digits.std)  # as a digits fit keeps them
    paths["vit"] = _save(vit, root / "vit.ckpt")
    spectrogram = SpectrogramConfig(sample_rate=RATE, duration_s=0.25, n_mels=16)
    speech = SpeechModule(SpeechConfig(2, spectrogram, patch_size=8, transformer=_stack(1, position="none")))
    paths["speech"] = _save(speech, root / "speech.ckpt")
    dt = DTModule(
        DTConfig(context_len=4, max_timestep=50, rtg_scale=10.0, transformer=_stack(position="none", max_seq_len=12))
    )
    dt.env_id = "CartPole-v1"
    dt.dataset_returns = {"episodes": 2, "mean": 20.0, "std": 1.0, "min": 19.0, "max": 21.0}
    paths["dt"] = _save(dt, root / "dt.ckpt")
    paths["vision-cnn"] = _save(ImageCNNModule(ImageCNNConfig(image_size=8, channels=[4])), root / "cnn.ckpt")
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("attention_inputs")
    paths = {"image": root / "digit.png", "clip": root / "tone.wav", "short": root / "short.npz"}
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(paths["image"])
    sf.write(paths["clip"], 0.5 * np.sin(np.arange(RATE // 4) * 0.3).astype(np.float32), RATE)
    short = Trajectories(
        observations=np.arange(20, dtype=np.float32).reshape(5, 4), actions=[0, 1, 1, 0, 1],
        rewards=[1.0, 2.0, 1.0, 1.0, 1.0], terminations=[False, True, False, False, True],
        truncations=[False] * 5, episode_starts=[0, 2], meta={"env_id": "CartPole-v1"},
    )  # fmt: skip
    save_trajectories(paths["short"], short)
    return paths


def _assert_rows_are_distributions(probs: torch.Tensor) -> None:
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    assert probs.min() >= 0


def _assert_png(path: Path) -> None:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


# -- the matrices ---------------------------------------------------------------------------
def test_gpt_attention_is_causal_and_matches_softmax_of_the_first_layer(ckpts):
    module = load_task(ckpts["gpt"])
    text = "the lazy dog"
    attention = gpt_attention(module, text, layer=1)
    assert (attention.layer, attention.n_layers) == (0, 2)
    assert "".join(attention.labels) == text  # one character token per position
    probs = attention.probs  # (H, T, T)
    _assert_rows_are_distributions(probs)
    assert torch.equal(probs.triu(1), torch.zeros_like(probs))  # nothing attends to a later token

    # reference: softmax(q k^T / sqrt(Dh)) under the causal mask, from the first block's own weights
    model, block = module.model, module.model.decoder.blocks[0]
    ids = torch.tensor([module.tokenizer.encode(text)])
    with torch.no_grad():
        x = block.norm1(model.decoder.positions(model.token_embedding(ids), 0))  # pre-norm, no input norm
        q, k, _ = block.attn.qkv_proj(x).view(1, len(text), 3, 2, 8).permute(2, 0, 3, 1, 4)  # 3 x (1, H, T, Dh)
        scores = q @ k.transpose(-2, -1) / math.sqrt(8)
        future = torch.ones(len(text), len(text), dtype=torch.bool).triu(1)
        expected = scores.masked_fill(future, float("-inf")).softmax(-1)[0]
    torch.testing.assert_close(probs, expected)
    assert not torch.allclose(gpt_attention(module, text).probs, expected)  # the default is the last layer


def test_gpt_attention_keeps_the_first_max_tokens(ckpts):
    module = load_task(ckpts["gpt"])
    text = TEXT * 3
    cropped = gpt_attention(module, text)
    assert "".join(cropped.labels) == text[:MAX_TOKENS]
    # causal: the first tokens' attention does not depend on what follows them
    torch.testing.assert_close(cropped.probs[:, :10, :10], gpt_attention(module, text[:10]).probs)


@pytest.mark.parametrize("task", ["bert", "bert-classify"])
def test_bert_attention_is_bidirectional_over_cls_text_sep(ckpts, task):
    module = load_task(ckpts[task])
    attention = bert_attention(module, "the dog sleeps")
    assert attention.labels == ["[CLS]", *"the dog sleeps", "[SEP]"]
    _assert_rows_are_distributions(attention.probs)
    later = torch.ones(16, 16, dtype=torch.bool).triu(1)
    assert (attention.probs[:, later] > 0).all()  # every token sees the later ones too
    long = bert_attention(module, TEXT * 3)
    assert len(long.labels) == 32 and long.labels[-1] == "[SEP]"  # max_seq_len of the checkpoint


def test_vit_rollout_of_the_first_layer_is_its_cls_attention(ckpts, inputs):
    module = load_task(ckpts["vit"])
    image = Image.open(inputs["image"]).convert("L")
    heat, logits = vit_rollout(module, image, layer=1)
    assert heat.shape == (2, 2) and logits.shape == (10,)
    maps = AttentionMaps()
    with torch.no_grad():
        pixels = (torch.from_numpy(np.array(image, np.float32) / 255) - module.mean[0]) / module.std[0]
        module.model.forward_features(pixels[None, None], maps=maps)
    # One layer of rollout is 0.5 A + 0.5 I; the identity only adds to the [CLS] column, which is dropped.
    row = maps.self_attn[0].mean(dim=1)[0, 0, 1:]  # heads averaged, [CLS] row, patch columns
    expected = (row - row.min()) / (row.max() - row.min())
    torch.testing.assert_close(heat, expected.reshape(2, 2))
    image_default, name = default_test_image(module)
    assert name == "digits test image 0" and image_default.mode == "L" and image_default.size == (8, 8)


def test_speech_rollout_through_one_layer_matches_the_cls_attention_map(ckpts, inputs):
    module = load_task(ckpts["speech"])
    wave = load_clip(inputs["clip"], module)
    spec, heat, logits = speech_rollout(module, wave)
    spec_ref, heat_ref, logits_ref = cls_attention(module.model, wave)
    torch.testing.assert_close(spec, spec_ref)
    assert heat.shape == spec.shape and spec.shape[0] == 16  # (mel bands, frames)
    torch.testing.assert_close(heat, heat_ref)
    torch.testing.assert_close(logits, logits_ref)


def test_default_fsdd_clip(tmp_path):
    with pytest.raises(UsageError, match="no FSDD test clip"):
        default_clip(tmp_path)
    if not FSDD_ROOT.is_dir():
        pytest.skip(f"{FSDD_ROOT} is not here")
    clip = default_clip()
    assert int(clip.stem.rpartition("_")[2]) in FSDD_TEST_INDICES


def test_dt_attention_over_a_rollout_is_causal_with_r_s_a_labels(ckpts):
    module = load_task(ckpts["dt"])
    window, description = rollout_window(module)
    assert "CartPole-v1" in description and "target return 21" in description
    attention = dt_attention(module, window, layer=2)
    assert attention.labels == [f"{kind}{t}" for t in range(1, 5) for kind in "Rsa"]
    _assert_rows_are_distributions(attention.probs)
    assert torch.equal(attention.probs.triu(1), torch.zeros_like(attention.probs))


def test_dt_attention_over_a_short_episode_never_looks_at_padding(ckpts, inputs):
    module = load_task(ckpts["dt"])
    window, _ = file_window(module, inputs["short"])  # the first episode has 2 steps: 2 padded
    torch.testing.assert_close(window["returns_to_go"], torch.tensor([[0.0, 0.0, 0.3, 0.2]]))  # (3, 2) / 10
    attention = dt_attention(module, window)
    assert attention.labels == ["pad"] * 6 + ["R1", "s1", "a1", "R2", "s2", "a2"]
    _assert_rows_are_distributions(attention.probs)
    real = attention.probs[:, 6:]  # the real tokens' rows
    assert torch.equal(real[..., :6], torch.zeros_like(real[..., :6]))
    assert torch.equal(attention.probs.triu(1), torch.zeros_like(attention.probs))


def test_layer_index():
    assert [layer_index(3, None), layer_index(3, 1), layer_index(3, 3)] == [2, 0, 2]
    for bad in (0, 4, -1):
        with pytest.raises(UsageError, match=f"--layer {bad} is out of range"):
            layer_index(3, bad)


# -- the command ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "source", "extra"),
    [
        ("gpt", None, []), ("gpt", "the $5 dog\n", ["--layer", "1"]), ("bert", "the dog", []),
        ("bert-classify", None, []), ("vit", "image", []), ("vit", None, ["--layer", "1"]),
        ("speech", "clip", []), ("dt", None, []), ("dt", "short", ["--layer", "1"]),
    ],
)  # fmt: skip
def test_command_writes_a_png(ckpts, inputs, tmp_path, capsys, task, source, extra):
    out = tmp_path / "figure.png"
    argv = ["attention", "--ckpt", str(ckpts[task]), "--out", str(out), *extra]
    if source is not None:
        argv.append(str(inputs.get(source, source)))
    assert anyformer(argv) == 0
    _assert_png(out)
    assert capsys.readouterr().out.strip() == f"attention figure: {out}"
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left


@pytest.mark.parametrize(
    ("task", "args", "needle"),
    [
        ("vision-cnn", [], "is a 'vision-cnn' checkpoint; this command needs one of"),
        ("vit", ["{missing}.png"], "missing.png: not a readable image"),
        ("speech", ["{missing}.wav"], "missing.wav"),
        ("dt", ["{missing}.npz"], "trajectory file not found"),
        ("gpt", [" "], "INPUT is an empty sentence"),
        ("bert", ["--layer", "3"], "--layer 3 is out of range: the checkpoint has layers 1..2"),
        ("gpt", ["--out", "{missing}/figure.png"], "does not exist"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_no_file(ckpts, tmp_path, capsys, task, args, needle):
    missing = str(tmp_path / "missing")
    out = tmp_path / "figure.png"
    argv = ["attention", "--ckpt", str(ckpts[task]), "--out", str(out), *(a.format(missing=missing) for a in args)]
    assert anyformer(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anyformer attention: error: ") and needle in lines[0], lines
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_run_name_draws_into_the_run_folder_and_records_the_run(ckpts, tmp_path, monkeypatch, capsys):
    from anyformer.core.train import run_record

    monkeypatch.chdir(tmp_path)
    argv = ["attention", "--ckpt", str(ckpts["gpt"]), "--run-name", "attn_gpt"]
    assert anyformer(argv) == 0
    _assert_png(tmp_path / "runs" / "attn_gpt" / run_record.FIGURE_FILE)
    record = run_record.read_record(tmp_path / "runs" / "attn_gpt")
    assert record["status"] == "finished" and record["task"] == "attention"
    assert record["argv"] == ["anyformer", *argv]
    capsys.readouterr()
    assert anyformer(["attention", "--ckpt", str(ckpts["gpt"])]) == 2  # neither --out nor --run-name
    assert "give --out FIGURE.png, or --run-name NAME" in capsys.readouterr().err
    assert anyformer(["attention", "--ckpt", str(tmp_path / "missing.ckpt"), "--run-name", "attn_bad"]) == 2
    assert not (tmp_path / "runs" / "attn_bad").exists()  # a failed run leaves no folder
