"""``anyformer attention`` on a tiny trained translation checkpoint: the figure is written, and the
attention it draws (encoder, decoder, cross) is that of the model's own forward over the source
and its greedy translation."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from anyformer.core.attention import AttentionMaps
from anyformer.core.cli.main import main as anyformer
from anyformer.core.train.checkpoint import load_task
from anyformer.text.figure import seq2seq_attention
from anyformer.text.seq2seq.data import BOS_TOKEN, EOS_TOKEN
from anyformer.text.seq2seq.seq2seq import translate_ids
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[2]
SOURCE = "the value of the attribute is returned"
TINY = [
    "--data.vocab_size", "300", "--data.batch_size", "16", "--data.max_source_len", "40",
    "--data.max_target_len", "40", "--model.val_bleu_sentences", "0",
    "--model.config.encoder.dim", "32", "--model.config.encoder.n_layers", "2",
    "--model.config.decoder.dim", "32", "--model.config.decoder.n_layers", "1",
    "--model.optim.lr", "3e-3", "--model.optim.warmup_steps", "5", "--trainer.max_steps", "20",
    "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]  # fmt: skip


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """20 optimizer steps of the demo config, shrunk (an encoder deeper than the decoder), no validation."""
    workdir = tmp_path_factory.mktemp("seq2seq_attention")
    run_cli(workdir, ["seq2seq", "fit", "--config", str(REPO / "experiments/text/seq2seq_demo.yaml"), *TINY])
    return workdir / "runs" / "seq2seq_demo" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("extra", [[SOURCE], [f"{SOURCE} ||| le valeur", "--layer", "1"], []])
def test_command_draws_a_png(ckpt, tmp_path, capsys, extra):
    out = tmp_path / "seq2seq.png"
    assert anyformer(["attention", "--ckpt", str(ckpt), "--out", str(out), *extra]) == 0
    assert capsys.readouterr().out.strip() == f"attention figure: {out}"
    with Image.open(out) as image:
        assert image.format == "PNG" and min(image.size) > 100
    assert list(tmp_path.iterdir()) == [out]


def test_the_figure_is_the_attention_of_the_models_forward_over_its_greedy_translation(ckpt):
    module = load_task(ckpt, tasks=("seq2seq",))
    model, src, tgt = module.model, module.src_tokenizer, module.tgt_tokenizer
    attention = seq2seq_attention(module, SOURCE)
    assert attention.translated
    source = torch.tensor([[*src.encode(SOURCE), src.token_id(EOS_TOKEN)]])  # (1, S)
    keep = torch.ones_like(source, dtype=torch.bool)
    bos_id, eos_id = tgt.token_id(BOS_TOKEN), tgt.token_id(EOS_TOKEN)
    # The greedy translation `anyformer translate` makes, cut to what the decoder's 40 positions hold with BOS.
    [translation] = translate_ids(model, source, keep, bos_id=bos_id, eos_id=eos_id, strategy="greedy")
    assert attention.target_ids == translation[:39]
    target_in = torch.tensor([[bos_id, *attention.target_ids]])  # (1, T): BOS + translation
    maps = AttentionMaps()
    with torch.no_grad():
        features = model.forward_features(source, target_in, source_keep=keep, maps=maps)
        torch.testing.assert_close(model(source, target_in, source_keep=keep), model.forward_head(features))
    assert (len(maps.self_attn), len(maps.cross_attn)) == (2 + 1, 1)  # the encoder's 2 layers, then the decoder's
    S, T = source.shape[1], target_in.shape[1]
    assert attention.encoder.probs.shape == (4, S, S) and attention.cross.probs.shape == (4, T, S)
    torch.testing.assert_close(attention.encoder.probs, maps.self_attn[1][0], rtol=0, atol=0)
    torch.testing.assert_close(attention.decoder.probs, maps.self_attn[2][0], rtol=0, atol=0)
    torch.testing.assert_close(attention.cross.probs, maps.cross_attn[0][0], rtol=0, atol=0)
    first = seq2seq_attention(module, SOURCE, layer=1)
    torch.testing.assert_close(first.encoder.probs, maps.self_attn[0][0], rtol=0, atol=0)
    torch.testing.assert_close(first.decoder.probs, attention.decoder.probs, rtol=0, atol=0)  # the decoder's only
    assert attention.encoder.labels == [src.decode([i]) for i in source[0].tolist()]
    assert attention.cross.labels == attention.decoder.labels == [tgt.decode([i]) for i in target_in[0].tolist()]
