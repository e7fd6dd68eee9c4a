"""The LSTM baseline: causal, decodes through an explicit state, trains and reports like the GPT."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from anyformer.core.config import TransformerConfig
from anyformer.core.decoding import GenerationConfig, beam_search, generate
from anyformer.core.train.checkpoint import load_task
from anyformer.text.baselines.lstm import LSTMConfig, LSTMLanguageModel
from anyformer.text.gpt.gpt import GPT, GPTConfig
from tests.helpers import read_metrics, run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def lstm():
    torch.manual_seed(0)
    return LSTMLanguageModel(LSTMConfig(vocab_size=19, dim=16, n_layers=2, max_seq_len=12)).eval()


def test_future_tokens_do_not_change_earlier_logits(lstm):
    ids = torch.randint(0, 19, (2, 10))
    changed = ids.clone()
    changed[:, 6] = (ids[:, 6] + 1) % 19
    with torch.no_grad():
        before, after = lstm(ids), lstm(changed)
    torch.testing.assert_close(before[:, :6], after[:, :6], rtol=0, atol=0)
    assert not torch.allclose(before[:, 6:], after[:, 6:])  # the change is seen from its position on


def test_cached_steps_equal_one_full_pass_and_reorder_follows_rows(lstm):
    ids = torch.randint(0, 19, (3, 9))
    with torch.no_grad():
        full = lstm(ids)
        cache = lstm.init_cache(3)
        steps = [lstm(ids[:, :4], cache=cache)] + [lstm(ids[:, t : t + 1], cache=cache) for t in range(4, 9)]
        assert cache.length == 9
        torch.testing.assert_close(torch.cat(steps, dim=1), full)
        order = torch.tensor([2, 0, 1])
        cache.reorder(order)
        nxt = torch.randint(0, 19, (3, 1))
        reference = lstm(torch.cat([ids[order], nxt], dim=1))[:, -1:]
        torch.testing.assert_close(lstm(nxt, cache=cache), reference)


def test_decoding_strategies_run_past_the_window(lstm):
    prompt = torch.randint(0, 19, (1, 5))
    out = generate(lstm, prompt, GenerationConfig("greedy", max_new_tokens=20))  # window 12: state re-primed
    assert out.shape == (1, 25) and torch.equal(out[:, :5], prompt)
    assert len(beam_search(lstm, prompt, GenerationConfig("beam", beams=3, max_new_tokens=4))[0]) == 3


def test_out_of_range_ids_and_bad_config_are_clear_errors(lstm):
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 19\)"):
        lstm(torch.tensor([[19]]))
    with pytest.raises(ValueError, match=r"LSTMConfig\.n_layers must be >= 1"):
        LSTMConfig(n_layers=0)


def test_shakespeare_config_matches_the_gpt_parameter_count():
    def model_config(name: str) -> dict:
        return yaml.safe_load((REPO / "experiments/text" / name).read_text())["model"]["config"]

    vocab = 71  # Tiny Shakespeare's character alphabet plus the tokenizer's specials
    gpt_fields = model_config("gpt_shakespeare_char.yaml")
    gpt = GPT(GPTConfig(vocab_size=vocab, transformer=TransformerConfig(**gpt_fields["transformer"])))
    lstm = LSTMLanguageModel(LSTMConfig(vocab_size=vocab, **model_config("lstm_shakespeare_char.yaml")))
    assert lstm.num_parameters() == pytest.approx(gpt.num_parameters(), rel=0.01)


def test_tiny_fit_learns_reports_bpc_and_generates_from_the_checkpoint(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 400)
    run_cli(tmp_path, [
        "lstm", "fit", "--config", str(REPO / "experiments/text/lstm_shakespeare_char.yaml"),
        "--data.source", str(corpus), "--data.context_len", "24", "--data.batch_size", "8", "--data.val_batches", "2",
        "--model.config.dim", "32", "--trainer.max_steps", "60", "--trainer.val_check_interval", "30",
        "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    run = tmp_path / "runs" / "lstm_shakespeare_char"
    metrics = read_metrics(run / "metrics.csv")
    module = load_task(run / "checkpoints" / "last.ckpt", tasks=("lstm",))
    vocab = module.tokenizer.vocab_size
    assert len(metrics["val_loss"]) == 2
    assert metrics["val_loss"][-1] < metrics["val_loss"][0] < math.log(vocab)  # below a uniform guess, improving
    # One token per character: bits per character = nats per token / ln 2, as GPTModule reports it.
    for loss, bpc in zip(metrics["val_loss"], metrics["val_bpc"]):
        assert bpc == pytest.approx(loss / math.log(2), rel=1e-5)
    prompt = torch.tensor([module.tokenizer.encode("the ")])
    text = module.tokenizer.decode(generate(module.model, prompt, GenerationConfig("greedy", max_new_tokens=8))[0])
    assert text.startswith("the ") and len(text) == 12
