"""Data for BERT: sentence pairs with on-the-fly masking for pretraining, labelled sentences
for fine-tuning.

Pretraining text is cut into documents and sentences by one rule (:func:`split_documents`):
documents are separated by blank lines, sentences are the stripped non-empty lines of a
document, and a document that is a single line (an SST-2 sentence, a one-line paragraph) is
cut in two at its middle word so it still yields a true next-sentence pair. Each pair is
``[CLS] A [SEP] B [SEP]`` with B the next sentence of A's document (NSP label 0) or a random
sentence of another document (NSP label 1), exactly half and half every epoch.

Randomness is drawn in the main process by a seeded sampler (:class:`PairSampler`) that yields
``(pair, sentence B, mask seed)`` requests; the dataset builds the pairs and its ``collate``
masks a whole batch in one vectorized draw seeded by the batch's first request. So every epoch
gets new partners and new masks, runs are reproducible, and worker processes never repeat each
other's draws. Validation re-seeds its sampler, so its pairs and masks are
the same at every evaluation.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from anyformer.core.train.checkpoint import CheckpointError, read_checkpoint
from anyformer.text.corpus import load_corpus
from anyformer.text.tokenizer import DEFAULT_SPECIALS, Tokenizer, build_tokenizer, load_tokenizer, tokenizer_from_state

logger = logging.getLogger(__name__)

SHARED_SST2 = Path("../shared/data/sst2")
"""GLUE SST-2 (``train.tsv``, ``dev.tsv`` with header ``sentence<TAB>label``), relative to the repo root."""
SST2_CLASS_NAMES = ("negative", "positive")
IGNORE_INDEX = -100
"""Label of positions without a loss (unmasked tokens), as ``F.cross_entropy`` expects."""
IS_NEXT, NOT_NEXT = 0, 1
"""NSP labels (Hugging Face's convention): 0 = B follows A, 1 = B is a random sentence."""
PRETRAIN_SOURCE_HELP = "'sst2' (the SST-2 training sentences), 'pydoc', 'tinyshakespeare' or a text file/folder"


# -- text -> documents -> sentences -------------------------------------------------------
def split_documents(text: str) -> list[list[str]]:
    """Documents (blank-line separated) of sentences (stripped non-empty lines).

    A one-line document is cut before its middle word (``n_words // 2``) into two sentences;
    the second keeps a leading space so byte-level BPE tokenizes it as inside the line. A
    one-line document of a single word cannot be cut and is dropped.
    """
    documents = []
    for block in re.split(r"\n[ \t\r\f\v]*\n", text):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        if len(lines) == 1:
            starts = [match.start() for match in re.finditer(r"\S+", lines[0])]
            if len(starts) < 2:
                continue
            cut = starts[len(starts) // 2]
            lines = [lines[0][:cut].rstrip(), " " + lines[0][cut:]]
        if lines:
            documents.append(lines)
    return documents


def read_table(
    path: str | Path, text_column: str, label_column: str | None = None, delimiter: str | None = None
) -> tuple[list[str], list[str]]:
    """Texts and labels (as strings) of a TSV/CSV file with a header row.

    Args:
        path: the file; ``.tsv`` is read tab-separated without quoting (GLUE), ``.csv`` as CSV.
        text_column: header name of the text column.
        label_column: header name of the label column; None reads texts only (labels empty).
        delimiter: overrides the delimiter implied by the extension.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown extension, not UTF-8, missing column or short row (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist (expected a .tsv or .csv file with a header row)")
    if delimiter is None:
        delimiter = {".tsv": "\t", ".csv": ","}.get(path.suffix.lower())
        if delimiter is None:
            raise ValueError(f"{path}: cannot tell the delimiter from the extension; use .tsv or .csv or pass one")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    try:
        with path.open(encoding="utf-8", newline="") as file:
            rows = list(csv.reader(file, delimiter=delimiter, quoting=quoting))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid UTF-8 ({err})") from err
    except csv.Error as err:
        raise ValueError(f"{path} is not a readable table ({err})") from err
    if not rows:
        raise ValueError(f"{path} is empty; expected a header row naming the columns")
    header = [name.strip() for name in rows[0]]
    columns = [text_column] + ([label_column] if label_column is not None else [])
    missing = [name for name in columns if name not in header]
    if missing:
        raise ValueError(f"{path} has no column {missing[0]!r}; its header has {header}")
    text_at = header.index(text_column)
    label_at = header.index(label_column) if label_column is not None else None
    texts, labels = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) <= max(text_at, label_at or 0):
            raise ValueError(f"{path}:{line} has {len(row)} fields, expected {len(header)} like the header")
        texts.append(row[text_at].strip())
        if label_at is not None:
            labels.append(row[label_at].strip())
    if not texts:
        raise ValueError(f"{path} has a header but no rows")
    return texts, labels


def load_pretraining_documents(source: str) -> list[list[str]]:
    """Documents of sentences of one pretraining source: ``sst2`` (the SST-2 training sentences,
    one document each), or any :func:`anyformer.text.corpus.load_corpus` source (``pydoc``, ...)."""
    if source == "sst2":
        path = SHARED_SST2 / "train.tsv"
        if not path.is_file():
            raise FileNotFoundError(f"source 'sst2' needs {path.resolve()} (GLUE SST-2 train.tsv)")
        sentences, _ = read_table(path, "sentence")
        return split_documents("\n\n".join(sentences))  # one document per line
    return split_documents(load_corpus(source))


# -- masking ------------------------------------------------------------------------------
def mask_tokens(
    ids: Tensor,
    candidates: Tensor,
    *,
    mask_id: int,
    random_ids: Tensor,
    generator: torch.Generator | None = None,
    mask_prob: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """BERT's masked-LM corruption of (..., T) ids.

    In each sequence, ``max(1, round(mask_prob * n))`` of its ``n`` candidate positions are
    chosen uniformly (none if it has no candidate); a chosen token becomes ``[MASK]`` with
    probability 0.8, a uniformly drawn id of ``random_ids`` with 0.1, and stays as it is with 0.1.

    Args:
        ids: (..., T) token ids.
        candidates: (..., T) bool, True where a token may be chosen (not [CLS]/[SEP]/[PAD]).
        mask_id: id of ``[MASK]``.
        random_ids: (R,) ids a random replacement is drawn from (the non-special ids).
        generator: source of randomness.
        mask_prob: share of candidates chosen.

    Returns:
        ``(inputs, labels)``: corrupted (..., T) ids, and (..., T) labels holding the original id
        at chosen positions and :data:`IGNORE_INDEX` elsewhere.
    """
    scores = torch.rand(ids.shape, generator=generator).masked_fill(~candidates, 2.0)
    rank = scores.argsort(dim=-1).argsort(dim=-1)  # (..., T): 0 for the lowest score
    n_candidates = candidates.sum(dim=-1, keepdim=True)
    n_chosen = torch.where(n_candidates > 0, (n_candidates * mask_prob).round().clamp(min=1), 0)
    chosen = (rank < n_chosen) & candidates
    action = torch.rand(ids.shape, generator=generator)
    replacements = random_ids[torch.randint(len(random_ids), ids.shape, generator=generator)]
    inputs = torch.where(chosen & (action < 0.8), mask_id, ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), replacements, inputs)
    return inputs, torch.where(chosen, ids, IGNORE_INDEX)


def truncate_pair(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths after BERT's pair truncation: drop the last token of the longer side (B on a tie)
    until both fit in ``budget`` tokens."""
    if len_a + len_b <= budget:
        return len_a, len_b
    short = budget // 2
    if min(len_a, len_b) > short:
        return budget - short, short
    return (len_a, budget - len_a) if len_a <= len_b else (budget - len_b, len_b)


def pad_batch(items: Sequence[dict[str, Tensor]], pad_id: int) -> dict[str, Tensor]:
    """Stack variable-length items into a batch padded to its longest sequence.

    ``input_ids`` are padded with ``pad_id``, ``segment_ids`` with 0, ``mlm_labels`` with
    :data:`IGNORE_INDEX`; ``attention_mask`` is (B, T) bool, True at real tokens. Scalar
    entries (``nsp_labels``, ``labels``, ``mask_seed``) are stacked.
    """
    longest = max(len(item["input_ids"]) for item in items)
    fills = {"input_ids": pad_id, "segment_ids": 0, "mlm_labels": IGNORE_INDEX}
    batch: dict[str, Tensor] = {}
    for key in items[0]:
        if items[0][key].ndim == 0:
            batch[key] = torch.stack([item[key] for item in items])
            continue
        out = torch.full((len(items), longest), fills[key], dtype=torch.long)
        for row, item in enumerate(items):
            out[row, : len(item[key])] = item[key]
        batch[key] = out
    lengths = torch.tensor([len(item["input_ids"]) for item in items])
    batch["attention_mask"] = torch.arange(longest)[None, :] < lengths[:, None]  # (B, T)
    return batch


def special_ids(tokenizer: Tokenizer) -> list[int]:
    """Ids of the default special tokens the tokenizer has."""
    found = []
    for token in DEFAULT_SPECIALS:
        try:
            found.append(tokenizer.token_id(token))
        except KeyError:
            continue
    return found


# -- pretraining pairs --------------------------------------------------------------------
class SentencePairs(Dataset[dict[str, Tensor]]):
    """NSP pairs over tokenized sentences; items are built from :class:`PairSampler` requests
    and masked by :meth:`collate`, the DataLoader's ``collate_fn``.

    Args:
        sentences: token ids of every sentence, documents in order.
        doc_of_sentence: document index of each sentence.
        tokenizer: gives the ids of [CLS], [SEP], [MASK] and the special tokens.
        max_seq_len: longest pair, specials included.
        mask_prob: share of tokens chosen for the masked LM.
    """

    def __init__(
        self,
        sentences: Sequence[Sequence[int]],
        doc_of_sentence: Sequence[int],
        tokenizer: Tokenizer,
        max_seq_len: int,
        mask_prob: float = 0.15,
    ) -> None:
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        self.ids = torch.tensor([i for s in sentences for i in s], dtype=torch.long)  # all sentences, flat
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        self.sentence_lengths = lengths
        self.doc_of_sentence = torch.tensor(doc_of_sentence, dtype=torch.long)
        same_doc = self.doc_of_sentence[1:] == self.doc_of_sentence[:-1]
        self.first_sentences = torch.nonzero(same_doc & (lengths[:-1] > 0) & (lengths[1:] > 0)).flatten()
        if len(self.first_sentences) == 0 or int(self.doc_of_sentence.max()) < 1:
            raise ValueError("NSP needs at least two documents and one document with two sentences")
        self.cls_id, self.sep_id, self.mask_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id
        self.pad_id = tokenizer.pad_id
        specials = torch.tensor(special_ids(tokenizer))
        self.specials = specials
        all_ids = torch.arange(tokenizer.vocab_size)
        self.random_ids = all_ids[~torch.isin(all_ids, specials)]
        self.max_seq_len, self.mask_prob = max_seq_len, mask_prob

    def __len__(self) -> int:
        return len(self.first_sentences)

    def sentence(self, index: int) -> Tensor:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def __getitem__(self, request: tuple[int, int, int]) -> dict[str, Tensor]:
        """The unmasked pair of a ``(pair, sentence B, mask seed)`` request; :meth:`collate` masks."""
        pair, b_index, seed = request
        a_index = int(self.first_sentences[pair])
        a, b = self.sentence(a_index), self.sentence(b_index)
        len_a, len_b = truncate_pair(len(a), len(b), self.max_seq_len - 3)
        ids = torch.cat([torch.tensor([self.cls_id]), a[:len_a], torch.tensor([self.sep_id]),
                         b[:len_b], torch.tensor([self.sep_id])])  # fmt: skip
        segments = torch.cat([torch.zeros(len_a + 2, dtype=torch.long), torch.ones(len_b + 1, dtype=torch.long)])
        nsp = IS_NEXT if b_index == a_index + 1 else NOT_NEXT
        return {
            "input_ids": ids,
            "segment_ids": segments,
            "nsp_labels": torch.tensor(nsp),
            "mask_seed": torch.tensor(seed),
        }

    def collate(self, items: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Pad the pairs (see :func:`pad_batch`) and mask them in one vectorized draw, seeded by
        the first item's request; adds ``mlm_labels`` and replaces ``input_ids`` by the masked ids."""
        batch = pad_batch(items, self.pad_id)
        generator = torch.Generator().manual_seed(int(batch.pop("mask_seed")[0]))
        candidates = batch["attention_mask"] & ~torch.isin(batch["input_ids"], self.specials)
        batch["input_ids"], batch["mlm_labels"] = mask_tokens(
            batch["input_ids"], candidates, mask_id=self.mask_id, random_ids=self.random_ids,
            generator=generator, mask_prob=self.mask_prob,
        )  # fmt: skip
        return batch


BUCKET_BATCHES = 50


def length_bucketed_order(lengths: Tensor, batch_size: int, generator: torch.Generator) -> Tensor:
    """A permutation of ``range(len(lengths))`` whose batches hold items of similar length.

    Each run of ``BUCKET_BATCHES`` batches (in the given order) is sorted by length and cut
    into batches, and the full batches are shuffled; the short ones stay last so every
    DataLoader batch of ``batch_size`` is one bucket. A batch then pads to a length close to
    its items' own, instead of to the longest of a random draw.
    """
    pool = batch_size * BUCKET_BATCHES
    batches = []
    for start in range(0, len(lengths), pool):
        run = torch.arange(start, min(start + pool, len(lengths)))
        batches += list(run[lengths[run].argsort(stable=True)].split(batch_size))
    full = [b for b in batches if len(b) == batch_size]
    partial = [b for b in batches if len(b) < batch_size]
    shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return torch.cat(shuffled + partial)


class BucketedShuffleSampler(Sampler[int]):
    """Every index once per epoch, shuffled, then length-bucketed (:func:`length_bucketed_order`).

    Args:
        lengths: (N,) length of each item.
        batch_size: the DataLoader's batch size.
        seed: seed of the generator; epochs continue its stream, so each epoch differs.
    """

    def __init__(self, lengths: Tensor, batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size = lengths, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.lengths), generator=self.generator)
        return iter(order[length_bucketed_order(self.lengths[order], self.batch_size, self.generator)].tolist())


class PairSampler(Sampler[tuple[int, int, int]]):
    """Yields ``(pair, sentence B, mask seed)`` for every pair once per epoch, in random order.

    Exactly ``len // 2`` pairs per epoch get their true next sentence; the others get a
    uniformly drawn sentence of another document. With ``batch_size``, requests are bucketed:
    see :func:`length_bucketed_order` (on CPU this roughly halves the cost of SST-2's
    long-tailed pairs).

    Args:
        pairs: the dataset.
        seed: seed of the generator.
        fixed: re-seed at every epoch (validation: the same pairs and masks each time).
        batch_size: the DataLoader's batch size, to bucket by length; None keeps the random order.
    """

    def __init__(self, pairs: SentencePairs, seed: int, fixed: bool = False, batch_size: int | None = None) -> None:
        self.pairs, self.seed, self.fixed, self.batch_size = pairs, seed, fixed, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def draw(self) -> list[tuple[int, int, int]]:
        """One epoch of requests."""
        if self.fixed:
            self.generator.manual_seed(self.seed)
        g, pairs = self.generator, self.pairs
        n, n_sentences = len(pairs), len(pairs.doc_of_sentence)
        order = torch.randperm(n, generator=g)
        is_next = torch.randperm(n, generator=g) < n // 2
        first = pairs.first_sentences[order]
        doc = pairs.doc_of_sentence[first]
        partner = torch.randint(n_sentences, (n,), generator=g)
        clash = pairs.doc_of_sentence[partner] == doc
        while clash.any():  # redraw random partners that fell in A's own document
            partner[clash] = torch.randint(n_sentences, (int(clash.sum()),), generator=g)
            clash = pairs.doc_of_sentence[partner] == doc
        partner = torch.where(is_next, first + 1, partner)
        seeds = torch.randint(2**62, (n,), generator=g)
        if self.batch_size is not None:
            lengths = pairs.sentence_lengths[first] + pairs.sentence_lengths[partner]
            keep = length_bucketed_order(lengths, self.batch_size, g)
            order, partner, seeds = order[keep], partner[keep], seeds[keep]
        return list(zip(order.tolist(), partner.tolist(), seeds.tolist()))

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return iter(self.draw())


def _check_positive(owner: str, name: str, value: float) -> None:
    if value < 1:
        raise ValueError(f"{owner}.{name} must be >= 1, got {value!r}")


class BertPretrainDataModule(pl.LightningDataModule):
    """Masked-LM + NSP pairs from one or more corpora.

    Each source's documents are split in order: the last ``val_fraction`` of them (at least
    two) are validation. The BPE tokenizer is trained on the training sentences (or loaded).
    ``tokenizer``, ``vocab_size`` and ``max_seq_len`` work right after construction, so the
    CLI can size the model from them. Batches are dicts of (B, T) ``input_ids``, ``segment_ids``,
    ``attention_mask`` (bool, True = real token), ``mlm_labels`` (-100 = no loss) and (B,)
    ``nsp_labels`` (0 = true next sentence), padded to the longest pair of the batch.

    Args:
        source: a corpus or a list of corpora: ``sst2`` (the SST-2 training sentences), ``pydoc``,
            ``tinyshakespeare`` or a text file/folder (see :func:`anyformer.text.corpus.load_corpus`).
        vocab_size: target BPE vocabulary size when training a tokenizer.
        tokenizer_path: JSON tokenizer from ``Tokenizer.save`` to use instead of training one.
        max_seq_len: longest pair in tokens, [CLS] and [SEP]s included (linked into the model).
        mask_prob: share of tokens chosen for the masked LM.
        batch_size: pairs per batch.
        val_fraction: share of each source's documents held out for validation.
        num_workers: DataLoader worker processes.
        seed: seed of the pairing and masking draws.
    """

    def __init__(
        self,
        source: str | list[str] = "pydoc",
        vocab_size: int = 2048,
        tokenizer_path: str | None = None,
        max_seq_len: int = 128,
        mask_prob: float = 0.15,
        batch_size: int = 32,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        _check_positive(owner, "batch_size", batch_size)
        if max_seq_len < 5:
            raise ValueError(f"{owner}.max_seq_len must be >= 5 ([CLS] A [SEP] B [SEP]), got {max_seq_len}")
        if not 0 < mask_prob < 1 or not 0 < val_fraction < 1:
            raise ValueError(f"{owner}.mask_prob and val_fraction must be in (0, 1), got {mask_prob}, {val_fraction}")
        self.sources = [source] if isinstance(source, str) else list(source)
        if not self.sources:
            raise ValueError(f"{owner}.source is empty; name at least one of {PRETRAIN_SOURCE_HELP}")
        self.requested_vocab_size, self.tokenizer_path = vocab_size, tokenizer_path
        self.max_seq_len, self.mask_prob, self.batch_size = max_seq_len, mask_prob, batch_size
        self.val_fraction, self.num_workers, self.seed = val_fraction, num_workers, seed
        self._documents: dict[str, list[list[str]]] | None = None
        self._tokenizer: Tokenizer | None = None
        self._pairs: dict[str, SentencePairs] = {}

    def documents(self, split: str) -> list[list[str]]:
        """The documents of ``"train"`` or ``"val"``, every source read once."""
        if self._documents is None:
            train, val = [], []
            for source in self.sources:
                docs = load_pretraining_documents(source)
                n_val = max(2, round(len(docs) * self.val_fraction))
                if len(docs) < n_val + 2:
                    raise ValueError(f"source {source!r} has {len(docs)} documents; NSP needs at least {n_val + 2}")
                train += docs[:-n_val]
                val += docs[-n_val:]
            self._documents = {"train": train, "val": val}
            logger.info("pretraining documents: %d train, %d val", len(train), len(val))
        return self._documents[split]

    @property
    def tokenizer(self) -> Tokenizer:
        """The BPE tokenizer: loaded from ``tokenizer_path`` or trained on the train sentences."""
        if self._tokenizer is None:
            if self.tokenizer_path is not None:
                self._tokenizer = load_tokenizer(self.tokenizer_path)
            else:
                lines = ["\n".join(doc) for doc in self.documents("train")]
                self._tokenizer = build_tokenizer("bpe", lines, self.requested_vocab_size)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def pairs(self, split: str) -> SentencePairs:
        """The NSP dataset of one split, tokenized on first use."""
        if split not in self._pairs:
            docs = self.documents(split)
            sentences = [s for doc in docs for s in doc]
            doc_of_sentence = [d for d, doc in enumerate(docs) for _ in doc]
            ids = self.tokenizer.encode_batch(sentences)
            self._pairs[split] = SentencePairs(ids, doc_of_sentence, self.tokenizer, self.max_seq_len, self.mask_prob)
            logger.info("%s: %d sentences, %d pairs", split, len(sentences), len(self._pairs[split]))
        return self._pairs[split]

    def setup(self, stage: str) -> None:
        for split in ("train", "val"):
            self.pairs(split)

    def train_dataloader(self) -> DataLoader:
        train = self.pairs("train")
        return self._loader(train, PairSampler(train, self.seed, batch_size=self.batch_size))

    def val_dataloader(self) -> DataLoader:
        val = self.pairs("val")
        return self._loader(val, PairSampler(val, self.seed + 1, fixed=True, batch_size=self.batch_size))

    def _loader(self, dataset: SentencePairs, sampler: Sampler) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, collate_fn=dataset.collate,
        )  # fmt: skip


# -- classification -----------------------------------------------------------------------
def sanitize_text(tokenizer: Tokenizer, text: str) -> tuple[str, int]:
    """``text`` with the characters ``tokenizer`` cannot encode replaced by U+FFFD (or dropped
    when U+FFFD itself cannot be encoded), and how many were replaced."""
    try:
        tokenizer.encode(text)
        return text, 0
    except ValueError:
        pass
    bad = set()
    for char in set(text):
        try:
            tokenizer.encode(char)
        except ValueError:
            bad.add(char)
    try:
        tokenizer.encode("\ufffd")
        replacement = "\ufffd"
    except ValueError:
        replacement = ""
    return "".join(replacement if char in bad else char for char in text), sum(char in bad for char in text)


def encode_sentence(tokenizer: Tokenizer, text: str, max_seq_len: int) -> tuple[list[int], int, int]:
    """``[CLS] text [SEP]`` ids, cropped from the right to ``max_seq_len``.

    Returns:
        ``(ids, n_cropped, n_replaced)``: the ids, how many text tokens were cut off the end,
        and how many characters the tokenizer could not encode (see :func:`sanitize_text`).
    """
    text, n_replaced = sanitize_text(tokenizer, text)
    body = tokenizer.encode(text)
    keep = max_seq_len - 2
    return [tokenizer.cls_id, *body[:keep], tokenizer.sep_id], max(0, len(body) - keep), n_replaced


def pydoc_indent_dataset() -> tuple[list[str], list[str]]:
    """An offline labelled set from Python's own pydoc topics (ships with Python).

    Every paragraph of three or more words is labelled ``indented`` when all its lines are
    indented in the help text (code examples, grammar, method descriptions) and ``prose``
    otherwise; its whitespace is collapsed, so the model must tell them apart from content.
    Repeated paragraphs are kept once: 1,877 paragraphs, 64% prose (Python 3.11).
    """
    from pydoc_data.topics import topics

    texts, labels, seen = [], [], set()
    for name in sorted(topics):
        for block in re.split(r"\n[ \t]*\n", topics[name]):
            lines = [line for line in block.split("\n") if line.strip()]
            text = " ".join(block.split())
            if len(text.split()) < 3 or text in seen:  # repeated paragraphs would leak into val
                continue
            seen.add(text)
            texts.append(text)
            labels.append("indented" if all(line.startswith("   ") for line in lines) else "prose")
    return texts, labels


CLASSIFICATION_SOURCES = ("pydoc-indent", "sst2", "files")


def class_indices(labels: Sequence[str], class_names: Sequence[str], where: str) -> list[int]:
    """Label strings -> class indices: by name, or as integers ``0..K-1`` into ``class_names``."""
    by_name = {name: i for i, name in enumerate(class_names)}
    indices = []
    for label in labels:
        if label in by_name:
            indices.append(by_name[label])
        elif label.lstrip("-").isdigit() and 0 <= int(label) < len(class_names):
            indices.append(int(label))
        else:
            raise ValueError(
                f"{where}: label {label!r} is neither a class name of {list(class_names)} "
                f"nor an integer in 0..{len(class_names) - 1}"
            )
    return indices


class LabelledSentences(Dataset[dict[str, Tensor]]):
    """Encoded ``[CLS] text [SEP]`` sequences with their class index."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        ids = torch.tensor(self.ids[index], dtype=torch.long)
        return {"input_ids": ids, "segment_ids": torch.zeros_like(ids), "labels": torch.tensor(self.labels[index])}


class TextClassificationDataModule(pl.LightningDataModule):
    """Single-sentence classification: ``[CLS] text [SEP]`` -> class.

    With ``init_from`` (a ``bert`` pretraining checkpoint) the tokenizer is the checkpoint's and
    the path is linked into the model, which loads the pretrained encoder from it. Batches are
    dicts of (B, T) ``input_ids``, ``segment_ids`` (zeros), ``attention_mask`` (bool, True = real
    token) and (B,) ``labels``.

    Args:
        source: ``pydoc-indent`` (offline, see :func:`pydoc_indent_dataset`; every fifth
            paragraph is validation), ``sst2`` (``../shared/data/sst2/{train,dev}.tsv``) or ``files``.
        train_path: training table (``source: files``), TSV or CSV with a header row.
        val_path: validation table (``source: files``).
        text_column: header of the text column of the tables.
        label_column: header of the label column.
        class_names: names of the classes; integer labels ``i`` mean ``class_names[i]``. None: the
            sorted distinct training labels (``sst2``: negative, positive).
        init_from: ``bert`` checkpoint whose tokenizer (and, in the model, weights) to reuse.
        tokenizer_path: JSON tokenizer to load when there is no ``init_from``.
        vocab_size: target BPE vocabulary size when training a tokenizer on the training texts.
        max_seq_len: longest sequence; longer texts are cropped from the right (linked into the model).
        batch_size: sentences per batch.
        num_workers: DataLoader worker processes.
        seed: seed of the training shuffle.
    """

    def __init__(
        self,
        source: str = "pydoc-indent",
        train_path: str | None = None,
        val_path: str | None = None,
        text_column: str = "sentence",
        label_column: str = "label",
        class_names: list[str] | None = None,
        init_from: str | None = None,
        tokenizer_path: str | None = None,
        vocab_size: int = 2048,
        max_seq_len: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if source not in CLASSIFICATION_SOURCES:
            raise ValueError(f"{owner}.source={source!r} is not one of {list(CLASSIFICATION_SOURCES)}")
        if source == "files" and (train_path is None or val_path is None):
            raise ValueError(f"{owner}.source='files' needs train_path and val_path (TSV/CSV tables)")
        if max_seq_len < 3:
            raise ValueError(f"{owner}.max_seq_len must be >= 3 ([CLS] text [SEP]), got {max_seq_len}")
        _check_positive(owner, "batch_size", batch_size)
        self.source, self.train_path, self.val_path = source, train_path, val_path
        self.text_column, self.label_column = text_column, label_column
        self._class_names = list(class_names) if class_names is not None else None
        self.init_from, self.tokenizer_path, self.requested_vocab_size = init_from, tokenizer_path, vocab_size
        self.max_seq_len, self.batch_size, self.num_workers, self.seed = max_seq_len, batch_size, num_workers, seed
        self._tables: dict[str, tuple[list[str], list[str]]] | None = None
        self._tokenizer: Tokenizer | None = None
        self._datasets: dict[str, LabelledSentences] = {}

    def tables(self, split: str) -> tuple[list[str], list[str]]:
        """(texts, label strings) of ``"train"`` or ``"val"``."""
        if self._tables is None:
            if self.source == "pydoc-indent":
                texts, labels = pydoc_indent_dataset()
                self._tables = {"train": ([], []), "val": ([], [])}
                for i, (text, label) in enumerate(zip(texts, labels)):
                    split = "val" if i % 5 == 4 else "train"
                    self._tables[split][0].append(text)
                    self._tables[split][1].append(label)
            else:
                if self.source == "sst2":
                    paths = {"train": SHARED_SST2 / "train.tsv", "val": SHARED_SST2 / "dev.tsv"}
                else:
                    paths = {"train": self.train_path, "val": self.val_path}
                self._tables = {
                    split: read_table(path, self.text_column, self.label_column) for split, path in paths.items()
                }
        return self._tables[split]

    @property
    def class_names(self) -> list[str]:
        """Names of the classes, index = class id."""
        if self._class_names is None:
            if self.source == "sst2":
                self._class_names = list(SST2_CLASS_NAMES)
            else:
                distinct = set(self.tables("train")[1])
                numeric = all(label.lstrip("-").isdigit() for label in distinct)
                self._class_names = sorted(distinct, key=int if numeric else str)
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def tokenizer(self) -> Tokenizer:
        """The checkpoint's tokenizer (``init_from``), a loaded one, or BPE trained on the train texts."""
        if self._tokenizer is None:
            if self.init_from is not None:
                self._tokenizer = pretrained_tokenizer(self.init_from)
            elif self.tokenizer_path is not None:
                self._tokenizer = load_tokenizer(self.tokenizer_path)
            else:
                self._tokenizer = build_tokenizer("bpe", self.tables("train")[0], self.requested_vocab_size)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def dataset(self, split: str) -> LabelledSentences:
        if split not in self._datasets:
            texts, labels = self.tables(split)
            where = f"{self.source} {split} split"
            encoded = [encode_sentence(self.tokenizer, text, self.max_seq_len) for text in texts]
            n_cropped = sum(cropped > 0 for _, cropped, _ in encoded)
            if n_cropped:
                logger.info(
                    "%s: %d of %d texts cropped to max_seq_len=%d", where, n_cropped, len(texts), self.max_seq_len
                )
            ids = [e[0] for e in encoded]
            self._datasets[split] = LabelledSentences(ids, class_indices(labels, self.class_names, where))
        return self._datasets[split]

    def setup(self, stage: str) -> None:
        for split in ("train", "val"):
            self.dataset(split)

    def train_dataloader(self) -> DataLoader:
        train = self.dataset("train")
        lengths = torch.tensor([len(ids) for ids in train.ids])
        return self._loader(train, sampler=BucketedShuffleSampler(lengths, self.batch_size, self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), shuffle=False)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        pad_id = self.tokenizer.pad_id
        return DataLoader(
            dataset, batch_size=self.batch_size, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, collate_fn=partial(pad_batch, pad_id=pad_id), **kwargs,
        )  # fmt: skip


def pretrained_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ``bert`` pretraining checkpoint; another task's checkpoint is a :class:`CheckpointError`."""
    checkpoint = read_checkpoint(path)
    task = checkpoint["anyformer"].get("task")
    if task != "bert":
        raise CheckpointError(
            f"init_from={str(path)!r} is a {task!r} checkpoint; it must be a 'bert' pretraining checkpoint "
            "(written by `anyformer bert fit`)"
        )
    return checkpoint


def pretrained_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer stored in a ``bert`` pretraining checkpoint."""
    state = pretrained_checkpoint(path)["anyformer"]["inference"].get("tokenizer")
    if state is None:
        raise CheckpointError(f"{path} holds no tokenizer; it was not written by a `bert fit` run")
    return tokenizer_from_state(state)
