"""The GRU encoder-decoder: a hand-written reference, padding invariance, state as a decoding
cache (teacher forcing == steps, beam reorder), and the task end to end through the CLI."""

import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from anyformer.core.cli.main import main as cli_main
from anyformer.core.config import TransformerConfig
from anyformer.core.decoding import GenerationConfig, beam_search
from anyformer.core.train.checkpoint import load_task
from anyformer.text.baselines.gru_seq2seq import ATTENTIONS, GRUSeq2Seq, GRUSeq2SeqConfig, GRUSeq2SeqModule
from anyformer.text.seq2seq.data import IGNORE_INDEX, pad_ids
from anyformer.text.seq2seq.seq2seq import Seq2Seq, Seq2SeqConfig, bind_memory, translate_ids
from tests.helpers import data_path, run_cli
from tests.text.test_seq2seq_e2e import check_the_translate_tool, checked_val_losses, fit_and_test
from tests.text.test_seq2seq_model import BOS, EOS, PAD, VOCAB, _batch, _sharpen, train_on_reversal

REPO = Path(__file__).resolve().parents[2]


def _config(attention="general", layers=2, **fields):
    return GRUSeq2SeqConfig(VOCAB, VOCAB, True, emb_dim=16, hidden_dim=24, encoder_layers=layers,
                            decoder_layers=layers, attention=attention, max_target_len=24, **fields)  # fmt: skip


@pytest.fixture(scope="module")
def model():
    """80 Adam steps on reversing random id sequences: translations depend on the source, end
    with EOS, and beam search finds other sequences than greedy."""
    torch.manual_seed(0)
    model = GRUSeq2Seq(_config(layers=1))
    return train_on_reversal(model, steps=80, lr=1e-2)


def _reference_logits(model: GRUSeq2Seq, source: list[int], target: list[int]) -> torch.Tensor:
    """Luong's equations for one unpadded sentence, written out with GRUCells (1+1 layers)."""
    enc, dec, H = model.encoder, model.decoder, model.cfg.hidden_dim

    def cell(gru, suffix, size):
        c = torch.nn.GRUCell(gru.input_size, size)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(c, name).data.copy_(getattr(gru, f"{name}_l0{suffix}"))
        return c

    fwd, bwd, step = cell(enc, "", H // 2), cell(enc, "_reverse", H // 2), cell(dec, "", H)
    x = model.src_embedding(torch.tensor(source))  # (S, E)
    h, forward_states = torch.zeros(H // 2), []
    for x_s in x:
        h = fwd(x_s[None], h[None])[0]
        forward_states.append(h)
    h, backward_states = torch.zeros(H // 2), []
    for x_s in x.flip(0):
        h = bwd(x_s[None], h[None])[0]
        backward_states.append(h)
    memory = torch.cat([torch.stack(forward_states), torch.stack(backward_states[::-1])], dim=-1)  # (S, H)
    h = torch.tanh(model.bridge(memory.mean(0)))  # Nematus: the initial state reads the mean annotation
    feed, logits = torch.zeros(model.cfg.emb_dim), []
    for y in model.tgt_embedding(torch.tensor(target)):
        h = step(torch.cat([y, feed])[None], h[None])[0]
        if model.cfg.attention == "additive":
            scores = torch.stack([model.score.v(torch.tanh(model.score.query_proj(h) + model.score.key_proj(m)))[0]
                                  for m in memory])  # fmt: skip
        elif model.cfg.attention == "general":
            scores = torch.stack([h @ model.score.proj(m) for m in memory])
        else:
            scores = memory @ h
        context = (scores.softmax(0)[:, None] * memory).sum(0)
        feed = torch.tanh(model.combine(torch.cat([context, h])))
        logits.append(feed @ model.tgt_embedding.weight.T)  # the tied output layer
    return torch.stack(logits)  # (T, V)


@pytest.mark.parametrize("attention", sorted(ATTENTIONS))
def test_logits_match_a_hand_written_reference(attention):
    model = _sharpen(GRUSeq2Seq(_config(attention, layers=1)), std=0.2)
    source, target = [9, 14, 22, 7, EOS], [BOS, 12, 30, 8, 17]
    with torch.no_grad():
        got = model(torch.tensor([source]), torch.tensor([target]))[0]
        torch.testing.assert_close(got, _reference_logits(model, source, target), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", sorted(ATTENTIONS))
def test_source_padding_does_not_change_memory_or_decoder_outputs(attention):
    model = _sharpen(GRUSeq2Seq(_config(attention)))
    source = torch.tensor([[9, 14, 22, 7, EOS]])
    keep = torch.ones_like(source, dtype=torch.bool)
    target = torch.tensor([[BOS, 12, 30, 8, 17]])
    with torch.no_grad():
        alone = model(source, target, source_keep=keep)[0]  # (T, V)
        padded, padded_keep = pad_ids([[30, 8, 11, 9, 6, 12, 19, 17, EOS], source[0].tolist()], PAD)
        wide = torch.cat([padded, torch.full((2, 6), PAD)], dim=1)  # extra all-padding columns
        wide_keep = torch.cat([padded_keep, torch.zeros((2, 6), dtype=torch.bool)], dim=1)
        other_pad = wide.masked_fill(~wide_keep, 33)  # the padding id itself is irrelevant
        for ids, mask in [(padded, padded_keep), (wide, wide_keep), (other_pad, wide_keep)]:
            torch.testing.assert_close(model.encode(ids, mask)[1, :5], model.encode(source, keep)[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(model(ids, target.expand(2, -1), source_keep=mask)[1], alone, atol=1e-5, rtol=0)
        # Sensitive: attending to (and averaging over) the padded memory positions changes the logits.
        unmasked = model.decode(target.expand(2, -1), model.encode(wide, wide_keep), None)[1]
        assert (unmasked - alone).abs().max() > 1e-2


def test_translation_ignores_source_padding(model):
    source = torch.tensor([[9, 14, 22, 7, EOS]])
    keep = torch.ones_like(source, dtype=torch.bool)
    padded, padded_keep = pad_ids([[30, 8, 11, 9, 6, 12, 19, 17, EOS], source[0].tolist()], PAD)
    for strategy in ("greedy", "beam"):
        kwargs = dict(bos_id=BOS, eos_id=EOS, strategy=strategy, beams=3)
        alone = translate_ids(model, source, keep, **kwargs)[0]
        assert translate_ids(model, padded, padded_keep, **kwargs)[1] == alone
    assert alone == [7, 22, 14, 9]  # it learned to reverse this one


def test_teacher_forced_loss_equals_step_by_step_loss_with_the_recurrent_state():
    torch.manual_seed(0)
    module = GRUSeq2SeqModule(_config(), label_smoothing=0.1)
    _sharpen(module.model)
    module.eval()
    batch = _batch()
    loss = module.loss(batch, label_smoothing=0.0)
    model = module.model
    with torch.no_grad():
        memory = model.encode(batch["source"], batch["source_keep"])
        cache = model.init_decoder_cache(3)
        target_in, keep = batch["target_in"], batch["source_keep"][:, None, None, :]  # the BoundDecoder mask
        steps = [model.decode(target_in[:, :3], memory, keep, cache=cache)]  # a multi-token first call, then steps
        steps += [
            model.decode(target_in[:, t : t + 1], memory, keep, cache=cache) for t in range(3, target_in.shape[1])
        ]
        assert cache.length == target_in.shape[1]
    stepwise = F.cross_entropy(torch.cat(steps, 1).flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
    assert abs(loss.item() - stepwise.item()) < 1e-5
    assert loss.item() > 1.0  # sharpened weights: far from a degenerate prediction
    assert abs(module.loss(batch, label_smoothing=0.1).item() - loss.item()) > 1e-3


def test_one_beam_equals_greedy_and_wider_beams_differ(model):
    batch = _batch()
    kwargs = dict(bos_id=BOS, eos_id=EOS, max_new_tokens=15)
    greedy = translate_ids(model, batch["source"], batch["source_keep"], **kwargs)
    assert translate_ids(model, batch["source"], batch["source_keep"], strategy="beam", beams=1, **kwargs) == greedy
    assert len({tuple(row) for row in greedy}) == 3 and all(0 < len(row) < 15 for row in greedy)  # varied, ended


def test_beam_log_probs_match_the_uncached_model(model):
    """Every hypothesis of a batched beam search scores what the full forward says: the
    recurrent state (hidden, fed-back vector, projected memory) followed each beam's reordering."""
    batch = _batch()
    cfg = GenerationConfig("beam", beams=4, max_new_tokens=10, eos_id=EOS, length_penalty=0.0)
    results = beam_search(
        bind_memory(model, batch["source"], batch["source_keep"], beams=4), torch.full((3, 1), BOS), cfg
    )
    parents_differ = False
    for row, hyps in enumerate(results):
        n = int(batch["source_keep"][row].sum())
        source = batch["source"][row : row + 1, :n]
        assert len(hyps) == 4
        for hyp in hyps:
            ids = torch.tensor([[BOS, *hyp.tokens]])
            log_probs = model(source, ids[:, :-1]).log_softmax(-1)[0]  # (T, V)
            assert hyp.log_prob == pytest.approx(log_probs.gather(-1, ids[0, 1:, None]).sum().item(), abs=1e-4)
        parents_differ |= len({tuple(h.tokens[:2]) for h in hyps}) > 1
    assert parents_differ  # hypotheses branched early, so later steps needed reordered states


def test_config_errors_name_the_field():
    for fields, message in [
        ({"attention": "cosine"}, r"attention='cosine' is not one of \['dot', 'general', 'additive'\]"),
        ({"hidden_dim": 25}, r"hidden_dim must be even"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"decoder_layers": 0}, r"decoder_layers must be >= 1"),
        ({"tgt_vocab_size": 40}, r"shared_vocab=True needs src_vocab_size == tgt_vocab_size"),
    ]:
        with pytest.raises(ValueError, match=rf"GRUSeq2SeqConfig\.{message}"):
            GRUSeq2SeqConfig(**({"src_vocab_size": VOCAB, "tgt_vocab_size": VOCAB} | fields))
    with pytest.raises(ValueError, match="source_keep must mark a prefix"):
        GRUSeq2Seq(_config()).encode(torch.tensor([[7, 8, EOS]]), torch.tensor([[True, False, True]]))


def test_embeddings_are_tied_with_the_output_layer():
    shared = GRUSeq2Seq(_config())
    assert shared.src_embedding.weight is shared.tgt_embedding.weight is shared.lm_head.weight
    separate = GRUSeq2Seq(GRUSeq2SeqConfig(VOCAB, VOCAB + 4, False, emb_dim=16, hidden_dim=32))
    assert separate.tgt_embedding.weight is separate.lm_head.weight is not separate.src_embedding.weight
    assert separate.lm_head.weight.shape == (VOCAB + 4, 16)  # the attentional vector is emb_dim wide


def _model_config(name: str) -> dict:
    return yaml.safe_load((REPO / "experiments/text" / name).read_text())["model"]["config"]


def test_multi30k_config_matches_the_transformer_parameter_count():
    vocab = 8000  # the configs' shared BPE vocabulary
    stacks = {k: TransformerConfig(**_model_config("seq2seq_multi30k.yaml")[k], max_seq_len=64)
              for k in ("encoder", "decoder")}  # fmt: skip
    transformer = Seq2Seq(Seq2SeqConfig(vocab, vocab, True, **stacks))
    gru = GRUSeq2Seq(GRUSeq2SeqConfig(vocab, vocab, True, **_model_config("gru_multi30k.yaml")))
    assert gru.num_parameters() == pytest.approx(transformer.num_parameters(), rel=0.01)


DEMO = REPO / "experiments/text/gru_seq2seq_demo.yaml"
TINY = ["--model.config.emb_dim", "32", "--model.config.hidden_dim", "32"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """30 optimizer steps of the demo config (shrunk), validated twice, then `test` on its checkpoint."""
    return fit_and_test(tmp_path_factory.mktemp("gru_seq2seq"), "gru-seq2seq", DEMO, TINY)


def test_fit_and_test_log_the_seq2seq_metrics(run):
    val_loss = checked_val_losses(run)
    assert val_loss[-1] < val_loss[0] < math.log(400)  # improving, below a uniform guess


def test_checkpoint_alone_translates_through_the_translate_tool(run, tmp_path, capsys):
    ckpt = run / "checkpoints" / "last.ckpt"
    module = load_task(ckpt, tasks=("gru-seq2seq",))
    assert isinstance(module, GRUSeq2SeqModule) and module.src_tokenizer is module.tgt_tokenizer
    check_the_translate_tool(ckpt, module, tmp_path, capsys)


def test_multi30k_config_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["gru-seq2seq", "fit", "--config", str(REPO / "experiments/text/gru_multi30k.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "hidden_dim: 480" in printed and "label_smoothing: 0.1" in printed and "test_beams: 4" in printed


def test_multi30k_config_runs_one_step(tmp_path, caplog):
    """fast_dev_run of the real config with Multi30k given as a plain folder of {split}.{lang} files
    (not the named source): BPE on 58k sentences, one train and one val batch (small)."""
    multi30k = data_path("multi30k/train.de").parent
    args = ["gru-seq2seq", "fit", "--config", str(REPO / "experiments/text/gru_multi30k.yaml"),
            "--data.source", str(multi30k), "--data.max_tokens", "256", "--model.val_bleu_sentences", "4",
            "--trainer.fast_dev_run", "true", "--trainer.enable_progress_bar", "false"]  # fmt: skip
    with caplog.at_level(logging.INFO):
        run_cli(tmp_path, args)
    assert "train split train: 29000 pairs" in caplog.text and "cropped" not in caplog.text
