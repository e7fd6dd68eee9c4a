"""BERT data: masking statistics, NSP balance and partners, pair layout, tables and labels."""

from collections import Counter

import pytest
import torch

from anyformer.text.batching import IGNORE_INDEX, LengthBatchSampler, pad_batch
from anyformer.text.bert.data import BertPretrainDataModule, split_documents
from anyformer.text.bert.masking import mask_tokens
from anyformer.text.bert.pairs import IS_NEXT, NOT_NEXT, PairSampler, SentencePairs, truncate_pair
from anyformer.text.classification_data import TextClassificationDataModule, class_indices, read_table
from anyformer.text.sentence_encoding import encode_sentence
from anyformer.text.seq2seq.data import ParallelDataModule
from anyformer.text.tokenizer import BPETokenizer, CharTokenizer
from tests.helpers import data_path

MASK_ID, N_SPECIAL, VOCAB = 4, 6, 1000


def _corrupt(batch=1000, length=100, seed=0):
    """~100k tokens: ids >= N_SPECIAL, with special ids at the ends and some padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(N_SPECIAL, VOCAB, (batch, length), generator=g)
    ids[:, 0], ids[:, -1], ids[: batch // 2, -10:] = 2, 3, 1  # [CLS], [SEP], [PAD]
    candidates = ids >= N_SPECIAL
    inputs, labels = mask_tokens(
        ids, candidates, mask_id=MASK_ID, random_ids=torch.arange(N_SPECIAL, VOCAB), generator=g
    )
    return ids, candidates, inputs, labels


def test_masking_statistics_follow_bert():
    ids, candidates, inputs, labels = _corrupt()
    chosen = labels != IGNORE_INDEX
    assert candidates.sum() > 90_000
    assert chosen.sum() / candidates.sum() == pytest.approx(0.15, abs=0.002)
    masked = chosen & (inputs == MASK_ID)
    unchanged = chosen & (inputs == ids)
    random = chosen & ~masked & ~unchanged
    n = chosen.sum()
    assert masked.sum() / n == pytest.approx(0.8, abs=0.015)
    # A random draw equals the original with probability 1/994: still ~10% each.
    assert unchanged.sum() / n == pytest.approx(0.1, abs=0.01)
    assert random.sum() / n == pytest.approx(0.1, abs=0.01)
    assert (inputs[random] >= N_SPECIAL).all()  # a random replacement is never a special token
    # Replacements are spread over the vocabulary, not one id.
    assert len(Counter(inputs[random].tolist())) > 500


def test_specials_are_never_chosen_and_labels_only_at_chosen_positions():
    ids, candidates, inputs, labels = _corrupt(batch=200)
    assert (labels[~candidates] == IGNORE_INDEX).all()
    assert torch.equal(inputs[~candidates], ids[~candidates])  # [CLS], [SEP], [PAD] untouched
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], ids[chosen])  # the label is the original token
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else is corrupted
    # Each sequence gets max(1, round(0.15 * n)) of its n candidates.
    n_candidates = candidates.sum(1)
    expected = (n_candidates * 0.15).round().clamp(min=1)
    assert torch.equal(chosen.sum(1), expected.long())


def test_short_and_empty_sequences():
    ids = torch.tensor([[2, 10, 11, 3], [2, 3, 1, 1]])
    inputs, labels = mask_tokens(ids, ids >= N_SPECIAL, mask_id=MASK_ID, random_ids=torch.arange(N_SPECIAL, VOCAB))
    assert (labels[0] != IGNORE_INDEX).sum() == 1  # two candidates still give one prediction
    assert (labels[1] == IGNORE_INDEX).all() and torch.equal(inputs[1], ids[1])


def test_truncate_pair_matches_berts_loop():
    def reference(a, b, budget):
        while a + b > budget:
            if a > b:
                a -= 1
            else:
                b -= 1
        return a, b

    for a in range(15):
        for b in range(15):
            for budget in range(2, 20):
                assert truncate_pair(a, b, budget) == reference(a, b, budget), (a, b, budget)


def test_split_documents_rule():
    text = "Line one of A.\nLine two of A.\n\n  \nhide new secretions from the parental units\n\nword\n\n\nx y"
    docs = split_documents(text)
    assert docs == [
        ["Line one of A.", "Line two of A."],
        ["hide new secretions", " from the parental units"],  # one line: cut at the middle word
        ["x", " y"],
    ]  # "word" alone cannot be cut and is dropped
    tokenizer = BPETokenizer.train([text], vocab_size=300)
    line = "hide new secretions from the parental units"
    assert tokenizer.encode(docs[1][0]) + tokenizer.encode(docs[1][1]) == tokenizer.encode(line)


def _documents(n_docs=40, sentences=4):
    return [[f"document {d} says sentence {s} about topic {d % 7}." for s in range(sentences)] for d in range(n_docs)]


@pytest.fixture(scope="module")
def pairs():
    docs = [*_documents(), ["lonely one-sentence document after split", " the second half"]]
    sentences = [s for doc in docs for s in doc]
    tokenizer = BPETokenizer.train(sentences, vocab_size=320)
    doc_of = [d for d, doc in enumerate(docs) for _ in doc]
    return SentencePairs(tokenizer.encode_batch(sentences), doc_of, tokenizer, max_seq_len=24), tokenizer


def test_nsp_pairs_are_balanced_and_partners_are_right(pairs):
    dataset, _ = pairs
    sampler = PairSampler(dataset, 8, seed=0)
    for _ in range(3):  # every epoch
        requests = sampler.draw()
        assert sorted(r[0] for r in requests) == list(range(len(dataset)))  # each pair once
        firsts = [int(dataset.first_sentences[r[0]]) for r in requests]
        is_next = [b == a + 1 for a, (_, b, _) in zip(firsts, requests)]
        assert sum(is_next) == len(dataset) // 2
        for a, (_, b, _), nxt in zip(firsts, requests, is_next):
            same_doc = dataset.doc_of_sentence[a] == dataset.doc_of_sentence[b]
            assert same_doc == nxt  # a random partner always comes from another document
    labels = torch.stack([dataset[r]["nsp_labels"] for r in sampler.draw()])
    assert (labels == IS_NEXT).sum() == len(dataset) // 2 and set(labels.tolist()) == {IS_NEXT, NOT_NEXT}


def test_pair_layout_segments_and_masks(pairs):
    dataset, tokenizer = pairs
    requests = PairSampler(dataset, 8, seed=1).draw()[:20]
    items = [dataset[request] for request in requests]
    for request, item in zip(requests, items):
        a = dataset.sentence(int(dataset.first_sentences[request[0]])).tolist()
        b = dataset.sentence(request[1]).tolist()
        len_a, len_b = truncate_pair(len(a), len(b), dataset.max_seq_len - 3)
        cls, sep = tokenizer.cls_id, tokenizer.sep_id
        assert item["input_ids"].tolist() == [cls, *a[:len_a], sep, *b[:len_b], sep]
        assert item["segment_ids"].tolist() == [0] * (len_a + 2) + [1] * (len_b + 1)
        assert len(item["input_ids"]) <= dataset.max_seq_len
    batch = dataset.collate(items)
    assert set(batch) == {"input_ids", "segment_ids", "mlm_labels", "nsp_labels", "attention_mask"}
    keep, masked = batch["attention_mask"], batch["mlm_labels"] != IGNORE_INDEX
    original = torch.where(masked, batch["mlm_labels"], batch["input_ids"])
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        assert original[row, :n].tolist() == item["input_ids"].tolist()  # masking only hides tokens
        assert keep[row].sum() == n and 1 <= masked[row].sum() <= n - 3
    specials = torch.isin(original, torch.tensor([tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id]))
    assert not (masked & specials).any() and not (masked & ~keep).any()


def test_masks_change_every_epoch_and_runs_reproduce(pairs):
    dataset, _ = pairs
    sampler = PairSampler(dataset, 8, seed=5)
    first, second = sampler.draw(), sampler.draw()
    assert first != second
    assert PairSampler(dataset, 8, seed=5).draw() == first
    fixed = PairSampler(dataset, 8, seed=5, fixed=True)
    assert fixed.draw() == fixed.draw() == first
    epoch_1, epoch_2 = {r[0]: r for r in first}, {r[0]: r for r in second}

    def masks(epoch):  # the same eight pairs, masked with one epoch's seeds
        return dataset.collate([dataset[(p, epoch_1[p][1], epoch[p][2])] for p in range(8)])["mlm_labels"]

    assert not torch.equal(masks(epoch_1), masks(epoch_2)) and torch.equal(masks(epoch_1), masks(epoch_1))


def test_length_bucketing_keeps_the_epoch_and_shortens_padding(pairs):
    dataset, _ = pairs
    plain = PairSampler(dataset, 8, seed=3).draw()
    bucketed = list(PairSampler(dataset, 8, seed=3))
    assert sorted(plain) == sorted(r for batch in bucketed for r in batch)  # the same requests, only regrouped

    def padded_tokens(batches):
        return sum(len(batch) * max(len(dataset[r]["input_ids"]) for r in batch) for batch in batches)

    assert padded_tokens(bucketed) < padded_tokens([plain[i : i + 8] for i in range(0, len(plain), 8)])


def _padded(lengths, batches):
    return sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)


def test_length_batch_sampler_buckets_covers_every_item_and_is_deterministic():
    lengths = torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(0)).tolist()

    def sampler(seed):
        return LengthBatchSampler(lengths, 16, shuffle=True, seed=seed)

    epochs = sampler(5)
    first, second = list(epochs), list(epochs)
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(1000))  # every index exactly once
        assert sorted(len(batch) for batch in epoch) == [8] + [16] * 62  # 1000 = 62 x 16 + 8
    assert first != second  # a new order every epoch
    replay = sampler(5)
    assert list(replay) == first and list(replay) == second  # reproducible per seed and epoch
    assert list(sampler(6)) != first
    # Similar lengths: a pool of 800 lengths in 1..59 leaves about one length per batch.
    assert sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first) < 2
    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).tolist()
    assert _padded(lengths, first) < 0.6 * _padded(lengths, [shuffled[i : i + 16] for i in range(0, 1000, 16)])


def test_every_text_data_module_batches_with_the_shared_length_sampler(tmp_path, pairs):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(doc) for doc in _documents(60)))
    pretrain = BertPretrainDataModule(source=str(corpus), vocab_size=300, max_seq_len=20, batch_size=8)
    rows = [f"{'a fine film ' * (i % 5 + 1)}\t{i % 2}" for i in range(80)]  # five lengths, 16 texts each
    for name in ("train", "val"):
        (tmp_path / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    paths = {"train_path": str(tmp_path / "train.tsv"), "val_path": str(tmp_path / "val.tsv")}
    classify = TextClassificationDataModule(source="files", **paths, vocab_size=300, batch_size=8, length_buckets=True)
    translate = ParallelDataModule(vocab_size=400, batch_size=32)
    for data in (pretrain, classify, translate):
        loader = data.train_dataloader()
        assert isinstance(loader.sampler, LengthBatchSampler), type(data).__name__
    # Classification: every batch is one bucket, here of a single length.
    lengths = [len(ids) for ids in classify.dataset("train").ids]
    plan = list(classify.train_dataloader().sampler)
    assert len(set(lengths)) == 5 and sorted(i for batch in plan for i in batch) == list(range(80))
    assert all(len(batch) == 8 and len({lengths[i] for i in batch}) == 1 for batch in plan)
    # Pretraining: a batch is the requests of one bucket, ordered by length.
    dataset, _ = pairs
    sampler = PairSampler(dataset, 8, seed=3)
    requests, pair_lengths = PairSampler(dataset, 8, seed=3).epoch_items(0)
    length_of = dict(zip(requests, pair_lengths))
    for batch in sampler:
        assert [length_of[r] for r in batch] == sorted(length_of[r] for r in batch)


def test_pad_batch_pads_and_marks_real_tokens():
    items = [
        {"input_ids": torch.tensor([2, 9, 3]), "segment_ids": torch.tensor([0, 0, 0]), "labels": torch.tensor(1)},
        {"input_ids": torch.tensor([2, 3]), "segment_ids": torch.tensor([0, 0]), "labels": torch.tensor(0)},
    ]
    batch = pad_batch(items, pad_id=1)
    assert batch["input_ids"].tolist() == [[2, 9, 3], [2, 3, 1]]
    assert batch["attention_mask"].tolist() == [[True, True, True], [True, True, False]]
    assert batch["labels"].tolist() == [1, 0] and batch["attention_mask"].dtype == torch.bool


def test_pretrain_data_module_batches(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(doc) for doc in _documents(60)))
    data = BertPretrainDataModule(source=str(corpus), vocab_size=300, max_seq_len=20, batch_size=8)
    assert data.vocab_size == data.tokenizer.vocab_size <= 300
    data.setup("fit")
    assert len(data.documents("val")) == 3  # 5% of 60 documents
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"input_ids", "segment_ids", "mlm_labels", "nsp_labels", "attention_mask"}
    assert batch["input_ids"].shape == batch["mlm_labels"].shape and batch["input_ids"].shape[1] <= 20
    assert (batch["input_ids"][~batch["attention_mask"]] == data.tokenizer.pad_id).all()
    assert (batch["mlm_labels"][~batch["attention_mask"]] == IGNORE_INDEX).all()
    val_a, val_b = next(iter(data.val_dataloader())), next(iter(data.val_dataloader()))
    assert torch.equal(val_a["input_ids"], val_b["input_ids"])  # fixed validation masks


def test_read_table_and_its_errors(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text('sentence\tlabel\nit \'s a "charming" film . \t1\nunflinchingly bleak\t0\n', encoding="utf-8")
    assert read_table(tsv, "sentence", "label") == (['it \'s a "charming" film .', "unflinchingly bleak"], ["1", "0"])
    csv_file = tmp_path / "data.csv"
    csv_file.write_text('text,y\n"good, really",pos\n', encoding="utf-8")
    assert read_table(csv_file, "text", "y") == (["good, really"], ["pos"])
    with pytest.raises(ValueError, match=r"no column 'text'.*sentence"):
        read_table(tsv, "text", "label")
    short = tmp_path / "short.tsv"
    short.write_text("sentence\tlabel\nok\t1\nbroken row\n")
    with pytest.raises(ValueError, match=r"short.tsv:3 has 1 fields"):
        read_table(short, "sentence", "label")
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("sentence\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not valid UTF-8"):
        read_table(latin, "sentence", "label")
    with pytest.raises(FileNotFoundError, match=r"missing\.tsv"):
        read_table(tmp_path / "missing.tsv", "sentence", "label")


def test_labels_map_to_class_names():
    assert class_indices(["1", "0", "positive"], ["negative", "positive"], "x") == [1, 0, 1]
    with pytest.raises(ValueError, match="label '2'"):
        class_indices(["2"], ["negative", "positive"], "x")


def test_classification_data_module_from_files(tmp_path):
    rows = ["a fine film\t1", "a dull film\t0", "fine acting\t1", "dull plot\t0"]
    for name in ("train", "val"):
        (tmp_path / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    data = TextClassificationDataModule(
        source="files", train_path=str(tmp_path / "train.tsv"), val_path=str(tmp_path / "val.tsv"),
        class_names=["negative", "positive"], vocab_size=300, max_seq_len=6, batch_size=4,
    )  # fmt: skip
    data.setup("fit")
    assert data.num_classes == 2 and data.class_names == ["negative", "positive"]
    batch = next(iter(data.val_dataloader()))
    assert batch["labels"].tolist() == [1, 0, 1, 0]
    assert (batch["input_ids"][:, 0] == data.tokenizer.cls_id).all()
    assert batch["input_ids"].shape[1] <= 6 and (batch["segment_ids"] == 0).all()
    # Without class_names, the sorted distinct labels name the classes.
    assert TextClassificationDataModule(source="files", train_path=str(tmp_path / "train.tsv"),
                                        val_path=str(tmp_path / "val.tsv")).class_names == ["0", "1"]  # fmt: skip
    with pytest.raises(ValueError, match="train_path and val_path"):
        TextClassificationDataModule(source="files")
    with pytest.raises(ValueError, match="source='imdb'"):
        TextClassificationDataModule(source="imdb")


def test_pydoc_indent_offline_set():
    data = TextClassificationDataModule(source="pydoc-indent")
    train, val = data.tables("train"), data.tables("val")
    assert data.class_names == ["indented", "prose"]
    assert 1200 < len(train[0]) and 250 < len(val[0]) and not set(train[0]) & set(val[0])
    assert 0.5 < Counter(train[1])["prose"] / len(train[1]) < 0.75
    assert all("\n" not in text and "  " not in text for text in train[0])  # indentation is not a giveaway


def test_encode_sentence_crops_from_the_right_and_replaces_unencodable_characters():
    tokenizer = CharTokenizer.train(["abc "])
    ids, cropped, replaced = encode_sentence(tokenizer, "abcabc", max_seq_len=5)
    assert ids == [tokenizer.cls_id, *tokenizer.encode("abc"), tokenizer.sep_id] and (cropped, replaced) == (3, 0)
    ids, cropped, replaced = encode_sentence(tokenizer, "a\u00e9b", max_seq_len=10)  # é is not in the alphabet
    assert ids == [tokenizer.cls_id, *tokenizer.encode("ab"), tokenizer.sep_id] and (cropped, replaced) == (0, 1)
    bpe = BPETokenizer.train(["hello world"], vocab_size=270)
    ids, _, replaced = encode_sentence(bpe, "hi \ud800 there", max_seq_len=64)  # a lone surrogate
    assert replaced == 1 and bpe.decode(ids[1:-1]) == "hi \ufffd there"


def test_sst2_tables():
    data_path("sst2/train.tsv")
    data = TextClassificationDataModule(source="sst2")
    train, dev = data.tables("train"), data.tables("val")
    assert (len(train[0]), len(dev[0])) == (67349, 872)
    assert data.class_names == ["negative", "positive"] and set(dev[1]) == {"0", "1"}
    assert class_indices(dev[1][:3], data.class_names, "dev") == [int(label) for label in dev[1][:3]]


def test_under_ddp_each_rank_takes_its_share_of_the_one_plan_and_lightning_keeps_the_sampler():
    """Every rank plans the same batches (same seed) and takes every world_size-th; being a
    DistributedSampler, Lightning does not wrap it (which would break the length buckets)."""
    from torch.utils.data import DistributedSampler

    lengths = [i % 13 + 1 for i in range(203)]

    def sampler(**ranks):
        return LengthBatchSampler(lengths, 8, shuffle=True, seed=5, **ranks)

    whole = list(sampler())
    shares = [list(sampler(rank=r, world_size=3)) for r in range(3)]
    per_rank = len(whole) // 3
    assert [len(share) for share in shares] == [per_rank] * 3
    assert [len(sampler(rank=r, world_size=3)) for r in range(3)] == [per_rank] * 3
    for r, share in enumerate(shares):
        assert share == whole[r::3][:per_rank]
    taken = [i for share in shares for batch in share for i in batch]
    assert len(taken) == len(set(taken))  # no item on two ranks
    assert isinstance(sampler(rank=1, world_size=2), DistributedSampler)
