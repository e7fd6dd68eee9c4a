"""The bag-of-words baseline: the average against a hand computation, padding and word-order
invariances, then a tiny fit through `anyformer text-bow` whose checkpoint classifies sentences
exactly as validation scored them."""

import itertools
import math
import random
from pathlib import Path

import pytest
import torch

from anyformer.core.cli.classify import main as classify_main
from anyformer.core.cli.main import main as cli_main
from anyformer.core.train.checkpoint import load_task, read_checkpoint
from anyformer.text.baselines.bow import BagOfWordsClassifier, BagOfWordsConfig, BagOfWordsModule, bigram_ids
from anyformer.text.classification_data import read_table
from anyformer.text.classify import classify_text
from tests.helpers import read_metrics, run_cli

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "text" / "bow_sst2.yaml"
PRAISE, SCORN = ["superb", "moving", "witty", "charming"], ["tedious", "clumsy", "bland", "shallow"]


def _model(**overrides) -> BagOfWordsClassifier:
    torch.manual_seed(0)
    cfg = BagOfWordsConfig(**{"vocab_size": 50, "num_classes": 3, "dim": 8, "bigram_buckets": 11} | overrides)
    return BagOfWordsClassifier(cfg).eval()


def test_features_are_the_mean_of_token_and_bigram_vectors_by_hand():
    model = _model(hidden_dim=5)
    ids = torch.tensor([[3, 5, 9, 0, 0], [7, 7, 2, 4, 1]])
    keep = torch.tensor([[True, True, True, False, False], [True] * 5])
    tokens, pairs = model.token_embedding.weight, model.bigram_embedding.weight
    expected = []
    for row, n in zip(ids.tolist(), keep.sum(1).tolist()):
        real = row[:n]
        vectors = [tokens[i] for i in real] + [pairs[(a * 116049371 + b) % 11] for a, b in itertools.pairwise(real)]
        expected.append(torch.stack(vectors).mean(0))
    expected = torch.stack(expected)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(ids, keep), expected)
        hidden = torch.relu(expected @ model.hidden[0].weight.T + model.hidden[0].bias)
        torch.testing.assert_close(model(ids, keep), hidden @ model.head.weight.T + model.head.bias)
    assert bigram_ids(torch.tensor([[8191, 8191]]), 131072).item() == (8191 * 116049371 + 8191) % 131072


@pytest.mark.parametrize("bigram_buckets", [0, 11])
def test_extra_padding_of_any_id_does_not_change_the_logits(bigram_buckets):
    model = _model(bigram_buckets=bigram_buckets, hidden_dim=6)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(50, (4, 6), generator=generator)
    lengths = torch.tensor([6, 4, 2, 1])
    keep = torch.arange(6)[None] < lengths[:, None]  # (B, T)
    padded_ids = torch.cat([ids, torch.randint(50, (4, 9), generator=generator)], dim=1)  # garbage at padding
    padded_keep = torch.cat([keep, torch.zeros(4, 9, dtype=torch.bool)], dim=1)
    padded_ids[~padded_keep] = torch.randint(50, (int((~padded_keep).sum()),), generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(model(padded_ids, padded_keep), model(ids, keep), atol=1e-6, rtol=0)
        alone = torch.cat([model(ids[i : i + 1, :n], keep[i : i + 1, :n]) for i, n in enumerate(lengths.tolist())])
        torch.testing.assert_close(alone, model(ids, keep), atol=1e-6, rtol=0)


def test_unigrams_ignore_word_order_and_bigrams_see_it():
    ids, reordered = torch.tensor([[1, 4, 9, 16, 25]]), torch.tensor([[25, 9, 1, 16, 4]])
    keep = torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        bag = _model(bigram_buckets=0)
        torch.testing.assert_close(bag(ids, keep), bag(reordered, keep))
        pairs = _model(bigram_buckets=101)
        assert (pairs(ids, keep) - pairs(reordered, keep)).abs().max() > 1e-4


def test_bad_config_and_out_of_range_ids_are_clear_errors():
    with pytest.raises(ValueError, match=r"BagOfWordsConfig.bigram_buckets must be >= 0 \(0 turns it off\)"):
        BagOfWordsConfig(bigram_buckets=-1)
    with pytest.raises(ValueError, match=r"BagOfWordsConfig.dropout must be in \[0, 1\)"):
        BagOfWordsConfig(dropout=1.0)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 50\)"):
        _model()(torch.tensor([[3, 50]]), torch.ones(1, 2, dtype=torch.bool))


def _review(rng: random.Random, label: int) -> str:
    word = rng.choice(PRAISE if label else SCORN)
    return f"{rng.choice(['a', 'the'])} {word} {rng.choice(['story', 'score', 'script'])} , {word} in every scene"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three epochs of the SST-2 config on a toy review TSV (its data section overridden to files)."""
    workdir = tmp_path_factory.mktemp("bow")
    rng = random.Random(0)
    for split, n in [("train", 160), ("val", 48)]:
        rows = "".join(f"{_review(rng, i % 2)}\t{i % 2}\n" for i in range(n))
        (workdir / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
    run_cli(workdir, [
        "text-bow", "fit", "--config", str(CONFIG), "--trainer.enable_progress_bar", "false",
        "--data.source", "files", "--data.train_path", "train.tsv", "--data.val_path", "val.tsv",
        "--data.class_names", "[negative, positive]", "--data.vocab_size", "300", "--data.max_seq_len", "12",
        "--data.batch_size", "16", "--model.config.bigram_buckets", "512", "--trainer.max_epochs", "3",
        "--trainer.val_check_interval", "1.0", "--trainer.log_every_n_steps", "5",
        "--model.optim.warmup_steps", "5", "--model.optim.lr", "3e-2",
    ])  # fmt: skip
    return workdir, workdir / "runs" / "bow_sst2"


def test_fit_logs_the_bert_classifier_columns_and_learns(run):
    _, folder = run
    metrics = read_metrics(folder / "metrics.csv")
    assert len(metrics["val_acc"]) == len(metrics["val_loss"]) == 3
    assert metrics["val_acc"][-1] > 0.9 and metrics["val_loss"][-1] < metrics["val_loss"][0]
    assert "train_acc" in metrics and "train_loss" in metrics


def test_checkpoint_alone_classifies_like_validation(run, capsys):
    workdir, folder = run
    ckpt = folder / "checkpoints" / "last.ckpt"
    meta = read_checkpoint(ckpt)["anyformer"]
    assert meta["task"] == "text-bow" and meta["inference"]["max_seq_len"] == 12
    module = load_task(ckpt, tasks=("text-bow",))
    assert isinstance(module, BagOfWordsModule) and module.class_names == ["negative", "positive"]
    assert (module.config.vocab_size, module.config.bigram_buckets) == (module.tokenizer.vocab_size, 512)
    # classify tokenizes, crops and pads as the data module did: it reproduces the last validation.
    texts, labels = read_table(workdir / "val.tsv", "sentence", "label")
    ranked = [dict(pairs) for pairs in classify_text(module, texts, top_k=2)]
    true = [probs[module.class_names[int(y)]] for probs, y in zip(ranked, labels)]
    logged = read_metrics(folder / "metrics.csv")
    assert -sum(math.log(p) for p in true) / len(true) == pytest.approx(logged["val_loss"][-1], rel=1e-4)
    assert sum(p > 0.5 for p in true) / len(true) == pytest.approx(logged["val_acc"][-1], abs=1e-6)
    assert classify_main(["--ckpt", str(ckpt), "a superb score , superb in every scene", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[1] == "positive" and lines[2].split()[1] == "negative"
    assert float(lines[1].split()[0]) > 0.5


def test_config_starts_with_its_command_and_parses_with_the_sst2_data_section(capsys):
    text = CONFIG.read_text()
    assert text.startswith("#") and "anyformer text-bow fit --config experiments/text/bow_sst2.yaml" in text
    assert "Results:" in text or "no figure of ours" in text  # where its figure appears (tests/test_figures.py)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["text-bow", "fit", "--config", str(CONFIG), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    for line in ("source: sst2", "vocab_size: 8192", "max_seq_len: 64", "batch_size: 64", "bigram_buckets: 131072"):
        assert line in printed
