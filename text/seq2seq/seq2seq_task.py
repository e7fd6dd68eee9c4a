"""Training an encoder-decoder translator: teacher forcing, label smoothing, BLEU.

Training minimizes cross-entropy between the decoder's logits on ``BOS + target`` and the labels
``target + EOS`` (padding ignored), with label smoothing. Validation logs ``val_loss`` (plain
negative log-likelihood per target token, EOS included, no smoothing), ``val_ppl = exp(val_loss)``
and ``val_bleu``: sacreBLEU (``sacrebleu.corpus_bleu``, default 13a tokenization, case-sensitive,
on detokenized text) of greedy translations of the first ``val_bleu_sentences`` validation pairs
(in the loader's length-sorted order). Testing logs ``test_loss``, ``test_ppl``,
``test_bleu_greedy`` and ``test_bleu_beam`` (sacreBLEU, as above) and ``test_bleu_greedy_lc`` /
``test_bleu_beam_lc``: sacreBLEU with ``lowercase=True, tokenize='13a'`` — the "tokenized,
lowercased BLEU" that Multi30k papers usually report (there computed with multi-bleu.perl on
Moses-tokenized text, so close to, not identical with, those numbers). With more test sets
(``ParallelDataModule.extra_test_splits``) the first keeps these names and each other one logs the
same metrics named after its split: ``test_2017_flickr_loss``, ``test_2017_flickr_bleu_beam``, ...
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import sacrebleu
import torch.nn.functional as F
from torch import Tensor, nn

from anyformer.core.train.base import OptimConfig, TaskModule
from anyformer.text.seq2seq.data import BOS_TOKEN, EOS_TOKEN, IGNORE_INDEX, PAD_TOKEN, encode_source, pad_ids
from anyformer.text.seq2seq.seq2seq import Seq2Seq, Seq2SeqConfig, translate_ids
from anyformer.text.tokenizer import DEFAULT_SPECIALS, Tokenizer

logger = logging.getLogger(__name__)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], *, lowercase: bool = False) -> float:
    """sacreBLEU corpus score (13a tokenization) of one hypothesis per reference."""
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)], lowercase=lowercase, tokenize="13a").score


class Seq2SeqModule(TaskModule):
    """Trains :class:`~anyformer.text.seq2seq.seq2seq.Seq2Seq` by teacher forcing and evaluates it with BLEU."""

    task_name = "seq2seq"
    model_class: ClassVar[type[nn.Module]] = Seq2Seq
    """The network built from ``config`` (a subclass swaps it: ``anyformer.text.baselines.gru_seq2seq``)."""
    data_links: ClassVar[dict[str, str]] = {
        "src_vocab_size": "config.src_vocab_size",
        "tgt_vocab_size": "config.tgt_vocab_size",
        "shared_vocab": "config.shared_vocab",
        "max_source_len": "config.encoder.max_seq_len",
        "max_target_len": "config.decoder.max_seq_len",
    }

    def __init__(
        self,
        config: Seq2SeqConfig,
        optim: OptimConfig | None = None,
        label_smoothing: float = 0.1,
        val_bleu_sentences: int = 200,
        test_beams: int = 4,
        length_penalty: float = 1.0,
    ) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
            label_smoothing: training loss smoothing (validation/test losses are unsmoothed).
            val_bleu_sentences: validation pairs translated greedily for ``val_bleu`` (0: none).
            test_beams: beam width of ``test_bleu_beam``.
            length_penalty: beam hypotheses are ranked by log_prob / length**length_penalty.
        """
        super().__init__(config, optim)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"{type(self).__name__}.label_smoothing must be in [0, 1), got {label_smoothing}")
        if val_bleu_sentences < 0 or test_beams < 1:
            raise ValueError(f"{type(self).__name__}: val_bleu_sentences >= 0 and test_beams >= 1 required")
        self.model = self.model_class(config)
        self.label_smoothing = label_smoothing
        self.val_bleu_sentences, self.test_beams, self.length_penalty = val_bleu_sentences, test_beams, length_penalty
        self.src_tokenizer: Tokenizer | None = None
        self.tgt_tokenizer: Tokenizer | None = None
        self._eval: dict[str, Any] = {}

    # -- tokenizers ----------------------------------------------------------------------
    def read_data(self, data: Any) -> None:
        if self.src_tokenizer is None:
            self.src_tokenizer, self.tgt_tokenizer = data.src_tokenizer, data.tgt_tokenizer

    def inference_state(self) -> dict[str, Any]:
        if self.src_tokenizer is None or self.tgt_tokenizer is None:
            return {}
        shared = self.tgt_tokenizer is self.src_tokenizer
        return {
            "src_tokenizer": self.src_tokenizer.to_state(),
            "tgt_tokenizer": None if shared else self.tgt_tokenizer.to_state(),
        }

    def load_inference_state(self, state: dict[str, Any]) -> None:
        from anyformer.text.tokenizer import tokenizer_from_state

        if state.get("src_tokenizer"):
            self.src_tokenizer = tokenizer_from_state(state["src_tokenizer"])
            tgt = state.get("tgt_tokenizer")
            self.tgt_tokenizer = tokenizer_from_state(tgt) if tgt else self.src_tokenizer

    def _tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        if self.src_tokenizer is None or self.tgt_tokenizer is None:
            raise RuntimeError("Seq2SeqModule has no tokenizers: train it with a data module or load a checkpoint")
        return self.src_tokenizer, self.tgt_tokenizer

    # -- translation -----------------------------------------------------------------------
    def detokenize(self, ids: Sequence[int]) -> str:
        """Target ids -> text, dropping special tokens."""
        tgt = self._tokenizers()[1]
        specials = {tgt.token_id(token) for token in DEFAULT_SPECIALS}
        return tgt.decode([i for i in ids if i not in specials]).strip()

    def translate_batch(
        self, source: Tensor, source_keep: Tensor, strategy: str = "greedy", beams: int = 4
    ) -> list[str]:
        """(B, S) encoded sources -> B translations."""
        tgt = self._tokenizers()[1]
        rows = translate_ids(
            self.model, source, source_keep, bos_id=tgt.token_id(BOS_TOKEN), eos_id=tgt.token_id(EOS_TOKEN),
            strategy=strategy, beams=beams, length_penalty=self.length_penalty,
        )  # fmt: skip
        return [self.detokenize(row) for row in rows]

    def translate(
        self, texts: Sequence[str], *, strategy: str = "greedy", beams: int = 4, batch_size: int = 64
    ) -> list[str]:
        """Translate sentences; ones longer than the encoder's window are cropped with a warning."""
        src = self._tokenizers()[0]
        encoded, cropped = encode_source(src, texts, self.model.max_source_len)
        for i in cropped:
            logger.warning(
                "sentence %d is longer than the model's source window of %d tokens (EOS included): "
                "only its first %d tokens are translated",
                i + 1, self.model.max_source_len, self.model.max_source_len - 1,
            )  # fmt: skip
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths batch well
        out: list[str] = [""] * len(encoded)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            source, keep = pad_ids([encoded[i] for i in chunk], src.token_id(PAD_TOKEN))
            device = next(self.model.parameters()).device
            for i, text in zip(chunk, self.translate_batch(source.to(device), keep.to(device), strategy, beams)):
                out[i] = text
        return out

    # -- losses --------------------------------------------------------------------------
    def loss(self, batch: dict[str, Any], *, label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
        """Teacher-forced cross-entropy of ``labels`` given ``source`` and ``target_in``, padding ignored.

        ``reduction="mean"`` averages over target tokens; ``"sum"`` adds them up.
        """
        logits = self.model(batch["source"], batch["target_in"], source_keep=batch["source_keep"])  # (B, T, V)
        return F.cross_entropy(
            logits.flatten(0, 1), batch["labels"].flatten(),
            ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing, reduction=reduction,
        )  # fmt: skip

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.loss(batch, label_smoothing=self.label_smoothing)
        self.check_finite(loss)
        n_pairs = len(batch["reference"])
        self.log("train_loss", loss, prog_bar=True, batch_size=n_pairs)
        self.log("train_tokens", float((batch["labels"] != IGNORE_INDEX).sum()), batch_size=n_pairs)
        return loss

    # -- evaluation ------------------------------------------------------------------------
    def _start_eval(self) -> None:
        self._eval = {"nll": 0.0, "tokens": 0, "refs": [], "greedy": [], "beam": []}

    def _eval_step(self, batch: dict[str, Any], n_bleu: int, beam: bool) -> None:
        self._eval["nll"] += self.loss(batch, reduction="sum").item()
        self._eval["tokens"] += int((batch["labels"] != IGNORE_INDEX).sum())
        take = min(n_bleu - len(self._eval["refs"]), len(batch["reference"]))
        if take <= 0:
            return
        source, keep = batch["source"][:take], batch["source_keep"][:take]
        self._eval["refs"] += batch["reference"][:take]
        self._eval["greedy"] += self.translate_batch(source, keep, "greedy")
        if beam:
            self._eval["beam"] += self.translate_batch(source, keep, "beam", self.test_beams)

    def _log_loss(self, prefix: str) -> None:
        loss = self._eval["nll"] / max(1, self._eval["tokens"])
        self.log(f"{prefix}_loss", loss, prog_bar=True)
        self.log(f"{prefix}_ppl", math.exp(min(loss, 50.0)))

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, self.val_bleu_sentences, beam=False)

    def on_validation_epoch_end(self) -> None:
        self._log_loss("val")
        if self._eval["refs"]:
            self.log("val_bleu", corpus_bleu(self._eval["greedy"], self._eval["refs"]), prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._test_sets: dict[int, dict[str, Any]] = {}

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx not in self._test_sets:
            self._start_eval()
            self._test_sets[dataloader_idx] = self._eval
        self._eval = self._test_sets[dataloader_idx]
        self._eval_step(batch, n_bleu=10**9, beam=True)

    def _test_prefix(self, dataloader_idx: int) -> str:
        """``test`` for the first test set; an extra one's split name (``test_2017_flickr``)."""
        if dataloader_idx == 0:
            return "test"
        datamodule = getattr(self.trainer, "datamodule", None)
        names = getattr(datamodule, "test_names", None)
        return str(names[dataloader_idx]) if names and dataloader_idx < len(names) else f"test{dataloader_idx}"

    def on_test_epoch_end(self) -> None:
        for dataloader_idx, scores in sorted(self._test_sets.items()):
            self._eval, prefix = scores, self._test_prefix(dataloader_idx)
            self._log_loss(prefix)
            refs, bleu = scores["refs"], "test_bleu" if prefix == "test" else f"{prefix}_bleu"
            for name in ("greedy", "beam"):
                self.log(f"{bleu}_{name}", corpus_bleu(scores[name], refs))
                self.log(f"{bleu}_{name}_lc", corpus_bleu(scores[name], refs, lowercase=True))
            for hyp, ref in list(zip(scores["beam"], refs))[:3]:
                logger.info("%s reference:   %s\ntranslation: %s", prefix, ref, hyp)
