"""Parallel data for seq2seq: the synthetic task, aligned files, encoding, length batching, Multi30k."""

import logging

import pytest
import torch

from anyformer.text.batching import LengthBatchSampler
from anyformer.text.seq2seq.data import (
    GLOSSARY,
    IGNORE_INDEX,
    ParallelDataModule,
    read_parallel,
    synthetic_pairs,
    synthetic_target,
)
from anyformer.text.seq2seq.translate import eval_set_files
from tests.helpers import data_path


def test_synthetic_target_glosses_known_words_and_copies_the_rest():
    assert synthetic_target("the value is returned") == "le valeur est returned"
    source = "the attribute of an object which is not defined"
    target = synthetic_target(source).split()
    assert len(target) == len(source.split())  # word for word, same order
    for word, gloss in zip(source.split(), target):
        assert gloss == GLOSSARY.get(word, word)
    assert all(gloss != word for word, gloss in GLOSSARY.items())


def test_synthetic_splits_are_deterministic_disjoint_and_consistent():
    first, second = synthetic_pairs(), synthetic_pairs()
    assert first == second
    assert {k: len(v) for k, v in first.items()} == {"train": 4551, "val": 257, "test": 291}
    sources = {split: {s for s, _ in pairs} for split, pairs in first.items()}
    assert not (sources["train"] & sources["val"]) and not (sources["train"] & sources["test"])
    for source, target in first["val"]:
        assert target == synthetic_target(source) and 3 <= len(source.split()) <= 12
    glossed = sum(w in GLOSSARY for s, _ in first["train"] for w in s.split())
    assert 0.4 < glossed / sum(len(s.split()) for s, _ in first["train"]) < 0.46  # "about 43%" (docstring)


def test_read_parallel_checks_alignment_and_names_the_files(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("one\ntwo\n", encoding="utf-8")
    (tmp_path / "b.en").write_text("one\n", encoding="utf-8")
    assert read_parallel(tmp_path / "a.de", tmp_path / "a.en") == [("eins", "one"), ("zwei", "two")]
    with pytest.raises(ValueError, match=r"a\.de has 2 lines, .*b\.en has 1"):
        read_parallel(tmp_path / "a.de", tmp_path / "b.en")
    with pytest.raises(FileNotFoundError, match=r"missing\.en does not exist"):
        read_parallel(tmp_path / "a.de", tmp_path / "missing.en")
    (tmp_path / "bad.en").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"bad\.en is not valid UTF-8.*line 2"):
        read_parallel(tmp_path / "a.de", tmp_path / "bad.en")


def test_folder_source_must_exist():
    with pytest.raises(FileNotFoundError, match=r"is not 'synthetic', one of the datasets .*, nor a folder"):
        ParallelDataModule(source="/nonexistent/corpus").pairs("train")


@pytest.fixture(scope="module")
def data():
    return ParallelDataModule(vocab_size=600, max_source_len=16, max_target_len=12, batch_size=32, max_tokens=300)


def test_encoding_adds_eos_bos_and_crops_with_a_warning(caplog):
    data = ParallelDataModule(vocab_size=600, max_source_len=16, max_target_len=12)
    with caplog.at_level(logging.WARNING):
        val = data.dataset("val")
    assert "val split: cropped" in caplog.text and "max_source_len=16" in caplog.text
    src, tgt = data.src_tokenizer, data.tgt_tokenizer
    assert src is tgt and data.src_vocab_size == data.tgt_vocab_size == 600  # shared_vocab
    for i, (source_text, target_text) in enumerate(data.pairs("val")):
        assert val.sources[i][-1] == src.eos_id and len(val.sources[i]) <= 16
        assert val.sources[i][:-1] == src.encode(source_text)[:15]
        assert val.targets[i] == tgt.encode(target_text)[:11]


def test_separate_vocabularies_are_trained_per_side():
    data = ParallelDataModule(vocab_size=400, shared_vocab=False)
    assert data.src_tokenizer is not data.tgt_tokenizer
    # "the" occurs only in the source text, "seulement" only in the target text.
    assert len(data.src_tokenizer.encode("the")) < len(data.tgt_tokenizer.encode("the"))
    assert len(data.tgt_tokenizer.encode("seulement")) < len(data.src_tokenizer.encode("seulement"))


def test_batches_respect_the_token_budget_and_cover_every_pair(data):
    lengths = data.dataset("train").lengths()
    loader = data.train_dataloader()
    seen = []
    for batch_indices in loader.sampler:
        longest = max(lengths[i] for i in batch_indices)
        assert len(batch_indices) <= 32
        assert len(batch_indices) * longest <= 300 or len(batch_indices) == 1
        seen += batch_indices
    assert sorted(seen) == list(range(len(lengths)))
    batch = next(iter(loader))
    assert batch["source"].shape[0] == batch["target_in"].shape[0] == len(batch["reference"])
    assert batch["source_keep"].dtype == torch.bool
    pad = data.tgt_tokenizer.pad_id
    torch.testing.assert_close(batch["labels"] == IGNORE_INDEX, batch["target_in"] == pad)


def test_training_order_changes_per_epoch_and_evaluation_order_is_sorted():
    lengths = [5, 1, 9, 3, 3, 7, 2, 8] * 10
    train = LengthBatchSampler(lengths, 4, shuffle=True, seed=0)
    assert len(train) == 20
    first, second = list(train), list(train)
    flat = [[i for batch in epoch for i in batch] for epoch in (first, second)]
    assert first != second and sorted(flat[0]) == sorted(flat[1]) == list(range(80))
    for batch in first:  # sorted within pools: a batch spans few lengths
        assert max(lengths[i] for i in batch) - min(lengths[i] for i in batch) <= 2
    ordered = [i for batch in LengthBatchSampler(lengths, 4, shuffle=False) for i in batch]
    assert [lengths[i] for i in ordered] == sorted(lengths)


def test_one_over_long_pair_gets_its_own_batch():
    batches = list(LengthBatchSampler([3, 50, 3, 3], 8, max_tokens=10, shuffle=False))
    assert batches == [[0, 2, 3], [1]]


def test_eval_set_names_a_split_of_a_dataset_found_by_the_data_layer():
    multi30k = data_path("multi30k/test_2016_flickr.de").parent
    assert eval_set_files("multi30k:test_2016_flickr") == (
        multi30k / "test_2016_flickr.de",
        multi30k / "test_2016_flickr.en",
    )
    assert eval_set_files("multi30k:val:en-de", root=str(multi30k)) == (multi30k / "val.en", multi30k / "val.de")


def test_named_source_multi30k_reads_the_same_files_as_its_folder():
    multi30k = data_path("multi30k/val.de").parent
    named = ParallelDataModule(source="multi30k", train_split="val", vocab_size=300)
    assert named.folder() == multi30k  # through $ANYFORMER_DATA
    assert named.pairs("train") == ParallelDataModule(source=str(multi30k), train_split="val").pairs("train")


def test_multi30k_line_counts_match():
    multi30k = data_path("multi30k")
    expected = {"train": 29000, "val": 1014, "test_2016_flickr": 1000}
    for split, count in expected.items():
        pairs = read_parallel(multi30k / f"{split}.de", multi30k / f"{split}.en")
        assert len(pairs) == count
        assert all(de.strip() and en.strip() for de, en in pairs)
    assert pairs[0][1].startswith("A man")  # test_2016_flickr line 1 is English on the .en side
