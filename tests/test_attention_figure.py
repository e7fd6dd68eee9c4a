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
from anyformer.speech.sources import FSDD_TEST_INDICES
from anyformer.speech.speech import SpeechConfig
from anyformer.speech.speech_task import SpeechModule
from anyformer.text.bert.bert import BertConfig
from anyformer.text.bert.bert_task import BertClassifierModule, BertPretrainModule
from anyformer.text.figure import MAX_TOKENS, bert_attention, gpt_attention, seq2seq_attention
from anyformer.text.gpt.gpt import GPTConfig
from anyformer.text.gpt.gpt_task import GPTModule
from anyformer.text.seq2seq.seq2seq import Seq2SeqConfig
from anyformer.text.seq2seq.seq2seq_task import Seq2SeqModule
from anyformer.text.tokenizer import CharTokenizer
from anyformer.vision.cnn import ImageCNNConfig
from anyformer.vision.data import DIGITS, SOURCES
from anyformer.vision.figure import default_test_image, vit_rollout
from anyformer.vision.vit import ViTConfig
from anyformer.vision.vit_task import ImageCNNModule, ViTModule
from tests.helpers import data_path

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
    scaled = GPTModule(
        GPTConfig(tokenizer.vocab_size, _stack(max_seq_len=64, position="sinusoidal"), scale_embeddings=True)
    )
    scaled.tokenizer = tokenizer
    paths["gpt-scaled"] = _save(scaled, root / "gpt_scaled.ckpt")
    # Encoder and decoder of different depths: the figure must tell their maps apart.
    seq2seq = Seq2SeqModule(
        Seq2SeqConfig(tokenizer.vocab_size, tokenizer.vocab_size, encoder=_stack(max_seq_len=32),
                      decoder=_stack(3, max_seq_len=32))
    )  # fmt: skip
    seq2seq.src_tokenizer = seq2seq.tgt_tokenizer = tokenizer
    paths["seq2seq"] = _save(seq2seq, root / "seq2seq.ckpt")
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
@pytest.mark.parametrize("task", ["gpt", "gpt-scaled"])
def test_gpt_attention_is_causal_and_matches_softmax_of_the_first_layer(ckpts, task):
    module = load_task(ckpts[task])
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
        embedded = model.token_embedding(ids) * model.embedding_scale
        x = block.norm1(model.decoder.positions(embedded, 0))  # pre-norm, no input norm
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
    data_path("fsdd/recordings")
    clip = default_clip()  # found through $ANYFORMER_DATA
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


# -- the figure draws the model's own forward -------------------------------------------------
def _own_forward_maps(model, *inputs, head=None, **options) -> AttentionMaps:
    """The maps of ``model.forward_features``, checked to come from the computation ``model.forward`` runs:
    ``forward`` is ``head(forward_features)`` (default head: ``model.forward_head``)."""
    maps = AttentionMaps()
    with torch.no_grad():
        features = model.forward_features(*inputs, **options, maps=maps)
        torch.testing.assert_close(model(*inputs, **options), (head or model.forward_head)(features))
    return maps


@pytest.mark.parametrize("task", ["gpt", "gpt-scaled", "bert", "bert-classify"])
def test_text_figures_draw_the_maps_of_the_models_own_forward(ckpts, task):
    module = load_task(ckpts[task])
    text, tokenizer = "the lazy dog", module.tokenizer
    model = module.model
    if task.startswith("gpt"):
        ids = torch.tensor([tokenizer.encode(text)])
        maps, attention = _own_forward_maps(model, ids), gpt_attention
    else:
        ids = torch.tensor([[tokenizer.cls_id, *tokenizer.encode(text), tokenizer.sep_id]])
        keep = torch.ones_like(ids, dtype=torch.bool)
        # pretraining: forward is the features (its MLM and NSP heads are separate calls)
        head = (lambda hidden: model.forward_head(hidden, keep)) if task == "bert-classify" else (lambda hidden: hidden)
        maps, attention = _own_forward_maps(model, ids, torch.zeros_like(ids), keep, head=head), bert_attention
    assert len(maps.self_attn) == 2
    for layer, expected in enumerate(maps.self_attn, 1):
        torch.testing.assert_close(attention(module, text, layer).probs, expected[0], rtol=0, atol=0)
    if task == "gpt-scaled":  # a figure that skipped the embedding scale would draw another network
        unscaled = AttentionMaps()
        with torch.no_grad():
            model.decoder(model.token_embedding(ids), maps=unscaled)
        assert not torch.allclose(unscaled.self_attn[-1][0], gpt_attention(module, text).probs, atol=1e-3)


@pytest.mark.parametrize("target", [None, "le chien dort"])
def test_seq2seq_figure_draws_the_maps_of_the_models_own_forward(ckpts, target):
    module = load_task(ckpts["seq2seq"])
    tokenizer, source = module.src_tokenizer, "the dog"
    attention = seq2seq_attention(module, source, target)
    if target is None:  # the model's own greedy translation, as `anyformer translate` gives it
        assert module.detokenize(attention.target_ids) == module.translate([source], strategy="greedy")[0]
    else:
        assert attention.target_ids == tokenizer.encode(target)
    source_ids = torch.tensor([[*tokenizer.encode(source), tokenizer.token_id("<|endoftext|>")]])
    target_in = torch.tensor([[tokenizer.cls_id, *attention.target_ids]])  # BOS + target
    keep = torch.ones_like(source_ids, dtype=torch.bool)
    maps = _own_forward_maps(module.model, source_ids, target_in, source_keep=keep)
    assert (len(maps.self_attn), len(maps.cross_attn)) == (2 + 3, 3)  # encoder layers, then decoder layers
    assert attention.encoder.labels == [*source, "<|endoftext|>"]
    assert attention.cross.key_labels == attention.encoder.labels
    assert attention.decoder.labels == attention.cross.labels == [tokenizer.decode([i]) for i in target_in[0].tolist()]
    for layer in (1, 2):
        drawn = seq2seq_attention(module, source, target, layer)
        torch.testing.assert_close(drawn.encoder.probs, maps.self_attn[layer - 1][0], rtol=0, atol=0)
        torch.testing.assert_close(drawn.decoder.probs, maps.self_attn[2 + layer - 1][0], rtol=0, atol=0)
        torch.testing.assert_close(drawn.cross.probs, maps.cross_attn[layer - 1][0], rtol=0, atol=0)
    # the default is the last layer of each stack: 2 of the encoder, 3 of the decoder
    torch.testing.assert_close(attention.encoder.probs, maps.self_attn[1][0], rtol=0, atol=0)
    torch.testing.assert_close(attention.decoder.probs, maps.self_attn[4][0], rtol=0, atol=0)
    torch.testing.assert_close(attention.cross.probs, maps.cross_attn[2][0], rtol=0, atol=0)
    _assert_rows_are_distributions(attention.cross.probs)
    assert torch.equal(attention.decoder.probs.triu(1), torch.zeros_like(attention.decoder.probs))


def test_dt_figure_draws_the_maps_of_the_models_own_forward(ckpts, inputs):
    module = load_task(ckpts["dt"])
    window, _ = file_window(module, inputs["short"])  # left-padded: the keep mask is exercised too
    steps = [window[name] for name in ("returns_to_go", "states", "actions", "timesteps")]
    maps = _own_forward_maps(module.model, *steps, keep=window["keep"])
    assert len(maps.self_attn) == 2
    for layer, expected in enumerate(maps.self_attn, 1):
        torch.testing.assert_close(dt_attention(module, window, layer).probs, expected[0], rtol=0, atol=0)


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
        ("seq2seq", None, []), ("seq2seq", "the dog ||| le chien", ["--layer", "1"]),
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
        ("seq2seq", ["--layer", "3"], "--layer 3 is out of range: the checkpoint has layers 1..2"),
        ("seq2seq", ["the dog |||"], "INPUT has nothing after '|||'"),
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


def test_out_into_a_new_folder_creates_it(ckpts, tmp_path, capsys):
    out = tmp_path / "new" / "nested" / "figure.png"
    assert anyformer(["attention", "--ckpt", str(ckpts["gpt"]), "--out", str(out)]) == 0
    _assert_png(out)
    capsys.readouterr()


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
