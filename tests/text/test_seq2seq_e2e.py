"""Seq2seq end to end: a short fit through the CLI, test metrics, then `anyformer translate`
from the checkpoint alone."""

import logging
import math
import shutil
from pathlib import Path

import pytest

from anyformer.core.cli.main import main as cli_main
from anyformer.core.train.checkpoint import load_task
from anyformer.text.seq2seq.data import synthetic_pairs
from anyformer.text.seq2seq.seq2seq_task import corpus_bleu
from tests.helpers import data_path, read_metrics, run_cli

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "experiments/text/seq2seq_demo.yaml"
SHRUNK = [
    "--data.vocab_size", "400", "--data.batch_size", "16", "--data.max_source_len", "40",
    "--data.max_target_len", "40", "--model.val_bleu_sentences", "8",
    "--model.optim.lr", "3e-3", "--model.optim.warmup_steps", "5",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]  # fmt: skip
"""What every seq2seq demo config is shrunk by (with its model's own sizes) for :func:`fit_and_test`."""
TINY = [
    "--model.config.encoder.dim", "32", "--model.config.encoder.n_layers", "1",
    "--model.config.decoder.dim", "32", "--model.config.decoder.n_layers", "1",
]  # fmt: skip


def fit_and_test(workdir: Path, task: str, config: Path, model: list[str]) -> Path:
    """30 optimizer steps of ``config`` shrunk by :data:`SHRUNK` and ``model``, validated twice, then `test`
    on its checkpoint: the run folder. The fit's ``metrics.csv`` is also kept as ``fit_metrics.csv``."""
    options = [*SHRUNK, *model]
    fit = [task, "fit", "--config", str(config), *options, "--trainer.max_steps", "30",
           "--trainer.val_check_interval", "15", "--trainer.limit_val_batches", "2"]  # fmt: skip
    run_cli(workdir, fit)
    run = workdir / "runs" / config.stem
    shutil.copy(run / "metrics.csv", run / "fit_metrics.csv")  # kept: `test` must not touch the fit's log
    test = [task, "test", "--config", str(config), *options, "--trainer.limit_test_batches", "1",
            "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]  # fmt: skip
    run_cli(workdir, test)
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """30 optimizer steps of the demo config (shrunk), validated twice, then `test` on its checkpoint."""
    return fit_and_test(tmp_path_factory.mktemp("seq2seq"), "seq2seq", DEMO, TINY)


def checked_val_losses(run: Path) -> list[float]:
    """The metrics every seq2seq family logs, checked: val loss, perplexity (its exp) and BLEU at both
    validations of the fit, each test loss and BLEU once; returns the val losses."""
    metrics = read_metrics(run / "fit_metrics.csv")
    assert len(metrics["val_loss"]) == 2 and len(metrics["val_bleu"]) == 2
    for loss, ppl in zip(metrics["val_loss"], metrics["val_ppl"]):
        assert ppl == pytest.approx(math.exp(loss), rel=1e-4)
    tested = read_metrics(run / "test" / "metrics.csv")  # validate/test log into runs/<name>/<subcommand>/
    for name in ("test_loss", "test_bleu_greedy", "test_bleu_beam", "test_bleu_greedy_lc", "test_bleu_beam_lc"):
        assert len(tested[name]) == 1 and 0.0 <= tested[name][0] <= 100.0
    return metrics["val_loss"]


def test_fit_and_test_log_loss_perplexity_and_bleu(run):
    val_loss = checked_val_losses(run)
    assert val_loss[-1] < min(5.0, val_loss[0])  # uniform guess: ln(400) = 5.99
    assert (run / "metrics.csv").read_text() == (run / "fit_metrics.csv").read_text()


def check_the_translate_tool(ckpt: Path, module, tmp_path: Path, capsys) -> None:
    """``module`` (loaded from ``ckpt``) translates six synthetic test sentences, beam 1 as greedy; `anyformer
    translate` from ``ckpt`` alone prints the same greedy translations and the sacreBLEU of both strategies."""
    pairs = synthetic_pairs()["test"][:6]
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    greedy = module.translate(sources, strategy="greedy")
    beam = module.translate(sources, strategy="beam", beams=4)
    assert len(greedy) == len(beam) == 6
    # beam=1 is greedy, through the whole text -> text path.
    assert module.translate(sources, strategy="beam", beams=1) == greedy

    assert cli_main(["translate", "--ckpt", str(ckpt), "--strategy", "greedy", *sources[:2]]) == 0
    assert capsys.readouterr().out.splitlines() == greedy[:2]

    (tmp_path / "src.txt").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("\n".join(references) + "\n", encoding="utf-8")
    args = ["translate", "--ckpt", str(ckpt), "--eval-src", str(tmp_path / "src.txt"),
            "--eval-ref", str(tmp_path / "ref.txt")]  # fmt: skip
    assert cli_main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["greedy", "sacreBLEU", f"{corpus_bleu(greedy, references):.2f}"]
    assert lines[1].split()[:3] == ["beam-4", "sacreBLEU", f"{corpus_bleu(beam, references):.2f}"]


def test_checkpoint_alone_translates_and_the_tool_reproduces_its_bleu(run, tmp_path, capsys):
    ckpt = run / "checkpoints" / "last.ckpt"
    module = load_task(ckpt, tasks=("seq2seq",))
    assert module.src_tokenizer is module.tgt_tokenizer  # shared vocabulary restored as one object
    check_the_translate_tool(ckpt, module, tmp_path, capsys)


def test_translate_warns_about_a_too_long_sentence(run, capsys, caplog):
    ckpt = run / "checkpoints" / "last.ckpt"
    assert cli_main(["translate", "--ckpt", str(ckpt), "--strategy", "greedy", "the value " * 60]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert "longer than the model's source window of 40 tokens" in caplog.text


def test_translate_usage_errors_exit_2(run, tmp_path, capsys):
    ckpt = run / "checkpoints" / "last.ckpt"
    (tmp_path / "one.txt").write_text("a\n", encoding="utf-8")
    (tmp_path / "two.txt").write_text("a\nb\n", encoding="utf-8")
    cases = [
        (["--ckpt", str(tmp_path / "missing.ckpt"), "hello"], "does not exist"),
        (["--ckpt", str(ckpt)], "give sentences"),
        (["--ckpt", str(ckpt), "--eval-src", str(tmp_path / "one.txt")], "go together"),
        (["--ckpt", str(ckpt), "--eval-src", str(tmp_path / "one.txt"), "--eval-ref", str(tmp_path / "two.txt")],
         "one.txt has 1 lines"),
        (["--ckpt", str(ckpt), "--file", str(tmp_path / "nope.txt")], "nope.txt does not exist"),
        (["--ckpt", str(ckpt), "--eval-set", "multi30k"], "is not DATASET:SPLIT[:SRC-TGT]"),
        (["--ckpt", str(ckpt), "--eval-set", "multi30k:test:de"], "is not DATASET:SPLIT[:SRC-TGT]"),
        (["--ckpt", str(ckpt), "--eval-set", "wmt14:test"], "unknown dataset 'wmt14'; known: multi30k"),
        (["--ckpt", str(ckpt), "--eval-set", "multi30k:val", "--eval-src", str(tmp_path / "one.txt"),
          "--eval-ref", str(tmp_path / "two.txt")], "not both"),
        # offline (the suite's setting) and not in the given folder: the data layer's one line
        (["--ckpt", str(ckpt), "--eval-set", "multi30k:val", "--data-root", str(tmp_path / "empty")],
         f"dataset 'multi30k' is not in {tmp_path / 'empty'}"),
    ]  # fmt: skip
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["translate", *args])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_multi30k_config_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["seq2seq", "fit", "--config", str(REPO / "experiments/text/seq2seq_multi30k.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "test_split: test_2016_flickr" in printed and "label_smoothing: 0.1" in printed


def test_multi30k_config_runs_one_step(tmp_path, caplog):
    """fast_dev_run of the real config (the named source multi30k, found in $ANYFORMER_DATA): BPE on
    58k sentences, one train and one val batch (small)."""
    data_path("multi30k/train.de")
    args = ["seq2seq", "fit", "--config", str(REPO / "experiments/text/seq2seq_multi30k.yaml"),
            "--data.max_tokens", "256", "--model.val_bleu_sentences", "4",
            "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    with caplog.at_level(logging.INFO):
        run_cli(tmp_path, args)
    assert "trained byte-level BPE with 8000 tokens" in caplog.text  # one shared vocabulary, as configured
    assert "train split train: 29000 pairs" in caplog.text and "val split val: 1014 pairs" in caplog.text
    assert "cropped" not in caplog.text  # max_source_len / max_target_len 64 fit every Multi30k sentence


def test_extra_test_sets_log_the_same_metrics_under_their_names_as_each_tested_alone(tmp_path):
    """`extra_test_splits` of a folder source: one dataloader each after the test split; every set's loss
    and BLEU equal what testing that set as the only test split logs."""
    pairs = synthetic_pairs()
    folder = tmp_path / "corpus"
    folder.mkdir()
    splits = {"train": pairs["train"], "val": pairs["val"], "test_a": pairs["test"][:40],
              "test_b": pairs["test"][40:70], "test_c": pairs["test"][70:90]}  # fmt: skip
    for split, chosen in splits.items():
        for side, lang in enumerate(("de", "en")):
            (folder / f"{split}.{lang}").write_text("".join(pair[side] + "\n" for pair in chosen), encoding="utf-8")
    options = [*SHRUNK, *TINY, f"--data.source={folder}", "--data.test_split=test_a"]
    run_cli(tmp_path, ["seq2seq", "fit", "--config", str(DEMO), *options, "--trainer.max_steps", "20",
                       "--trainer.val_check_interval", "10", "--trainer.limit_val_batches", "1"])  # fmt: skip
    run = tmp_path / "runs" / DEMO.stem
    ckpt = ["--ckpt_path", str(run / "checkpoints" / "last.ckpt")]

    def tested(*extra: str) -> dict[str, float]:
        run_cli(tmp_path, ["seq2seq", "test", "--config", str(DEMO), *options, *extra, *ckpt])
        return {name: values[-1] for name, values in read_metrics(run / "test" / "metrics.csv").items() if values}

    together = tested("--data.extra_test_splits=[test_b, test_c]")
    suffixes = ("loss", "ppl", "bleu_greedy", "bleu_beam", "bleu_greedy_lc", "bleu_beam_lc")
    for split in ("test_b", "test_c"):
        alone = tested(f"--data.test_split={split}")
        for suffix in suffixes:
            assert together[f"{split}_{suffix}"] == pytest.approx(alone[f"test_{suffix}"], rel=1e-5), (split, suffix)
    alone = tested()
    for suffix in suffixes:  # the first test set keeps the plain test_* names
        assert together[f"test_{suffix}"] == pytest.approx(alone[f"test_{suffix}"], rel=1e-5)
    assert not any("dataloader_idx" in name for name in together)


def test_extra_test_splits_are_refused_for_the_synthetic_source_and_when_repeated():
    from anyformer.text.seq2seq.data import ParallelDataModule

    with pytest.raises(ValueError, match="synthetic source has one test split"):
        ParallelDataModule(extra_test_splits=["test_b"])
    with pytest.raises(ValueError, match="must be distinct and differ"):
        ParallelDataModule(source="folder", extra_test_splits=["test_2016_flickr"])
