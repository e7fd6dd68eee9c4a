"""anyformer decode-eval: the metrics against hand counts and direct cross-entropy, prompts from the
checkpoint's validation text, and the command end to end on a tiny trained GPT."""

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from anyformer.core.cli.errors import UsageError
from anyformer.core.config import TransformerConfig
from anyformer.core.decoding import GenerationConfig, generate
from anyformer.core.train.checkpoint import load_task
from anyformer.core.train.run_record import read_record
from anyformer.text.gpt.data import TextDataModule
from anyformer.text.gpt.decode_eval import (
    continuation_nll,
    cut_prompts,
    decoding_metrics,
    distinct_n,
    main,
    repetition_rate,
    validation_text,
)
from anyformer.text.gpt.gpt import GPT, GPTConfig
from tests.helpers import run_cli


def test_distinct_n_counts_unique_ngrams_over_all_continuations_never_across_them():
    continuations = [[1, 2, 1, 2, 3], [3, 1]]
    assert distinct_n(continuations, 1) == pytest.approx(3 / 7)  # {1, 2, 3} among 7 tokens
    # (1,2) (2,1) (1,2) (2,3) | (3,1): 4 distinct of 5; the (3,3) across the boundary is no bigram.
    assert distinct_n(continuations, 2) == pytest.approx(4 / 5)
    assert distinct_n([[7, 8, 9]], 3) == 1.0
    with pytest.raises(ValueError, match="no continuation has 4 tokens"):
        distinct_n([[1, 2, 3]], 4)


def test_repetition_rate_is_the_share_of_4grams_seen_before_in_the_same_continuation():
    # 4-grams 1234 2341 3412 4123 1234 2341: the last two repeat earlier ones.
    assert repetition_rate([[1, 2, 3, 4, 1, 2, 3, 4, 1]]) == pytest.approx(2 / 6)
    assert repetition_rate([[5] * 6]) == pytest.approx(2 / 3)  # 5555 three times
    assert repetition_rate([[1, 2, 3, 4, 1, 2, 3, 4, 1], [5] * 6]) == pytest.approx(4 / 9)  # pooled
    assert repetition_rate([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]) == 0.0  # a 4-gram of another continuation is no repeat
    assert repetition_rate([[1, 2, 1, 2]], n=2) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no continuation has 4 tokens"):
        repetition_rate([[1, 2, 3]])


def _tiny_gpt(max_seq_len: int) -> GPT:
    torch.manual_seed(0)
    transformer = TransformerConfig(dim=16, n_layers=2, n_heads=2, max_seq_len=max_seq_len, dropout=0.0)
    return GPT(GPTConfig(vocab_size=11, transformer=transformer)).eval()


def test_gen_ppl_is_exp_of_the_mean_cross_entropy_of_the_continuation_tokens():
    model = _tiny_gpt(max_seq_len=16)
    sequences = torch.randint(0, 11, (3, 12), generator=torch.Generator().manual_seed(1))
    prompt_len = 5
    with torch.no_grad():
        logits = model(sequences)  # (B, T, V); position t predicts token t + 1
    expected = F.cross_entropy(logits[:, prompt_len - 1 : -1].reshape(-1, 11), sequences[:, prompt_len:].reshape(-1))
    assert continuation_nll(model, sequences, prompt_len).shape == (3, 12 - prompt_len)
    metrics = decoding_metrics(model, sequences, prompt_len)
    assert metrics["gen_ppl"] == pytest.approx(math.exp(expected.item()), rel=1e-5)
    assert metrics["distinct_1"] == distinct_n(sequences[:, prompt_len:].tolist(), 1)


def test_past_the_window_each_token_is_scored_from_at_least_three_quarters_of_a_window():
    window = 8
    model = _tiny_gpt(max_seq_len=window)
    sequences = torch.randint(0, 11, (2, 30), generator=torch.Generator().manual_seed(2))
    nll = continuation_nll(model, sequences, prompt_len=3)  # targets 3 .. 29
    for position in range(3, 30):
        # The NLL of token `position` given its last `context` tokens, for every context the contract allows.
        allowed = range(min(position, window - window // 4 + 1), min(position, window) + 1)
        with torch.no_grad():
            candidates = [
                F.cross_entropy(model(sequences[:, position - context : position])[:, -1], sequences[:, position],
                                reduction="none")
                for context in allowed
            ]  # fmt: skip
        column = nll[:, position - 3]
        assert any(torch.allclose(column, candidate, atol=1e-5) for candidate in candidates), position
        if position <= window:  # inside the first window: the whole prefix
            assert torch.allclose(column, candidates[-1], atol=1e-5)


def test_prompts_are_evenly_spaced_distinct_windows():
    prompts = cut_prompts(list(range(10)), n_prompts=3, prompt_tokens=4)
    assert prompts.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert cut_prompts(list(range(10)), 7, 4)[:, 0].tolist() == list(range(7))
    with pytest.raises(UsageError, match="too few for 8 distinct prompts of 4 tokens"):
        cut_prompts(list(range(10)), 8, 4)


def test_validation_text_is_the_data_modules_validation_split(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: some words\n" for i in range(100)))
    run = tmp_path / "runs" / "lm"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"source": str(corpus), "val_fraction": 0.25}}))
    expected = TextDataModule(source=str(corpus), val_fraction=0.25)._train_val_text()[1]
    assert validation_text(run / "checkpoints" / "last.ckpt") == expected
    with pytest.raises(UsageError, match="pass --prompt-file"):
        validation_text(tmp_path / "elsewhere" / "model.ckpt")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A two-step char-level GPT fit (context 16) in a temporary folder: (workdir, corpus text)."""
    workdir = tmp_path_factory.mktemp("decode")
    text = "".join(f"To be, or not to be, line {i}; that is the question.\n" for i in range(60))
    (workdir / "corpus.txt").write_text(text)
    (workdir / "tiny.yaml").write_text(yaml.safe_dump({
        "seed_everything": 1,
        "trainer": {"max_steps": 2, "val_check_interval": 2, "limit_val_batches": 1, "accelerator": "cpu",
                    "enable_progress_bar": False, "enable_model_summary": False},
        "model": {"config": {"transformer": {"dim": 16, "n_layers": 1, "n_heads": 2}}},
        "data": {"source": "corpus.txt", "tokenizer": "char", "context_len": 16, "batch_size": 4,
                 "train_batches_per_epoch": 10, "val_batches": 1},
    }))  # fmt: skip
    run_cli(workdir, ["gpt", "fit", "--config", "tiny.yaml", "--run-name", "tiny"])
    assert (workdir / "runs" / "tiny" / "checkpoints" / "last.ckpt").is_file()
    return workdir, text


ARGS = ["--ckpt", "runs/tiny/checkpoints/last.ckpt", "--strategy", "top-k", "--top-k", "5", "--prompts", "3",
        "--prompt-tokens", "6", "--new-tokens", "20", "--seed", "4"]  # fmt: skip


def test_command_scores_the_validation_prompts_and_records_the_run(tiny_run, monkeypatch, capsys):
    workdir, text = tiny_run
    monkeypatch.chdir(workdir)
    assert main([*ARGS, "--run-name", "tiny_top_k"]) == 0
    out = capsys.readouterr().out
    record = read_record(workdir / "runs" / "tiny_top_k")
    assert record["status"] == "finished" and record["task"] == "decode-eval"
    assert record["argv"] == ["anyformer", "decode-eval", *ARGS, "--run-name", "tiny_top_k"]
    assert "params" not in record and record["started"] <= record["ended"]

    # The same numbers from the pieces: prompts cut from the last 10% of the corpus (TextDataModule's
    # default val_fraction), 20 new tokens each (6 + 20 > the 16-token window), the same seed.
    module = load_task(workdir / "runs" / "tiny" / "checkpoints" / "last.ckpt")
    prompts = cut_prompts(module.tokenizer.encode(text[int(len(text) * 0.9) :]), 3, 6)
    cfg = GenerationConfig("top-k", max_new_tokens=20, top_k=5)
    sequences = generate(module.model, prompts, cfg, torch.Generator().manual_seed(4))
    expected = decoding_metrics(module.model, sequences, 6)
    assert record["metrics"] == pytest.approx(expected)
    assert set(expected) == {"gen_ppl", "distinct_1", "distinct_2", "repetition_rate"}
    for name, value in expected.items():
        assert f"{name} " in out and f"{value:.4f}" in out

    assert main([*ARGS, "--run-name", "tiny_top_k"]) == 0  # the same command may redo its own run
    capsys.readouterr()
    assert main([*ARGS[:-1], "5", "--run-name", "tiny_top_k"]) == 2  # another seed: another run
    assert "runs/tiny_top_k holds a run made by `anyformer decode-eval" in capsys.readouterr().err


def test_command_refuses_to_overwrite_a_fit_and_prompts_that_fill_the_window(tiny_run, monkeypatch, capsys):
    workdir, _ = tiny_run
    monkeypatch.chdir(workdir)
    fit_record = (workdir / "runs" / "tiny" / "run.json").read_text()
    assert main([*ARGS, "--run-name", "tiny"]) == 2
    assert "runs/tiny holds a run made by `anyformer gpt fit" in capsys.readouterr().err
    assert (workdir / "runs" / "tiny" / "run.json").read_text() == fit_record
    assert main([*ARGS, "--prompt-tokens", "16"]) == 2
    assert "use at most 15" in capsys.readouterr().err
    assert main([*ARGS, "--new-tokens", "3"]) == 2
    assert "--new-tokens must be at least 4" in capsys.readouterr().err
    assert main([*ARGS, "--top-p", "1.5", "--strategy", "top-p"]) == 2
    assert "--top-p must be in (0, 1]" in capsys.readouterr().err
    assert main([*ARGS, "--prompt-file", "missing.txt"]) == 2
    assert "--prompt-file missing.txt cannot be read" in capsys.readouterr().err


def test_prompt_file_replaces_the_validation_text(tiny_run, monkeypatch, capsys):
    workdir, text = tiny_run
    monkeypatch.chdir(workdir)
    (workdir / "prompts.txt").write_text(text[:200])
    assert main([*ARGS, "--prompt-file", "prompts.txt", "--strategy", "greedy"]) == 0
    assert f"sample: {text[:6]!r} -> " in capsys.readouterr().out  # the first prompt starts the file


def test_low_precision_weights_report_their_distance_from_fp32(tiny_run, monkeypatch, capsys):
    workdir, _ = tiny_run
    monkeypatch.chdir(workdir)
    assert main([*ARGS, "--dtype", "int8", "--strategy", "greedy"]) == 0
    out = capsys.readouterr().out
    values = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()[2:]}
    assert {"gen_ppl", "greedy_agreement", "val_loss", "val_loss_fp32", "val_loss_change"} <= set(values)
    assert 0.0 <= values["greedy_agreement"] <= 1.0
    assert values["val_loss_change"] == pytest.approx(values["val_loss"] / values["val_loss_fp32"] - 1, abs=2e-4)
    assert main([*ARGS, "--strategy", "greedy"]) == 0
    assert "greedy_agreement" not in capsys.readouterr().out  # fp32: nothing to compare with
    with pytest.raises(SystemExit) as stop:  # argparse's own one-line error, exit 2
        main([*ARGS, "--dtype", "fp16"])
    assert stop.value.code == 2 and "--dtype: invalid choice" in capsys.readouterr().err
