"""Windows, splits, determinism and sizes of the causal-LM data module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from anyformer.text.corpus import load_corpus
from anyformer.text.gpt.data import TextDataModule, TokenWindows
from anyformer.text.tokenizer import DEFAULT_SPECIALS, BPETokenizer, CharTokenizer
from tests.helpers import data_path

CONTEXT_LEN = 16
BATCH_SIZE = 4


@pytest.fixture(scope="module")
def corpus_text() -> str:
    # Cut where every val character also occurs in train: the char tokenizer sees train only.
    return load_corpus("pydoc")[:45_000]


@pytest.fixture(scope="module")
def corpus_file(corpus_text: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(corpus_text, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def texts(corpus_text: str) -> tuple[str, str]:
    """The expected (train, val) split: the first 90% of the characters, then the rest."""
    split = int(len(corpus_text) * 0.9)
    return corpus_text[:split], corpus_text[split:]


def make(source: str, **overrides: Any) -> TextDataModule:
    options: dict[str, Any] = {
        "vocab_size": 300,
        "context_len": CONTEXT_LEN,
        "batch_size": BATCH_SIZE,
        "train_batches_per_epoch": 5,
        "val_batches": 3,
    }
    return TextDataModule(source=source, **(options | overrides))


def assert_next_token_windows(batch: dict[str, Tensor], ids: Tensor) -> None:
    """Each row is ids[i : i+T] -> ids[i+1 : i+T+1] for some start i."""
    inputs, targets = batch["input_ids"], batch["targets"]
    assert inputs.dtype == targets.dtype == torch.long
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    all_windows = ids.unfold(0, CONTEXT_LEN + 1, 1)  # (N - T, T + 1)
    rows = torch.cat([inputs, targets[:, -1:]], dim=1)  # (B, T + 1)
    assert (rows[:, None, :] == all_windows[None]).all(-1).any(-1).all()


def test_token_windows_pair_each_token_with_the_next() -> None:
    windows = TokenWindows(torch.arange(10), context_len=3)
    assert len(windows) == 7
    item = windows[2]
    assert item["input_ids"].tolist() == [2, 3, 4]
    assert item["targets"].tolist() == [3, 4, 5]
    assert windows[6]["targets"].tolist() == [7, 8, 9]


def test_vocab_size_is_known_before_setup(corpus_file: str, texts: tuple[str, str]) -> None:
    assert make(corpus_file).vocab_size == 300
    train_text, _ = texts
    char_data = make(corpus_file, tokenizer="char")
    assert char_data.vocab_size == len(set(train_text)) + len(DEFAULT_SPECIALS)


def test_splits_are_the_encoded_train_and_val_text(corpus_file: str, texts: tuple[str, str]) -> None:
    data = make(corpus_file)
    data.setup("fit")
    train_text, val_text = texts
    expected_tokenizer = BPETokenizer.train([train_text], vocab_size=300)
    assert data.tokenizer.to_state() == expected_tokenizer.to_state()
    assert data.token_ids("train").tolist() == expected_tokenizer.encode(train_text)
    assert data.token_ids("val").tolist() == expected_tokenizer.encode(val_text)
    assert data.val_chars_per_token == len(val_text) / len(data.token_ids("val"))
    assert data.val_chars_per_token > 1.2  # BPE merges characters


def test_train_batches_are_next_token_windows(corpus_file: str) -> None:
    data = make(corpus_file)
    batches = list(data.train_dataloader())
    assert len(batches) == 5
    for batch in batches:
        assert batch["input_ids"].shape == batch["targets"].shape == (BATCH_SIZE, CONTEXT_LEN)
        assert_next_token_windows(batch, data.token_ids("train"))


def test_train_windows_follow_the_seed(corpus_file: str) -> None:
    def first_epoch(seed: int) -> Tensor:
        return torch.cat([b["input_ids"] for b in make(corpus_file, seed=seed).train_dataloader()])

    assert torch.equal(first_epoch(1), first_epoch(1))
    assert not torch.equal(first_epoch(1), first_epoch(2))


def test_each_epoch_draws_new_train_windows(corpus_file: str) -> None:
    loader = make(corpus_file).train_dataloader()
    epoch_1, epoch_2 = (torch.cat([b["input_ids"] for b in loader]) for _ in range(2))
    assert not torch.equal(epoch_1, epoch_2)


def test_val_windows_are_fixed_evenly_spaced_and_seed_independent(corpus_file: str) -> None:
    loaders = [make(corpus_file, seed=seed).val_dataloader() for seed in (1, 2)]
    batches_1, batches_2 = (list(loader) for loader in loaders)
    assert len(batches_1) == 3
    for batch_1, batch_2 in zip(batches_1, batches_2, strict=True):
        assert torch.equal(batch_1["input_ids"], batch_2["input_ids"])
        assert torch.equal(batch_1["targets"], batch_2["targets"])
    val_ids = make(corpus_file).token_ids("val")
    for batch in batches_1:
        assert_next_token_windows(batch, val_ids)
    # Evenly spaced from the first window to the last one.
    assert torch.equal(batches_1[0]["input_ids"][0], val_ids[:CONTEXT_LEN])
    assert torch.equal(batches_1[-1]["targets"][-1], val_ids[-CONTEXT_LEN:])


def test_val_set_is_every_window_when_the_split_is_short(corpus_file: str) -> None:
    data = make(corpus_file, val_batches=10**6)
    inputs = torch.cat([batch["input_ids"] for batch in data.val_dataloader()])
    assert torch.equal(inputs, data.token_ids("val").unfold(0, CONTEXT_LEN, 1)[:-1])


def test_char_tokenizer_gives_one_char_per_token(corpus_file: str) -> None:
    data = make(corpus_file, tokenizer="char")
    assert data.val_chars_per_token == 1.0


def test_tokenizer_is_loaded_from_tokenizer_path(corpus_file: str, tmp_path: Path) -> None:
    saved = BPETokenizer.train(["completely different text " * 50], vocab_size=280)
    path = tmp_path / "tokenizer.json"
    saved.save(path)
    data = make(corpus_file, tokenizer_path=str(path))
    assert data.tokenizer.to_state() == saved.to_state()
    with pytest.raises(ValueError, match=r"holds a 'bpe' tokenizer but .*tokenizer='char'"):
        _ = make(corpus_file, tokenizer="char", tokenizer_path=str(path)).tokenizer


def test_val_character_unseen_in_train_names_the_split(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("a" * 90 + "b" * 10, encoding="utf-8")
    data = make(str(path), tokenizer="char", context_len=2)
    with pytest.raises(ValueError, match=r"cannot encode the val split: character 'b'"):
        data.setup("fit")


def test_split_shorter_than_a_window_says_how_many_tokens(corpus_file: str) -> None:
    data = make(corpus_file, context_len=100_000)
    with pytest.raises(ValueError, match=r"has \d+ tokens, but context_len=100000 needs .* 100001"):
        data.setup("fit")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tokenizer": "wordpiece"}, r"tokenizer='wordpiece' is not one of \['bpe', 'char'\]"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \(0, 1\)"),
        ({"batch_size": 0}, r"batch_size must be >= 1"),
        ({"num_workers": -1}, r"num_workers must be >= 0"),
    ],
)
def test_invalid_arguments_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make("pydoc", **overrides)


def test_arguments_are_attributes_for_the_cli_to_link(corpus_file: str) -> None:
    data = make(corpus_file, tokenizer="char", seed=7)
    assert (data.source, data.context_len, data.seed) == (corpus_file, CONTEXT_LEN, 7)
    # `tokenizer` and `vocab_size` are the built tokenizer and its real size.
    assert (data.tokenizer_kind, data.requested_vocab_size) == ("char", 300)
    assert data.vocab_size == data.tokenizer.vocab_size < 300


def test_tinyshakespeare_char_level_matches_nanogpt() -> None:
    data_path("tinyshakespeare/input.txt")
    data = TextDataModule(source="tinyshakespeare", tokenizer="char")
    assert isinstance(data.tokenizer, CharTokenizer)
    assert data.vocab_size == 65 + len(DEFAULT_SPECIALS)  # nanoGPT's 65 characters
    train_ids, val_ids = data.token_ids("train"), data.token_ids("val")
    assert len(train_ids) == 1_003_854  # nanoGPT's shakespeare_char: 1,003,854 / 111,540
    assert len(val_ids) == 111_540
