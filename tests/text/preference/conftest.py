"""A synthetic preference task that runs in seconds, offline: sentences of one-letter words ``a``..``h``;
the policy is a tiny character GPT fit on them through ``anyformer gpt fit``; the "sentiment" classifiers
are bags of characters built by hand whose probability of ``positive`` grows with the share of ``a``."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from anyformer.text.baselines.bow import BagOfWordsConfig, BagOfWordsModule
from anyformer.text.tokenizer import build_tokenizer
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[3]
POLICY_CONFIG = REPO / "experiments" / "text" / "gpt_sst2_policy.yaml"
DPO_CONFIG = REPO / "experiments" / "text" / "dpo_sst2.yaml"
LETTERS = "abcdefgh"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def preferences_argv(letters: dict[str, Path], policy: Path, reward: Path, *options: str) -> list[str]:
    """``anyformer preferences`` sampling ``policy`` on the letters' prompt file, scored by ``reward``."""
    return ["preferences", "--policy", str(policy), "--reward", str(reward),
            "--prompt-file", str(letters["prompts"]), *options]  # fmt: skip


def preference_eval_argv(letters: dict[str, Path], policy: Path, reference: Path, *options: str) -> list[str]:
    """``anyformer preference-eval`` of ``policy`` against ``reference`` on the letters' prompt file, with the
    letters' reward model and judge."""
    return ["preference-eval", "--policy", str(policy), "--reference", str(reference),
            "--reward", str(letters["reward"]), "--judge", str(letters["judge"]),
            "--prompt-file", str(letters["prompts"]), *options]  # fmt: skip


def dpo_fit_argv(pairs: Path | str, policy: Path) -> list[str]:
    """``anyformer dpo fit`` of the DPO config on ``pairs``, starting from ``policy``."""
    return ["dpo", "fit", "--config", str(DPO_CONFIG), f"--data.pairs={pairs}", f"--data.policy={policy}"]


def letter_sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 8))) for _ in range(count)]


def save_module(module, path: Path) -> Path:
    """A checkpoint file with what ``anyformer.core.train.checkpoint.read_checkpoint`` needs."""
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def letter_policy(folder: Path, alphabet: str, name: str) -> Path:
    """An untrained tiny character GPT checkpoint over ``alphabet`` (+ newline)."""
    from anyformer.core.config import TransformerConfig
    from anyformer.text.gpt.gpt import GPTConfig
    from anyformer.text.gpt.gpt_task import GPTModule

    tokenizer = build_tokenizer("char", [alphabet + "\n"], 0)
    transformer = TransformerConfig(dim=32, n_layers=1, n_heads=2, max_seq_len=32, dropout=0.0)
    module = GPTModule(GPTConfig(vocab_size=tokenizer.vocab_size, transformer=transformer))
    module.tokenizer = tokenizer
    return save_module(module.eval(), folder / f"{name}.ckpt")


def letter_classifier(folder: Path, threshold: float, name: str) -> Path:
    """A ``text-bow`` checkpoint: P(positive) = sigmoid(60 * (share of ``a`` among the tokens - threshold))."""
    tokenizer = build_tokenizer("char", [LETTERS + " \n"], 0)
    module = BagOfWordsModule(BagOfWordsConfig(vocab_size=tokenizer.vocab_size, num_classes=2, max_seq_len=64, dim=1))
    module.tokenizer, module.class_names = tokenizer, ["negative", "positive"]
    with torch.no_grad():
        module.model.token_embedding.weight.zero_()
        module.model.token_embedding.weight[tokenizer.encode("a")[0]] = 1.0  # the mean is the share of `a`
        module.model.head.weight.copy_(torch.tensor([[0.0], [60.0]]))
        module.model.head.bias.copy_(torch.tensor([0.0, -60.0 * threshold]))
    return save_module(module.eval(), folder / f"{name}.ckpt")


@pytest.fixture(scope="package")
def letters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The folder (runs/ inside), the corpus, the prompt file, the policy, a reward model and a judge."""
    folder = tmp_path_factory.mktemp("letters")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(letter_sentences(3000, seed=0)) + "\n", encoding="utf-8")
    prompts = folder / "prompts.txt"
    prompts.write_text("\n".join(letter_sentences(400, seed=1)) + "\n", encoding="utf-8")
    tiny = [
        "--model.config.transformer.dim=32",
        "--model.config.transformer.n_layers=1",
        "--model.config.transformer.n_heads=2",
        "--data.tokenizer=char",
        f"--data.source={corpus}",
        "--data.context_len=32",
        "--data.batch_size=16",
        "--trainer.max_steps=60",
        "--trainer.val_check_interval=60",
        "--trainer.limit_val_batches=2",
    ]
    run_cli(folder, ["gpt", "fit", "--config", str(POLICY_CONFIG), *tiny, *QUIET, "--run-name", "policy"])
    return {
        "folder": folder,
        "corpus": corpus,
        "prompts": prompts,
        "policy": folder / "runs" / "policy" / "checkpoints" / "last.ckpt",
        "reward": letter_classifier(folder, threshold=0.1, name="reward"),
        "judge": letter_classifier(folder, threshold=0.12, name="judge"),
    }
