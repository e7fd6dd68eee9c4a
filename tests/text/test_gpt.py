"""GPT end to end: a short fit through the CLI, then generation from the checkpoint alone."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anyformer.core.decoding import GenerationConfig, generate
from anyformer.core.train.checkpoint import CheckpointError, load_task
from tests.helpers import read_metrics, run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A few real optimizer steps of the demo config, written under a temporary run folder."""
    workdir = tmp_path_factory.mktemp("gpt")
    args = [*tiny_fit_args(workdir), "--trainer.max_steps", "30", "--trainer.val_check_interval", "15"]
    run_cli(workdir, args)
    return workdir / "runs" / "gpt_demo"


def tiny_fit_args(workdir: Path) -> list[str]:
    """`anyformer gpt fit` of the demo config shrunk to seconds, on a one-sentence corpus written into ``workdir``."""
    corpus = workdir / "corpus.txt"
    corpus.write_text(("To be, or not to be, that is the question. " * 40 + "\n") * 30)
    return [
        "gpt", "fit", "--config", str(REPO / "experiments/text/gpt_demo.yaml"),
        "--data.source", str(corpus), "--data.vocab_size", "300", "--data.context_len", "32",
        "--data.batch_size", "4", "--data.val_batches", "2",
        "--model.config.transformer.dim", "32", "--model.config.transformer.n_layers", "2",
        "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


def test_fit_writes_metrics_and_checkpoints(trained_checkpoint):
    assert (trained_checkpoint / "checkpoints" / "last.ckpt").is_file()
    metrics = read_metrics(trained_checkpoint / "metrics.csv")
    val_losses = metrics["val_loss"]
    assert len(val_losses) == 2
    assert val_losses[-1] < math.log(300)  # learned something beyond a uniform guess
    assert metrics["val_bpc"][-1] < val_losses[-1] / math.log(2)  # BPE tokens span more than one character


def test_checkpoint_alone_generates(trained_checkpoint):
    module = load_task(trained_checkpoint / "checkpoints" / "last.ckpt", tasks=("gpt",))
    prompt = torch.tensor([module.tokenizer.encode("To be")])
    out = generate(module.model, prompt, GenerationConfig("greedy", max_new_tokens=30))
    text = module.tokenizer.decode(out[0].tolist())
    assert text.startswith("To be") and len(text) > len("To be")
    # The trained model continues the one sentence it has seen.
    assert "question" in text or "not to be" in text


def test_generate_command_streams_text(trained_checkpoint):
    ckpt = trained_checkpoint / "checkpoints" / "last.ckpt"
    cmd = [sys.executable, "-m", "anyformer.core.cli.main", "generate", "--ckpt", str(ckpt), "--prompt", "To be",
           "--strategy", "top-k", "--top-k", "5", "--max-new-tokens", "20", "--seed", "3"]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True).stdout
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert first.startswith("To be") and first == second  # seeded sampling is reproducible
    beams = subprocess.run([*cmd[:8], "--strategy", "beam", "--beams", "3", "--max-new-tokens", "8"],
                           capture_output=True, text=True, cwd=REPO, check=True).stdout  # fmt: skip
    assert beams.count("--- beam") == 3


def test_wrong_or_missing_checkpoint_is_a_usage_error(tmp_path):
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    for path in (bogus, tmp_path / "missing.ckpt"):
        result = subprocess.run([sys.executable, "-m", "anyformer.core.cli.main", "generate", "--ckpt", str(path)],
                                capture_output=True, text=True, cwd=REPO)  # fmt: skip
        assert result.returncode == 2
        assert str(path) in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(CheckpointError, match="does not exist"):
        load_task(tmp_path / "missing.ckpt")


@pytest.mark.slow
def test_compiled_fit_matches_eager_and_writes_the_same_checkpoint(tmp_path):
    """``--compile`` changes how the network runs, not what it computes or what the checkpoint holds."""
    base = [
        *tiny_fit_args(tmp_path), "--trainer.max_steps", "4", "--trainer.val_check_interval", "4",
        # Inductor draws its own dropout masks; without dropout both runs compute the same function.
        "--model.config.transformer.dropout", "0", "--model.config.transformer.attn_dropout", "0",
    ]  # fmt: skip
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run_cli(tmp_path, [*base, "--run-name", "eager"])
    assert not torch._dynamo.utils.counters["stats"]["unique_graphs"]
    run_cli(tmp_path, [*base, "--run-name", "compiled", "--compile"])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # dynamo really traced the network
    eager, compiled = (read_metrics(tmp_path / "runs" / name / "metrics.csv") for name in ("eager", "compiled"))
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-3)
    weights = {
        name: torch.load(tmp_path / "runs" / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for name in ("eager", "compiled")
    }
    assert weights["compiled"].keys() == weights["eager"].keys()  # no "_orig_mod." prefix


def _tiny_gpt():
    from anyformer.core import TransformerConfig
    from anyformer.text.gpt.gpt import GPT, GPTConfig

    return GPT(GPTConfig(vocab_size=11, transformer=TransformerConfig(dim=16, n_layers=1, n_heads=2, max_seq_len=8)))


def test_out_of_range_ids_name_the_vocabulary_and_the_range_seen():
    model = _tiny_gpt()
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 11\), got range \[0, 11\]"):
        model(torch.tensor([[0, 11]]))
    with pytest.raises(ValueError, match=r"got range \[-1, 3\]"):
        model(torch.tensor([[3, -1]]))


def test_forward_is_the_lm_head_over_forward_features_and_its_maps():
    from anyformer.core.attention import AttentionMaps

    model, ids, maps = _tiny_gpt().eval(), torch.tensor([[1, 4, 2, 9, 3]]), AttentionMaps()
    with torch.no_grad():
        features = model.forward_features(ids, maps=maps)
        assert features.shape == (1, 5, 16)
        torch.testing.assert_close(model(ids), model.forward_head(features))
    assert len(maps.self_attn) == 1 and maps.self_attn[0].shape == (1, 2, 5, 5)
    assert torch.equal(maps.self_attn[0].triu(1), torch.zeros(1, 2, 5, 5))  # causal


def test_the_network_and_its_training_module_live_in_their_own_files():
    """gpt.py holds GPTConfig + GPT, gpt_task.py the LightningModule the ``gpt`` task trains."""
    import pytorch_lightning as pl

    from anyformer.core.cli.tasks import TASKS, resolve
    from anyformer.text.gpt import gpt, gpt_task

    assert resolve(TASKS["gpt"].model) is gpt_task.GPTModule
    assert not any(isinstance(value, type) and issubclass(value, pl.LightningModule) for value in vars(gpt).values())
    state = _tiny_gpt().state_dict()  # the keys of existing checkpoints
    assert {name for name in state if not name.startswith("decoder.blocks.")} == {
        "token_embedding.weight", "decoder.positions.embedding.weight", "decoder.final_norm.weight",
        "decoder.final_norm.bias", "lm_head.weight",
    }  # fmt: skip
