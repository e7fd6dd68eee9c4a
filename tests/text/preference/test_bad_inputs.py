"""Bad inputs to the preference commands end with one line on stderr and exit status 2."""

import pytest
import torch

from anyformer.text.preference.dpo_task import DPOConfig, DPOModule
from tests.helpers import run_cli
from tests.text.preference.conftest import (
    LETTERS,
    QUIET,
    dpo_fit_argv,
    letter_policy,
    preference_eval_argv,
    preferences_argv,
)

FIT_TINY = ["--trainer.max_steps=2", "--trainer.val_check_interval=2", *QUIET]
PAIRS_OF_TWO = ["--prompts", "2", "--samples", "2", "--out", "out.jsonl"]


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith(f"anyformer {command}: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def pairs_file(letters):
    path = letters["folder"] / "bad_input_pairs.jsonl"
    path.write_text("".join('{"prompt": "a b", "chosen": " a a\\n", "rejected": " c d\\n"}\n' for _ in range(8)))
    return path


def test_a_reward_model_that_is_not_a_classifier_is_refused(letters, capsys):
    argv = preferences_argv(letters, letters["policy"], letters["policy"], *PAIRS_OF_TWO)
    run_cli(letters["folder"], argv, expect=2)
    line = _error_line(capsys, "preferences")
    assert "--reward" in line and "is a 'gpt' checkpoint" in line and "sentence classifier" in line


def test_a_policy_that_is_not_a_gpt_is_refused(letters, pairs_file, capsys):
    argv = preferences_argv(letters, letters["reward"], letters["reward"], *PAIRS_OF_TWO)
    run_cli(letters["folder"], argv, expect=2)
    assert "is a 'text-bow' checkpoint" in _error_line(capsys, "preferences")
    dpo = dpo_fit_argv(pairs_file, letters["reward"])
    run_cli(letters["folder"], [*dpo, *FIT_TINY, "--run-name", "not_a_gpt"], expect=2)
    assert "is a 'text-bow' checkpoint; expected a GPT" in _error_line(capsys, "dpo")


def test_a_reference_with_another_tokenizer_is_refused(letters, pairs_file, capsys):
    other = letter_policy(letters["folder"], LETTERS + "xyz", "other_tokenizer")
    argv = preference_eval_argv(letters, letters["policy"], other)
    run_cli(letters["folder"], argv, expect=2)
    assert "have different tokenizers" in _error_line(capsys, "preference-eval")
    dpo = dpo_fit_argv(pairs_file, letters["policy"])
    run_cli(letters["folder"], [*dpo, f"--model.reference={other}", *FIT_TINY, "--run-name", "other_ref"], expect=2)
    line = _error_line(capsys, "dpo")
    assert "model.reference" in line and ("different tokenizers" in line or "another architecture" in line)


def test_a_malformed_pairs_line_is_named(letters, capsys):
    bad = letters["folder"] / "bad.jsonl"
    bad.write_text('{"prompt": "a b", "chosen": " a", "rejected": " c"}\n{"prompt": "a b", "chosen": " a"}\n')
    run_cli(letters["folder"], [*dpo_fit_argv(bad, letters["policy"]), *FIT_TINY, "--run-name", "bad_pairs"], expect=2)
    line = _error_line(capsys, "dpo")
    assert f"{bad}:2: 'rejected' is missing; expected one JSON object per line" in line


def test_the_reference_is_frozen_and_kept_out_of_training_mode_and_the_optimizer(letters):
    module = DPOModule(DPOConfig(), policy=str(letters["policy"]))
    assert all(not p.requires_grad for p in module.reference.parameters())
    assert all(p.requires_grad for p in module.model.parameters())
    module.train()
    assert module.model.training and not module.reference.training
    reference_ids = {id(p) for p in module.reference.parameters()}
    from anyformer.core.train.base import param_groups

    optimized = [p for group in param_groups(module, 0.1) for p in group["params"]]
    assert optimized and not any(id(p) in reference_ids for p in optimized)
    before = {name: p.clone() for name, p in module.reference.state_dict().items()}
    ids = torch.tensor([[1, 2, 3, 4], [1, 2, 5, 6]])
    scored = torch.tensor([[False, False, True, True]] * 2)
    loss = module._step({"input_ids": ids, "scored": scored}, "train")
    loss.backward()
    assert all(p.grad is None for p in module.reference.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.model.parameters())
    assert all(torch.equal(before[name], p) for name, p in module.reference.state_dict().items())
