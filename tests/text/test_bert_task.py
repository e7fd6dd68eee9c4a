"""BERT end to end: a short pretraining through the CLI, fine-tuning from its checkpoint,
classification from the fine-tuned checkpoint alone, and the errors of init_from."""

import argparse
import dataclasses
import logging
import random
from pathlib import Path

import pytest
import torch

from anyformer.core.cli.main import main as cli_main
from anyformer.core.train.checkpoint import CheckpointError, load_task
from anyformer.text.bert.bert import BertConfig
from anyformer.text.bert.bert_task import BertClassifierModule, _architecture_mismatches
from anyformer.text.classification_data import TextClassificationDataModule
from anyformer.text.classify import classify_text, classify_text_args
from tests.helpers import read_metrics, run_cli

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments" / "text"
GOOD, BAD = ["good", "great", "fine", "lovely"], ["bad", "awful", "dull", "boring"]
TINY = [
    "--model.config.transformer.dim", "32", "--model.config.transformer.n_layers", "1",
    "--model.config.transformer.n_heads", "2", "--trainer.enable_progress_bar", "false",
]  # fmt: skip


def _sentence(rng: random.Random, label: int) -> str:
    word = rng.choice(GOOD if label else BAD)
    return f"the {rng.choice(['film', 'play', 'book'])} was {word} and the cast was {word} too"


def _metrics(run: Path, column: str) -> list[float]:
    return read_metrics(run / "metrics.csv").get(column, [])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Pretrain (two validations) on a toy corpus, then fine-tune from it on a toy sentiment TSV."""
    workdir = tmp_path_factory.mktemp("bert")
    rng = random.Random(0)
    docs = ["\n".join(_sentence(rng, rng.randint(0, 1)) for _ in range(4)) for _ in range(300)]
    (workdir / "corpus.txt").write_text("\n\n".join(docs))
    for split, n in [("train", 200), ("val", 64)]:
        labels = [i % 2 for i in range(n)]
        rows = "".join(f"{_sentence(rng, y)}\t{y}\n" for y in labels)
        (workdir / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    run_cli(workdir, [
        "bert", "fit", "--config", str(EXPERIMENTS / "bert_tiny_demo.yaml"), *TINY,
        "--data.source", "corpus.txt", "--data.vocab_size", "300", "--data.max_seq_len", "40",
        "--data.batch_size", "16", "--trainer.max_steps", "120", "--trainer.val_check_interval", "60",
        "--model.optim.warmup_steps", "5", "--model.optim.lr", "3e-3",
    ])  # fmt: skip
    pretrained = workdir / "runs" / "bert_tiny_demo"
    run_cli(workdir, [
        "bert-classify", "fit", "--config", str(EXPERIMENTS / "bert_tiny_demo_finetune.yaml"), *TINY,
        "--data.source", "files", "--data.train_path", "train.tsv", "--data.val_path", "val.tsv",
        "--data.class_names", "[negative, positive]", "--data.max_seq_len", "32",
        "--data.init_from", str(pretrained / "checkpoints" / "last.ckpt"), "--data.batch_size", "16",
        "--trainer.max_epochs", "3", "--model.optim.warmup_steps", "5", "--model.optim.lr", "3e-3",
    ])  # fmt: skip
    return workdir, pretrained, workdir / "runs" / "bert_tiny_demo_finetune"


def test_pretraining_logs_mlm_and_nsp_metrics_and_learns(runs):
    _, pretrained, _ = runs
    mlm_acc, nsp_acc = _metrics(pretrained, "val_mlm_acc"), _metrics(pretrained, "val_nsp_acc")
    losses = _metrics(pretrained, "val_loss")
    assert len(mlm_acc) == len(nsp_acc) == len(losses) == 2
    assert all(0.0 <= acc <= 1.0 for acc in mlm_acc + nsp_acc)
    assert losses[1] < losses[0] and mlm_acc[1] > 0.2  # the toy corpus is very predictable


def test_finetuning_starts_from_the_pretrained_encoder(runs):
    _, pretrained, finetuned = runs
    ckpt = pretrained / "checkpoints" / "last.ckpt"
    pre = torch.load(ckpt, map_location="cpu", weights_only=True)
    config = load_task(ckpt, tasks=("bert",)).config
    config.transformer.max_seq_len = 32  # a shorter context keeps the first position rows
    module = BertClassifierModule(config, init_from=str(ckpt))
    ours = module.model.bert.state_dict()
    for name, value in ours.items():
        expected = pre["state_dict"][f"model.bert.{name}"]
        torch.testing.assert_close(value, expected[: len(value)], rtol=0, atol=0)
    assert module.tokenizer.to_state() == load_task(ckpt).tokenizer.to_state()
    assert _metrics(finetuned, "val_acc")[-1] >= 0.8  # the toy sentiment is learned in 3 short epochs
    assert len(_metrics(finetuned, "val_loss")) == 3


def test_classifier_checkpoint_alone_classifies(runs, capsys):
    _, _, finetuned = runs
    ckpt = finetuned / "checkpoints" / "last.ckpt"
    module = load_task(ckpt, tasks=("bert-classify",))
    assert module.class_names == ["negative", "positive"] and module.max_seq_len == 32
    texts = ["the film was great and the cast was great too", "the play was awful and the cast was awful too"]
    ranked = classify_text(module, texts, top_k=2)
    for row in ranked:
        assert [label for label, _ in row] in (["negative", "positive"], ["positive", "negative"])
        assert row[0][1] >= row[1][1] and sum(p for _, p in row) == pytest.approx(1.0, abs=1e-5)
    ids = [module.tokenizer.cls_id, *module.tokenizer.encode(texts[0]), module.tokenizer.sep_id]
    with torch.no_grad():
        probs = module(torch.tensor([ids]), torch.zeros(1, len(ids), dtype=torch.long), torch.ones(1, len(ids)) > 0)
    assert ranked[0][0][1] == pytest.approx(probs.softmax(-1).max().item(), abs=1e-5)
    assert classify_text_args(argparse.Namespace(ckpt=str(ckpt), inputs=texts, top_k=1)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == texts[0] and len(out) == 4 and out[1].split()[-1] in module.class_names


def test_long_or_odd_sentences_warn_and_are_cropped_from_the_right(runs, caplog):
    _, _, finetuned = runs
    module = load_task(finetuned / "checkpoints" / "last.ckpt", tasks=("bert-classify",))
    head = "the film was great and the cast was great too " * 10
    with caplog.at_level(logging.WARNING, logger="anyformer.text.classify"):
        ranked = classify_text(module, [head + "awful " * 50, head + "dull boring " * 80, "odd \ud800 text \x00 ☃"], 2)
    assert ranked[0] == ranked[1]  # only the first max_seq_len tokens count
    assert sum("cropped from the right" in r.message for r in caplog.records) == 2
    assert any("cannot encode" in r.message for r in caplog.records)
    assert len(ranked[2]) == 2


def test_init_from_a_wrong_checkpoint_is_a_clear_error(runs, tmp_path):
    _, pretrained, finetuned = runs
    classifier_ckpt = str(finetuned / "checkpoints" / "last.ckpt")
    config = load_task(classifier_ckpt).config
    with pytest.raises(CheckpointError, match="'bert-classify' checkpoint; it must be a 'bert' pretraining"):
        BertClassifierModule(config, init_from=classifier_ckpt)
    with pytest.raises(CheckpointError, match="'bert-classify' checkpoint"):
        TextClassificationDataModule(init_from=classifier_ckpt).tokenizer  # noqa: B018
    gpt = tmp_path / "gpt.ckpt"
    torch.save({"state_dict": {}, "anyformer": {"task": "gpt", "config": {}, "inference": {}}}, gpt)
    with pytest.raises(CheckpointError, match="'gpt' checkpoint"):
        BertClassifierModule(config, init_from=str(gpt))
    with pytest.raises(CheckpointError, match="does not exist"):
        BertClassifierModule(config, init_from=str(tmp_path / "missing.ckpt"))
    ckpt = str(pretrained / "checkpoints" / "last.ckpt")
    wider = BertConfig(vocab_size=config.vocab_size, transformer=config.transformer)
    wider.transformer.dim, wider.transformer.max_seq_len = 64, 4096
    with pytest.raises(CheckpointError, match=r"transformer\.dim=32 in the checkpoint but 64 here.*max_seq_len=4096"):
        BertClassifierModule(wider, init_from=ckpt)


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("bert_*.yaml")))
def test_every_bert_config_parses(name, capsys):
    task = "bert" if "pretrain" in name or name == "bert_tiny_demo.yaml" else "bert-classify"
    with pytest.raises(SystemExit) as exit_info:
        cli_main([task, "fit", "--config", str(EXPERIMENTS / name), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "transformer:" in capsys.readouterr().out


def test_a_stored_final_norm_bool_matches_its_unresolved_default():
    """Older checkpoints store final_norm resolved to a bool; None builds the same stack, so it is no mismatch."""
    config = BertConfig(vocab_size=50)
    stored = dataclasses.replace(config, transformer=dataclasses.replace(config.transformer, final_norm=False))
    assert _architecture_mismatches(stored, config) == []
    pre_norm = dataclasses.replace(stored, transformer=dataclasses.replace(stored.transformer, norm_position="pre"))
    assert _architecture_mismatches(pre_norm, config) == [
        "transformer.norm_position='pre' in the checkpoint but 'post' here"
    ]
    explicit = dataclasses.replace(config, transformer=dataclasses.replace(config.transformer, final_norm=True))
    assert _architecture_mismatches(explicit, config) == [
        "transformer.final_norm=True in the checkpoint but False here"
    ]
