"""The Python API (``anyformer.load``) and Lightning's ``Module.load_from_checkpoint``, each checked
against an independent path: the command of the same name, the module's own forward, or the domain
function the command calls. Tiny fits through the CLI make the checkpoints (one step each)."""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import anyformer
from anyformer.api import TaskMismatchError
from anyformer.core.train.base import TaskModule
from anyformer.core.train.checkpoint import CheckpointError, load_task
from anyformer.rl.dt_task import DTModule
from anyformer.rl.envs import make_env
from anyformer.rl.rollout import rollout
from anyformer.speech.audio import fit_duration
from anyformer.text.gpt.generate import main as generate_cli
from anyformer.text.sentence_encoding import encode_sentence
from anyformer.text.seq2seq.translate import main as translate_cli
from anyformer.vision.classify import classify_images
from tests.helpers import run_cli, untrained_cartpole_dt

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
ONE_STEP = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=1", *QUIET]


def python_block(readme: str) -> str:
    """The first ```python block of the README's ``## Python`` section."""
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder that is not the repository: configs are given as written in the README."""
    return tmp_path_factory.mktemp("api")


@pytest.fixture(scope="module")
def gpt_ckpt(workdir) -> Path:
    """The README's checkpoint: the packaged demo config, three steps, run from outside the repository."""
    run_cli(workdir, ["gpt", "fit", "--config", "experiments/text/gpt_demo.yaml", "--trainer.max_steps", "3", *QUIET])
    return workdir / "runs" / "gpt_demo" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def vit_ckpt(workdir) -> Path:
    run_cli(workdir, ["vit", "fit", "--config", str(REPO / "experiments/vision/vit_digits.yaml"), *ONE_STEP])
    return workdir / "runs" / "vit_digits" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def bert_ckpt(workdir) -> Path:
    rng = random.Random(0)
    words = {0: ["bad", "dull"], 1: ["good", "great"]}
    for split in ("train", "val"):
        rows = "".join(f"the film was {rng.choice(words[i % 2])}\t{i % 2}\n" for i in range(32))
        (workdir / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    run_cli(workdir, [
        "bert-classify", "fit", "--config", str(REPO / "experiments/text/bert_tiny_demo_scratch.yaml"),
        "--data.source", "files", "--data.train_path", "train.tsv", "--data.val_path", "val.tsv",
        "--data.class_names", "[negative, positive]", "--data.vocab_size", "300", "--data.max_seq_len", "16",
        "--data.batch_size", "8", "--model.config.transformer.dim", "32", "--model.config.transformer.n_layers", "1",
        "--run-name", "bert_api", *ONE_STEP,
    ])  # fmt: skip
    return workdir / "runs" / "bert_api" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def speech_ckpt(workdir) -> Path:
    run_cli(workdir, [
        "speech", "fit", "--config", str(REPO / "experiments/speech/speech_synthetic.yaml"),
        "--data.synthetic_per_class", "4", "--data.batch_size", "8", "--model.config.transformer.dim", "32",
        "--model.config.transformer.n_layers", "1", *ONE_STEP,
    ])  # fmt: skip
    return workdir / "runs" / "speech_synthetic" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def seq2seq_ckpt(workdir) -> Path:
    run_cli(workdir, [
        "seq2seq", "fit", "--config", str(REPO / "experiments/text/seq2seq_demo.yaml"),
        "--data.vocab_size", "300", "--data.batch_size", "8", "--model.val_bleu_sentences", "0",
        "--model.config.encoder.dim", "32", "--model.config.encoder.n_layers", "1",
        "--model.config.decoder.dim", "32", "--model.config.decoder.n_layers", "1", *ONE_STEP,
    ])  # fmt: skip
    return workdir / "runs" / "seq2seq_demo" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def dt_ckpt(tmp_path_factory) -> Path:
    """An untrained CartPole checkpoint as Lightning wrote them before hyperparameters were saved."""
    return untrained_cartpole_dt(tmp_path_factory.mktemp("dt") / "dt.ckpt")


# -- README and generate -------------------------------------------------------------------
def test_readme_python_block_runs_on_the_checkpoint_of_a_tiny_fit(gpt_ckpt, workdir, monkeypatch, capsys):
    code = python_block((REPO / "README.md").read_text(encoding="utf-8"))
    assert "runs/gpt_demo/checkpoints/last.ckpt" in code
    monkeypatch.chdir(workdir)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert "gpt" in capsys.readouterr().out


@pytest.mark.parametrize("strategy", ["greedy", "top-p"])
def test_generate_equals_the_command_and_streaming_joins_to_it(gpt_ckpt, capsys, strategy):
    model = anyformer.load(gpt_ckpt)
    options = {"max_new_tokens": 12, "strategy": strategy, "seed": 3}
    text = model.generate("The ", **options)
    assert "".join(model.generate("The ", **options, stream=True)) == text
    argv = ["--ckpt", str(gpt_ckpt), "--prompt", "The ", "--strategy", strategy, "--max-new-tokens", "12",
            "--seed", "3"]  # fmt: skip
    assert generate_cli(argv) == 0
    assert capsys.readouterr().out == "The " + text + "\n"


def test_wrong_method_missing_file_and_two_devices_are_clear_errors(gpt_ckpt, tmp_path):
    model = anyformer.load(gpt_ckpt, map_location="cpu")
    assert (model.task, model.config) == ("gpt", model.module.config) and model.model is model.module.model
    for call in (lambda: model.classify("x"), lambda: model.translate("x"), lambda: model.rollout(1.0)):
        with pytest.raises(TaskMismatchError, match="'gpt' checkpoint, which serves: generate"):
            call()
    with pytest.raises(CheckpointError, match="does not exist") as err:
        anyformer.load(tmp_path / "missing.ckpt")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="not both"):
        anyformer.load(gpt_ckpt, map_location="cpu", device="meta")


# -- classify ------------------------------------------------------------------------------
def test_classify_images_equals_the_forward_of_the_module_and_the_command(vit_ckpt, tmp_path, capsys):
    model = anyformer.load(vit_ckpt)
    module = model.module
    size = module.config.image_size
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
    png = tmp_path / "digit.png"
    Image.fromarray(pixels).save(png)
    mean, std = torch.tensor(module.mean)[:, None, None], torch.tensor(module.std)[:, None, None]
    x = torch.from_numpy(pixels / 255.0).float()[None]  # (1, H, W) in [0, 1]
    with torch.no_grad():
        probs = module((x[None] - mean) / std).softmax(-1)[0]  # (num_classes,)
    best = probs.topk(3)
    expected = [(module.class_names[i], p) for p, i in zip(best.values.tolist(), best.indices.tolist())]
    for got in (model.classify(str(png), top_k=3)[0], model.classify([x], top_k=3)[0], model.classify(x[None], 3)[0]):
        assert [label for label, _ in got] == [label for label, _ in expected]
        assert [p for _, p in got] == pytest.approx([p for _, p in expected], abs=1e-5)
    assert classify_images(argparse.Namespace(ckpt=str(vit_ckpt), inputs=[str(png)], top_k=3, attention_map=None,
                                              keep_size=False)) == 0  # fmt: skip
    printed = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(label, float(p)) for p, label in printed] == [(label, round(p, 4)) for label, p in expected]
    with pytest.raises(ValueError, match="C=1"):
        model.classify(torch.zeros(3, size, size))


def test_classify_sentences_equals_the_forward_of_the_module(bert_ckpt):
    model = anyformer.load(bert_ckpt)
    module = model.module
    texts = ["the film was great", "the film was dull"]
    ranked = model.classify(texts, top_k=2)
    for text, row in zip(texts, ranked):
        ids, _, _ = encode_sentence(module.tokenizer, text, module.max_seq_len)
        with torch.no_grad():
            probs = module(torch.tensor([ids]), torch.zeros(1, len(ids), dtype=torch.long), torch.ones(1, len(ids)) > 0)
        probs = probs.softmax(-1)[0]
        assert dict(row) == pytest.approx({name: probs[i].item() for i, name in enumerate(module.class_names)})
    assert len(model.classify("one sentence")) == 1
    with pytest.raises(ValueError, match="takes strings"):
        model.classify([torch.zeros(3)])


def test_classify_audio_waveforms_and_files_equal_the_forward_of_the_model(speech_ckpt, tmp_path):
    model = anyformer.load(speech_ckpt)
    module = model.module
    spectrogram = module.config.spectrogram
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(spectrogram.n_samples // 2)  # a short clip: centred and zero-padded
    with torch.no_grad():
        probs = module.model(fit_duration(wave, spectrogram.n_samples, "center")[None]).softmax(-1)[0]
    expected = {name: probs[i].item() for i, name in enumerate(module.class_names)}
    k = len(expected)
    assert dict(model.classify(wave, top_k=k)[0]) == pytest.approx(expected, abs=1e-6)
    assert dict(model.classify([wave.numpy()], top_k=k)[0]) == pytest.approx(expected, abs=1e-6)
    path = tmp_path / "clip.wav"
    soundfile.write(path, wave.numpy(), spectrogram.sample_rate, subtype="FLOAT")
    assert dict(model.classify(path, top_k=k)[0]) == pytest.approx(expected, abs=1e-5)


# -- translate and rollout -----------------------------------------------------------------
def test_translate_equals_the_command(seq2seq_ckpt, capsys):
    model = anyformer.load(seq2seq_ckpt)
    sentences = ["a b c", "the quick brown fox"]
    for beam_size, flags in ((4, []), (1, ["--strategy", "greedy"])):
        assert translate_cli(["--ckpt", str(seq2seq_ckpt), *sentences, *flags]) == 0
        assert model.translate(sentences, beam_size=beam_size) == capsys.readouterr().out.splitlines()
    capped = model.translate(sentences, beam_size=1, max_len=2)
    assert all(len(model.module.tgt_tokenizer.encode(text)) <= 2 for text in capped)


def test_rollout_equals_the_domain_function_and_old_checkpoints_load(dt_ckpt):
    model = anyformer.load(dt_ckpt)
    returns = model.rollout(50.0, episodes=2, seed=7, max_steps=30)
    module = load_task(dt_ckpt)
    envs = [make_env("CartPole-v1") for _ in range(2)]
    histories = rollout(module.model, envs, 50.0, [7, 8], 30, generator=torch.Generator().manual_seed(7))
    assert returns == [history.episode_return for history in histories]
    again = DTModule.load_from_checkpoint(dt_ckpt)  # no hyperparameters: rebuilt from the anyformer section
    assert again.env_id == "CartPole-v1"
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), module.state_dict().values()))


# -- Lightning's load_from_checkpoint ----------------------------------------------------------
def _module_class(path: Path) -> type[TaskModule]:
    return type(load_task(path))


@pytest.mark.parametrize("name", ["gpt_ckpt", "vit_ckpt", "bert_ckpt", "seq2seq_ckpt", "speech_ckpt"])
def test_load_from_checkpoint_needs_no_config_and_equals_load_task(name, request):
    path = request.getfixturevalue(name)
    checkpoint = torch.load(path, weights_only=True)  # plain data only
    assert isinstance(checkpoint["hyper_parameters"]["config"], dict)
    reference = load_task(path)
    module = type(reference).load_from_checkpoint(path).eval()
    assert module.config == reference.config and type(module.optim) is type(reference.optim)
    assert module.inference_state() == reference.inference_state()  # tokenizer, labels, statistics
    for key, value in reference.state_dict().items():
        assert torch.equal(module.state_dict()[key], value), key


def test_validate_with_a_checkpoint_reads_its_hyperparameters_through_lightning_cli(gpt_ckpt, workdir):
    run_cli(workdir, ["gpt", "validate", "--config", "experiments/text/gpt_demo.yaml", "--ckpt_path", str(gpt_ckpt),
                      "--trainer.limit_val_batches", "1", *QUIET])  # fmt: skip
