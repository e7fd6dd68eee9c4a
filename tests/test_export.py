"""``anyformer export``: every task's checkpoint either exports to a loadable artifact or is refused
with exit status 2 and one line naming the unsupported option; a safetensors export reloads to the
same model (``anyformer.load``, identical outputs) and an ONNX export computes the torch outputs
(onnxruntime, within 1e-4, at two batch sizes); a failed export leaves ``--out`` as it was.

The checkpoints are tiny untrained modules of every task, saved as Lightning saves them
(``on_save_checkpoint``), so no fit runs here.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import anyformer
from anyformer.core.cli import export as export_cli
from anyformer.core.cli.export import EXPORTERS, main
from anyformer.core.cli.tasks import TASKS
from anyformer.core.config import TransformerConfig
from anyformer.core.train.checkpoint import CheckpointError
from anyformer.text.tokenizer import BPETokenizer

TEXT = "hello world, the quick brown fox jumps over the lazy dog.\n" * 4
CONTEXT = 16
"""max_seq_len of the tiny text models."""


def _stack(**overrides) -> TransformerConfig:
    return TransformerConfig(dim=16, n_layers=1, n_heads=2, **overrides)


def tiny_modules() -> dict:
    """An untrained module of every task, with what inference needs (tokenizer, labels, statistics)."""
    from anyformer.rl.dt import DTConfig
    from anyformer.rl.dt_task import DTModule
    from anyformer.speech.cnn import SpeechCNNConfig
    from anyformer.speech.features import SpectrogramConfig
    from anyformer.speech.speech import SpeechConfig
    from anyformer.speech.speech_task import SpeechCNNModule, SpeechModule
    from anyformer.text.baselines.bow import BagOfWordsConfig, BagOfWordsModule
    from anyformer.text.baselines.gru_seq2seq import GRUSeq2SeqConfig, GRUSeq2SeqModule
    from anyformer.text.baselines.lstm import LSTMConfig, LSTMModule
    from anyformer.text.bert.bert import BertConfig
    from anyformer.text.bert.bert_task import BertClassifierModule, BertPretrainModule
    from anyformer.text.gpt.gpt import GPTConfig
    from anyformer.text.gpt.gpt_task import GPTModule
    from anyformer.text.preference.dpo_task import DPOConfig, DPOModule
    from anyformer.text.seq2seq.seq2seq import Seq2SeqConfig
    from anyformer.text.seq2seq.seq2seq_task import Seq2SeqModule
    from anyformer.vision.cnn import ImageCNNConfig
    from anyformer.vision.vit import ViTConfig
    from anyformer.vision.vit_task import ImageCNNModule, ViTModule

    torch.manual_seed(0)
    tokenizer = BPETokenizer.train([TEXT], 270)
    vocab = tokenizer.vocab_size
    bert_stack = _stack(
        max_seq_len=CONTEXT, norm_position="post", input_norm=True
    )  # BERT's layout: the hf export takes it
    spectrogram = SpectrogramConfig(sample_rate=8000, duration_s=0.25, n_mels=16, normalize=True, mean=-3.0, std=2.0)
    modules = {
        "gpt": GPTModule(GPTConfig(vocab_size=vocab, transformer=_stack(max_seq_len=CONTEXT))),
        "lstm": LSTMModule(LSTMConfig(vocab_size=vocab, dim=16, n_layers=1, max_seq_len=CONTEXT)),
        "bert": BertPretrainModule(BertConfig(vocab_size=vocab, transformer=bert_stack)),
        "bert-classify": BertClassifierModule(BertConfig(vocab_size=vocab, transformer=bert_stack)),
        "text-bow": BagOfWordsModule(BagOfWordsConfig(vocab_size=vocab, max_seq_len=CONTEXT, dim=16,
                                                      bigram_buckets=32)),
        "seq2seq": Seq2SeqModule(Seq2SeqConfig(vocab, vocab, encoder=_stack(max_seq_len=CONTEXT),
                                               decoder=_stack(max_seq_len=CONTEXT))),
        "gru-seq2seq": GRUSeq2SeqModule(GRUSeq2SeqConfig(vocab, vocab, emb_dim=16, hidden_dim=16,
                                                         max_source_len=CONTEXT, max_target_len=CONTEXT)),
        "vit": ViTModule(ViTConfig(image_size=(8, 12), patch_size=4, in_channels=1, num_classes=3,
                                   transformer=_stack(position="none", norm_eps=1e-6))),
        "vision-cnn": ImageCNNModule(ImageCNNConfig(image_size=8, in_channels=3, num_classes=3, channels=[4, 8])),
        "speech": SpeechModule(SpeechConfig(2, spectrogram, patch_size=8, transformer=_stack(position="none"))),
        "speech-cnn": SpeechCNNModule(SpeechCNNConfig(2, spectrogram, channels=[4, 8])),
        "dt": DTModule(DTConfig(context_len=4, max_timestep=50, transformer=_stack(position="none", max_seq_len=12))),
        "dpo": DPOModule(DPOConfig(GPTConfig(vocab_size=vocab, transformer=_stack(max_seq_len=CONTEXT)))),
    }  # fmt: skip
    for name, module in modules.items():
        if hasattr(module, "tokenizer"):
            module.tokenizer = tokenizer
        if hasattr(module, "class_names"):
            module.class_names = [f"{name}-class-{i}" for i in range(module.config.num_classes)]
        if hasattr(module, "mean"):
            module.mean, module.std = [0.5] * len(module.mean), [0.25] * len(module.std)
    for name in ("seq2seq", "gru-seq2seq"):
        modules[name].src_tokenizer = modules[name].tgt_tokenizer = tokenizer
    modules["dt"].env_id = "CartPole-v1"
    assert sorted(modules) == sorted(TASKS)
    return modules


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """task -> a .ckpt of its tiny module, as Lightning writes one after training."""
    root = tmp_path_factory.mktemp("ckpts")
    paths = {}
    for task, module in tiny_modules().items():
        checkpoint = {"state_dict": module.state_dict(), "pytorch-lightning_version": pl.__version__}
        module.on_save_checkpoint(checkpoint)
        paths[task] = root / f"{task}.ckpt"
        torch.save(checkpoint, paths[task])
    return paths


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def converter_available(path: str) -> bool:
    module, _, name = path.partition(":")
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


# -- safetensors: every task, anyformer.load gives the same model -----------------------------------
def _same_outputs(task: str, exported: anyformer.api.Model, original: anyformer.api.Model) -> None:
    """The API method of ``task`` (or the forward) gives identical results on both."""
    torch.manual_seed(1)
    if task in ("gpt", "lstm", "dpo"):
        options = {"max_new_tokens": 6, "strategy": "greedy"}
        assert exported.generate("hello ", **options) == original.generate("hello ", **options)
    elif task in ("vit", "vision-cnn"):
        images = torch.rand(2, exported.config.in_channels, 8, 12)
        assert exported.classify(images, top_k=3) == original.classify(images, top_k=3)
    elif task in ("speech", "speech-cnn"):
        waves = torch.randn(2, exported.config.spectrogram.n_samples) * 0.1
        assert exported.classify(waves, top_k=2) == original.classify(waves, top_k=2)
    elif task in ("bert-classify", "text-bow"):
        assert exported.classify(["the quick fox", "lazy dog"], top_k=2) == original.classify(
            ["the quick fox", "lazy dog"], top_k=2
        )
    elif task in ("seq2seq", "gru-seq2seq"):
        assert exported.translate(["hello world"], beam_size=2, max_len=5) == original.translate(
            ["hello world"], beam_size=2, max_len=5
        )
    elif task == "dt":
        assert exported.rollout(10.0, seed=3, max_steps=4) == original.rollout(10.0, seed=3, max_steps=4)
    else:  # bert pretraining: no API method; the encoder's hidden states
        ids = torch.randint(0, exported.config.vocab_size, (2, 7))
        args = (ids, torch.zeros_like(ids), torch.ones_like(ids, dtype=torch.bool))
        with torch.no_grad():
            assert torch.equal(exported.model(*args), original.model(*args))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_safetensors_export_reloads_to_the_same_model(task, checkpoints, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "export"
    code, stdout, stderr = run(["--ckpt", str(checkpoints[task]), "--format", "safetensors", "--out", str(out)], capsys)
    assert (code, stderr) == (0, "")
    assert sorted(path.name for path in out.iterdir()) == ["anyformer.json", "model.safetensors"]
    assert stdout == f"wrote {out}: anyformer.json, model.safetensors\n"

    meta = json.loads((out / "anyformer.json").read_text())
    plain = load_file(out / "model.safetensors")  # no pickle involved
    original = anyformer.load(checkpoints[task])
    state = original.module.state_dict()
    assert meta["task"] == task and meta["inference"] == json.loads(json.dumps(original.module.inference_state()))
    assert sorted(plain) == sorted(set(state) - set(meta["tied_weights"]))
    assert all(torch.equal(plain[name], state[name]) for name in plain)

    exported = anyformer.load(out)
    assert exported.task == task and exported.config == original.config
    exported_state = exported.module.state_dict()
    assert all(torch.equal(exported_state[name], tensor) for name, tensor in state.items())
    for name, source in meta["tied_weights"].items():  # tied again, not two copies
        assert exported_state[name].data_ptr() == exported_state[source].data_ptr()
    _same_outputs(task, exported, original)


def test_gpt_head_is_written_once_and_tied_again(checkpoints, tmp_path, capsys):
    out = tmp_path / "gpt"
    assert run(["--ckpt", str(checkpoints["gpt"]), "--format", "safetensors", "--out", str(out)], capsys)[0] == 0
    assert json.loads((out / "anyformer.json").read_text())["tied_weights"] == {
        "model.lm_head.weight": "model.token_embedding.weight"
    }
    model = anyformer.load(out).model
    assert model.lm_head.weight is model.token_embedding.weight


def test_the_tools_read_a_safetensors_export_as_they_read_the_ckpt(checkpoints, tmp_path, capsys):
    from anyformer.text.gpt.generate import main as generate

    out = tmp_path / "gpt"
    assert run(["--ckpt", str(checkpoints["gpt"]), "--format", "safetensors", "--out", str(out)], capsys)[0] == 0
    printed = []
    for ckpt in (checkpoints["gpt"], out):
        assert generate(["--ckpt", str(ckpt), "--prompt", "the ", "--max-new-tokens", "8", "--strategy", "greedy"]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and printed[0].startswith("the ")


# -- onnx: onnxruntime computes what torch computes ---------------------------------------------
def _onnx_cases(task: str, module, meta: dict) -> list[tuple[dict[str, np.ndarray], torch.Tensor]]:
    """(ONNX inputs, torch logits) at two batch sizes (and two lengths for text)."""
    generator = torch.Generator().manual_seed(0)
    cases = []
    for batch, length in ((1, 3), (3, CONTEXT)):
        with torch.no_grad():
            if task in ("vit", "vision-cnn"):
                size = module.config.image_size
                images = torch.randn(
                    batch, module.config.in_channels, *(size if isinstance(size, tuple) else (size,) * 2)
                )
                cases.append(({"images": images.numpy()}, module.model(images)))
            elif task in ("speech", "speech-cnn"):
                waves = torch.randn(batch, module.config.spectrogram.n_samples, generator=generator) * 0.1
                logits = module.model(waves)
                name = meta["inputs"][0]["name"]
                feed = waves if name == "waveform" else module.model.front_end(waves)
                cases.append(({name: feed.numpy()}, logits))
            elif task in ("bert-classify", "text-bow"):
                ids = torch.randint(0, module.config.vocab_size, (batch, length), generator=generator)
                mask = torch.ones(batch, length, dtype=torch.long)
                mask[-1, length // 2 :] = 0  # the last row is padded
                batch_ = {"input_ids": ids, "segment_ids": torch.zeros_like(ids), "attention_mask": mask.bool()}
                cases.append(({"input_ids": ids.numpy(), "attention_mask": mask.numpy()}, module.batch_logits(batch_)))
            else:
                ids = torch.randint(0, module.config.vocab_size, (batch, length), generator=generator)
                cases.append(({"input_ids": ids.numpy()}, module.model(ids)))
    return cases


@pytest.mark.parametrize("task", sorted(EXPORTERS["onnx"]))
def test_onnx_export_matches_torch_at_two_batch_sizes(task, checkpoints, tmp_path, capsys, caplog):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    code, _, stderr = run(["--ckpt", str(checkpoints[task]), "--format", "onnx", "--out", str(out)], capsys)
    assert code == 0, stderr
    meta = json.loads((out / "anyformer.json").read_text())
    assert meta["export"] == "onnx" and meta["task"] == task and meta["inference"]
    module = anyformer.load(checkpoints[task]).module
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [port["name"] for port in meta["inputs"]]
    assert session.get_inputs()[0].shape[0] == "batch"
    for feed, expected in _onnx_cases(task, module, meta):
        (logits,) = session.run(None, feed)
        assert logits.shape == tuple(expected.shape)
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=1e-4)
    if meta["inputs"][0]["name"] == "spectrogram":  # the fallback says so, in the JSON and in a warning
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert "front end did not export" in meta["notes"][0] and "front end did not export" in warnings[0]


# -- hf: the domains' converters -----------------------------------------------------------------
@pytest.mark.parametrize("task", sorted(EXPORTERS["hf"]))
def test_hf_export_writes_the_converters_folder(task, checkpoints, tmp_path, capsys):
    if not converter_available(EXPORTERS["hf"][task]):
        pytest.skip(f"{EXPORTERS['hf'][task]} is not there yet")
    out = tmp_path / "hf"
    code, stdout, stderr = run(["--ckpt", str(checkpoints[task]), "--format", "hf", "--out", str(out)], capsys)
    assert code == 0, stderr  # the tiny configs use only options the converters express
    assert {"config.json", "model.safetensors"} <= {path.name for path in out.iterdir()}
    assert stdout.startswith(f"wrote {out}: ") and [path.name for path in tmp_path.iterdir()] == ["hf"]


def test_onnx_exports_the_plain_product_of_a_onednn_linear(tmp_path):
    """A ``Linear`` big enough for oneDNN would trace to the custom operator ``anyformer::onednn_linear``;
    the export copy computes ``F.linear`` instead, with the same weights."""
    ort = pytest.importorskip("onnxruntime")
    from anyformer.core.cli.onnx_export import Port, export_graph, plain_copy
    from anyformer.core.linear import Linear, uses_onednn

    torch.manual_seed(0)
    net = torch.nn.Sequential(Linear(512, 512), torch.nn.GELU(), Linear(512, 4)).eval()
    x = torch.randn(3, 512)
    copy = plain_copy(net)
    assert not any(isinstance(layer, Linear) for layer in copy.modules()) and net[0].weight is not copy[0].weight
    assert isinstance(net[0], Linear)  # the original is untouched
    inputs = [Port("x", x[:2], ["batch", 512], "float32", "")]
    outputs = [Port("y", None, ["batch", 4], "float32", "")]
    export_graph(copy, inputs, outputs, tmp_path / "model.onnx", "test")
    (y,) = ort.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(y, net(x).numpy(), atol=1e-4, rtol=1e-4)
    if uses_onednn(x, net[0].weight):
        with pytest.raises(Exception):  # noqa: B017 - the reason for the copy: no exporter knows the custom op
            torch.onnx.export(net, (x,), tmp_path / "raw.onnx", dynamo=True, verbose=False)


# -- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_unsupported_format_is_refused_by_name(task, checkpoints, tmp_path, capsys):
    refused = [fmt for fmt, tasks in EXPORTERS.items() if task not in tasks]
    assert "safetensors" not in refused
    for fmt in refused:
        out = tmp_path / fmt
        code, stdout, stderr = run(["--ckpt", str(checkpoints[task]), "--format", fmt, "--out", str(out)], capsys)
        assert (code, stdout) == (2, "")
        assert stderr.startswith(f"anyformer export: error: --format {fmt} does not take {task!r} checkpoints")
        assert "safetensors" in stderr and stderr.count("\n") == 1
        assert not out.exists()


def test_bad_checkpoint_format_and_destination_are_one_line_errors(checkpoints, tmp_path, capsys):
    not_a_ckpt = tmp_path / "notes.txt"
    not_a_ckpt.write_text("hello")
    code, _, stderr = run(["--ckpt", str(not_a_ckpt), "--format", "safetensors", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and str(not_a_ckpt) in stderr and stderr.count("\n") == 1
    code, _, stderr = run(["--ckpt", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "without anyformer.json" in stderr  # a folder that is not an export

    with pytest.raises(SystemExit) as exit_:
        main(["--ckpt", str(checkpoints["gpt"]), "--format", "tflite", "--out", str(tmp_path / "a")])
    assert exit_.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err

    argv = ["--ckpt", str(checkpoints["gpt"]), "--format", "safetensors", "--out", str(not_a_ckpt)]
    code, _, stderr = run(argv, capsys)
    assert code == 2 and f"--out {not_a_ckpt} is a file" in stderr and not_a_ckpt.read_text() == "hello"
    code, _, stderr = run([*argv, "--force"], capsys)
    assert code == 2 and not_a_ckpt.read_text() == "hello"
    argv[-1] = str(checkpoints["gpt"].parent)  # --force would delete the checkpoint
    code, _, stderr = run([*argv, "--force"], capsys)
    assert code == 2 and "choose another folder" in stderr and checkpoints["gpt"].exists()
    assert not (tmp_path / "a").exists()


def test_an_onnx_export_is_not_read_as_a_checkpoint(checkpoints, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert run(["--ckpt", str(checkpoints["text-bow"]), "--format", "onnx", "--out", str(out)], capsys)[0] == 0
    with pytest.raises(CheckpointError, match="is an 'onnx' export"):
        anyformer.load(out)


def test_existing_out_needs_force_and_a_failed_export_leaves_it_as_it_was(checkpoints, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    argv = ["--ckpt", str(checkpoints["text-bow"]), "--format", "safetensors", "--out", str(out)]
    code, _, stderr = run(argv, capsys)
    assert code == 2 and "pass --force" in stderr and (out / "keep.txt").read_text() == "old"

    def half_then_fail(module, folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_cli, "resolve", lambda path: half_then_fail)
    for target, force in ((out, ["--force"]), (tmp_path / "new", [])):
        with pytest.raises(RuntimeError, match="disk full"):
            main([*argv[:-1], str(target), *force])
        assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # no stage folder, no "new"
        assert [path.name for path in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "old"

    monkeypatch.undo()
    code, _, _ = run([*argv, "--force"], capsys)
    assert code == 0 and sorted(path.name for path in out.iterdir()) == ["anyformer.json", "model.safetensors"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_a_converter_that_refuses_an_option_is_a_one_line_error(checkpoints, tmp_path, capsys, monkeypatch):
    def refuses(module, folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise ValueError("position='alibi' has no transformers equivalent")

    monkeypatch.setattr(export_cli, "resolve", lambda path: refuses)
    out = tmp_path / "hf"
    code, _, stderr = run(["--ckpt", str(checkpoints["gpt"]), "--format", "hf", "--out", str(out)], capsys)
    assert code == 2 and stderr == (
        "anyformer export: error: --format hf cannot export this 'gpt' checkpoint: "
        "position='alibi' has no transformers equivalent\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_export_is_a_tool_of_the_anyformer_command():
    from anyformer.core.cli.tasks import TOOLS

    assert TOOLS["export"][0] == "anyformer.core.cli.export:main"
