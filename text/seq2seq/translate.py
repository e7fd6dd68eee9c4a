"""``anyformer translate``: translate sentences, or score a test set, with a seq2seq checkpoint.

    anyformer translate --ckpt runs/seq2seq_multi30k/checkpoints/last.ckpt "Ein Mann fährt Fahrrad."
    anyformer translate --ckpt CKPT --file input.de --strategy beam --beams 4
    anyformer translate --ckpt CKPT --eval-set multi30k:test_2016_flickr
    anyformer translate --ckpt CKPT --eval-src test.de --eval-ref test.en

Translations are printed one per line, in input order. A test set prints corpus sacreBLEU (13a,
case-sensitive) of greedy and beam search, and the lowercased variant (``lowercase=True,
tokenize='13a'``), reproducing the ``test_bleu_*`` figures of
``anyformer seq2seq test``. The checkpoint alone is enough: the tokenizers travel inside it.
Sentences longer than the model's source window are cropped with a warning on stderr.
Exit codes: 0 on success, 2 for usage errors (bad checkpoint, missing or misaligned files).

A test set is ``--eval-set DATASET:SPLIT[:SRC-TGT]``, the files ``SPLIT.SRC`` and ``SPLIT.TGT``
(languages default to ``de-en``) of a dataset of :mod:`anyformer.core.data` (``--data-root``, else
``$ANYFORMER_DATA``, else the user cache, else downloaded), or two aligned files
``--eval-src/--eval-ref``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from anyformer.core.cli.errors import ArgumentParser, reports_usage_errors
from anyformer.core.data import resolve
from anyformer.core.train.checkpoint import CheckpointError, load_task
from anyformer.text.seq2seq.data import DATASETS, read_parallel
from anyformer.text.seq2seq.seq2seq_task import corpus_bleu

PROG = "anyformer translate"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Translate with a seq2seq checkpoint.")
    parser.add_argument("--ckpt", required=True, help="checkpoint of `anyformer seq2seq fit` or `gru-seq2seq fit`")
    parser.add_argument("sentences", nargs="*", metavar="SENTENCE", help="source sentences to translate")
    parser.add_argument("--file", help="a UTF-8 file of source sentences, one per line")
    parser.add_argument("--strategy", choices=("greedy", "beam"), default="beam")
    parser.add_argument("--beams", type=int, default=4, help="beam width (default 4)")
    parser.add_argument("--length-penalty", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences translated together (default 64)")
    parser.add_argument("--eval-src", metavar="FILE", help="source side of a test set: print BLEU instead")
    parser.add_argument("--eval-ref", metavar="FILE", help="reference translations, line-aligned with --eval-src")
    parser.add_argument(
        "--eval-set",
        metavar="DATASET:SPLIT[:SRC-TGT]",
        help=f"a test set of a known dataset ({', '.join(DATASETS)}), e.g. multi30k:test_2016_flickr "
        "(languages default to de-en): print BLEU instead",
    )
    parser.add_argument("--data-root", metavar="DIR", help="the --eval-set dataset's folder (first in the lookup)")
    return parser


def eval_set_files(spec: str, root: str | None = None) -> tuple[Path, Path]:
    """The (source, reference) files of ``DATASET:SPLIT[:SRC-TGT]``, resolved by :mod:`anyformer.core.data`.

    Raises:
        ValueError: a malformed spec, an unknown dataset, or a dataset that is not available.
    """
    parts = spec.split(":")
    langs = parts[2].split("-") if len(parts) == 3 else ["de", "en"]
    if len(parts) not in (2, 3) or not all(parts[:2]) or len(langs) != 2 or not all(langs):
        raise ValueError(f"--eval-set {spec!r} is not DATASET:SPLIT[:SRC-TGT], e.g. multi30k:test_2016_flickr:de-en")
    dataset, split = parts[:2]
    if dataset not in DATASETS:
        raise ValueError(f"--eval-set {spec!r}: unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    folder = resolve(dataset, root)
    return folder / f"{split}.{langs[0]}", folder / f"{split}.{langs[1]}"


def _read_sentences(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.rstrip("\r\n") for line in handle]
    except FileNotFoundError:
        raise ValueError(f"--file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"--file {path} is not valid UTF-8 ({err.reason} at byte {err.start})") from None


@reports_usage_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if (args.eval_src is None) != (args.eval_ref is None):
        parser.error("--eval-src and --eval-ref go together")
    if args.eval_set is not None and args.eval_src is not None:
        parser.error("give --eval-set or --eval-src/--eval-ref, not both")
    if args.beams < 1 or args.batch_size < 1:
        parser.error("--beams and --batch-size must be >= 1")
    evaluating = args.eval_src is not None or args.eval_set is not None
    if not evaluating and not args.sentences and not args.file:
        parser.error("give sentences to translate, --file FILE, --eval-set or --eval-src/--eval-ref")
    try:
        module = load_task(args.ckpt, tasks=("seq2seq", "gru-seq2seq"))
        if args.length_penalty is not None:
            module.length_penalty = args.length_penalty
        if args.eval_set is not None:
            pairs = read_parallel(*eval_set_files(args.eval_set, args.data_root))
        elif evaluating:
            pairs = read_parallel(args.eval_src, args.eval_ref)
        else:
            sentences = list(args.sentences) + (_read_sentences(args.file) if args.file else [])
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    if module.src_tokenizer is None:
        parser.error(f"{args.ckpt} holds no tokenizers (not written by `anyformer seq2seq fit` or `gru-seq2seq fit`)")
    with torch.inference_mode():
        if not evaluating:
            for line in module.translate(
                sentences, strategy=args.strategy, beams=args.beams, batch_size=args.batch_size
            ):
                print(line)
            return 0
        sources, references = (list(side) for side in zip(*pairs))
        for strategy in ("greedy", "beam"):
            start = time.perf_counter()
            hyps = module.translate(sources, strategy=strategy, beams=args.beams, batch_size=args.batch_size)
            name = "greedy" if strategy == "greedy" else f"beam-{args.beams}"
            print(
                f"{name:<8} sacreBLEU {corpus_bleu(hyps, references):6.2f}   "
                f"lowercased 13a {corpus_bleu(hyps, references, lowercase=True):6.2f}   "
                f"({len(hyps)} sentences, {time.perf_counter() - start:.1f} s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
