"""The commands end to end on the synthetic letters task (conftest.py): pairs from the reward model,
DPO moves the judge's positive rate up, the reference stays the policy it started from; bad inputs
end with one line and exit status 2."""

import json

import pytest
import torch

from anyformer.core.train.checkpoint import read_checkpoint
from anyformer.core.train.run_record import read_record
from anyformer.text.preference.pairs import read_pairs
from tests.helpers import run_cli
from tests.text.preference.conftest import QUIET, dpo_fit_argv, preference_eval_argv, preferences_argv

PROMPTS = ["--prompt-words", "3", "--new-tokens", "16"]
DPO_TINY = [
    "--trainer.max_steps=60",
    "--trainer.val_check_interval=30",
    "--data.batch_size=16",
    "--model.optim.lr=3e-3",
    "--model.optim.warmup_steps=5",
    "--model.config.sample_prompts=[a b c]",
    "--model.config.sample_new_tokens=8",
]


def _evaluate(letters, policy, name, *options) -> dict[str, float]:
    """``preference-eval`` of ``policy`` against the starting policy on 100 held-out prompts: the metrics."""
    argv = preference_eval_argv(letters, policy, letters["policy"], "--prompts", "100", "--first", "150", *PROMPTS)
    run_cli(letters["folder"], [*argv, *options, "--run-name", name])
    return read_record(letters["folder"] / "runs" / name)["metrics"]


@pytest.fixture(scope="module")
def tuned(letters):
    """Pairs from 150 prompts x 8 samples, then DPO on them: the run folder."""
    folder = letters["folder"]
    argv = preferences_argv(letters, letters["policy"], letters["reward"], "--prompts", "150", "--samples", "8")
    run_cli(folder, [*argv, *PROMPTS, "--out", "pairs.jsonl", "--run-name", "pairs"])
    run_cli(folder, [*dpo_fit_argv("pairs.jsonl", letters["policy"]), *DPO_TINY, *QUIET, "--run-name", "dpo"])
    return folder / "runs" / "dpo"


def test_preferences_writes_the_best_and_worst_continuation_of_each_prompt(letters, tuned):
    pairs = read_pairs(letters["folder"] / "pairs.jsonl")
    assert 100 <= len(pairs) <= 150  # a prompt whose 8 samples all score the same gives none
    assert all(pair.chosen_score > pair.rejected_score for pair in pairs)
    assert all(len(pair.prompt.split()) == 3 for pair in pairs)
    metrics = read_record(letters["folder"] / "runs" / "pairs")["metrics"]
    assert metrics["pairs"] == len(pairs)
    assert metrics["chosen_reward"] > metrics["reward_mean"] > metrics["rejected_reward"]


def test_dpo_moves_the_judge_positive_rate_up_and_keeps_the_reference_frozen(letters, tuned):
    base = _evaluate(letters, letters["policy"], "base_eval")
    after = _evaluate(letters, tuned / "checkpoints" / "last.ckpt", "dpo_eval")
    assert base["kl_per_token"] == pytest.approx(0.0, abs=1e-6)  # the reference itself
    assert after["judge_positive"] > base["judge_positive"] + 0.2, (base, after)
    assert after["reward_mean"] > base["reward_mean"]
    assert after["kl_per_token"] > 0.0
    samples = [json.loads(line) for line in (letters["folder"] / "runs" / "dpo_eval" / "samples.jsonl").open()]
    assert len(samples) == 100 and set(samples[0]) == {"prompt", "continuation", "reward", "judge"}
    # The reference in the DPO checkpoint is the starting policy, weight for weight; the policy moved.
    start = read_checkpoint(letters["policy"])["state_dict"]
    tuned_state = read_checkpoint(tuned / "checkpoints" / "last.ckpt")["state_dict"]
    for name, tensor in start.items():
        assert torch.equal(tuned_state[name.replace("model.", "reference.", 1)], tensor), name
    assert not torch.equal(tuned_state["model.token_embedding.weight"], start["model.token_embedding.weight"])
    logged = (tuned / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("val_loss", "val_reward_acc", "val_margin", "val_kl_per_token", "train_reward_acc"):
        assert column in logged


def test_best_of_n_keeps_the_reward_models_favourite_and_reports_its_kl_bound(letters):
    best = _evaluate(letters, letters["policy"], "best_of_4", "--best-of", "4")
    base = (
        read_record(letters["folder"] / "runs" / "base_eval")["metrics"]
        if (letters["folder"] / "runs" / "base_eval" / "run.json").is_file()
        else _evaluate(letters, letters["policy"], "base_eval")
    )
    assert best["reward_mean"] > base["reward_mean"]
    assert best["bon_kl_bound"] == pytest.approx((torch.tensor(4.0).log().item() - 0.75) / best["mean_tokens"])
