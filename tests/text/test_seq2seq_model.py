"""Seq2Seq model and decoding: teacher forcing vs cached steps, beam vs greedy, padding invariance."""

import logging

import pytest
import torch
import torch.nn.functional as F

from anyformer.core.attention import AttentionMaps
from anyformer.core.config import TransformerConfig
from anyformer.core.decoding import GenerationConfig, beam_search
from anyformer.core.masks import padding_mask
from anyformer.text.seq2seq.data import IGNORE_INDEX, Collate, pad_ids
from anyformer.text.seq2seq.seq2seq import Seq2Seq, Seq2SeqConfig, bind_memory, translate_ids
from anyformer.text.seq2seq.seq2seq_task import Seq2SeqModule
from anyformer.text.tokenizer import CharTokenizer

BOS, EOS, PAD = 5, 0, 1
VOCAB = 37


def train_on_reversal(model, steps: int, lr: float):
    """``steps`` Adam steps of a translator (ids in, logits out) on reversing random id sequences."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g, collate = torch.Generator().manual_seed(0), Collate(PAD, BOS, EOS, PAD)
    for _ in range(steps):
        items = []
        for _ in range(32):
            ids = torch.randint(6, VOCAB, (int(torch.randint(2, 9, (), generator=g)),), generator=g).tolist()
            items.append({"source": [*ids, EOS], "target": ids[::-1], "reference": ""})
        batch = collate(items)
        logits = model(batch["source"], batch["target_in"], source_keep=batch["source_keep"])
        loss = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _config(shared=True, **stack):
    settings = dict(dim=32, n_layers=2, n_heads=4, max_seq_len=24, position="learned") | stack
    return Seq2SeqConfig(VOCAB, VOCAB if shared else VOCAB + 4, shared, TransformerConfig(**settings),
                         TransformerConfig(**settings))  # fmt: skip


def _sharpen(model, std=0.2):
    """Random weights well away from init, so logits are O(1) and every path is exercised."""
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, std)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    """60 Adam steps on reversing random id sequences: outputs depend on the source, end with EOS,
    and beam search finds other sequences than greedy (a fresh random model repeats one token)."""
    torch.manual_seed(0)
    model = Seq2Seq(_config())
    return train_on_reversal(model, steps=60, lr=3e-3)


def _batch():
    """Three pairs of different lengths, right-padded by the data module's collate."""
    g = torch.Generator().manual_seed(3)
    items = []
    for s_len, t_len in [(7, 9), (3, 4), (11, 6)]:
        source = [*torch.randint(6, VOCAB, (s_len - 1,), generator=g).tolist(), EOS]
        target = torch.randint(6, VOCAB, (t_len,), generator=g).tolist()
        items.append({"source": source, "target": target, "reference": ""})
    return Collate(PAD, BOS, EOS, PAD)(items)


def test_teacher_forced_loss_equals_step_by_step_loss_with_kv_cache():
    torch.manual_seed(0)
    module = Seq2SeqModule(_config(), label_smoothing=0.1)
    _sharpen(module.model)
    module.eval()
    batch = _batch()
    loss = module.loss(batch, label_smoothing=0.0)  # the training loss, unsmoothed
    model = module.model
    with torch.no_grad():
        memory = model.encode(batch["source"], batch["source_keep"])
        cache = model.core.decoder.init_cache(memory.shape[0])
        steps = [
            model.decode(batch["target_in"][:, t : t + 1], memory, padding_mask(batch["source_keep"]), cache=cache)
            for t in range(batch["target_in"].shape[1])
        ]
    logits = torch.cat(steps, dim=1)  # (B, T, V), one token at a time through the cache
    stepwise = F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
    assert abs(loss.item() - stepwise.item()) < 1e-5
    assert loss.item() > 1.0  # sharpened weights: far from a degenerate all-equal prediction
    # Smoothing changes the objective, so the check above really compared the unsmoothed loss.
    assert abs(module.loss(batch, label_smoothing=0.1).item() - loss.item()) > 1e-3


def test_labels_are_the_decoder_input_shifted_by_one():
    batch = _batch()
    for row in range(3):
        real = batch["labels"][row] != IGNORE_INDEX
        n = int(real.sum())
        assert batch["target_in"][row, 0] == BOS and batch["labels"][row, n - 1] == EOS
        torch.testing.assert_close(batch["target_in"][row, 1:n], batch["labels"][row, : n - 1])
        assert (batch["target_in"][row, n:] == PAD).all() and (batch["labels"][row, n:] == IGNORE_INDEX).all()


def _greedy_without_cache(model, source, keep, n):
    ids = torch.tensor([[BOS]])
    for _ in range(n):
        next_id = model(source, ids, source_keep=keep)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
        if next_id.item() == EOS:
            break
    out = ids[0, 1:].tolist()
    return out[: out.index(EOS)] if EOS in out else out


def test_cached_greedy_equals_full_recompute(model):
    batch = _batch()
    got = translate_ids(model, batch["source"], batch["source_keep"], bos_id=BOS, eos_id=EOS, max_new_tokens=15)
    for row in range(3):
        n = int(batch["source_keep"][row].sum())
        source, keep = batch["source"][row : row + 1, :n], batch["source_keep"][row : row + 1, :n]
        assert got[row] == _greedy_without_cache(model, source, keep, 15)
    assert len({tuple(row) for row in got}) == 3 and all(0 < len(row) < 15 for row in got)  # varied, ended by EOS


def test_one_beam_equals_greedy(model):
    batch = _batch()
    kwargs = dict(bos_id=BOS, eos_id=EOS, max_new_tokens=15)
    greedy = translate_ids(model, batch["source"], batch["source_keep"], **kwargs)
    beam1 = translate_ids(model, batch["source"], batch["source_keep"], strategy="beam", beams=1, **kwargs)
    assert beam1 == greedy


def test_batched_beam_search_equals_one_sentence_at_a_time(model):
    """The memory is expanded per beam in beam_search's layout (row-major, beams adjacent)."""
    batch = _batch()
    kwargs = dict(bos_id=BOS, eos_id=EOS, strategy="beam", beams=3, max_new_tokens=12)
    together = translate_ids(model, batch["source"], batch["source_keep"], **kwargs)
    for row in range(3):
        n = int(batch["source_keep"][row].sum())
        alone = translate_ids(model, batch["source"][row : row + 1, :n], batch["source_keep"][row : row + 1, :n],
                              **kwargs)  # fmt: skip
        assert together[row] == alone[0]
    assert together != translate_ids(model, batch["source"], batch["source_keep"], bos_id=BOS, eos_id=EOS,
                                     max_new_tokens=12)  # fmt: skip


def test_beam_log_probs_match_the_uncached_model(model):
    """Every hypothesis of a batched beam search scores exactly what the full forward says:
    the cross-attention cache followed each beam's reordering."""
    batch = _batch()
    cfg = GenerationConfig("beam", beams=4, max_new_tokens=10, eos_id=EOS, length_penalty=0.0)
    bound = bind_memory(model, batch["source"], batch["source_keep"], beams=4)
    results = beam_search(bound, torch.full((3, 1), BOS), cfg)
    for row, hyps in enumerate(results):
        n = int(batch["source_keep"][row].sum())
        source, keep = batch["source"][row : row + 1, :n], batch["source_keep"][row : row + 1, :n]
        assert len(hyps) == 4
        for hyp in hyps:
            ids = torch.tensor([[BOS, *hyp.tokens]])
            log_probs = model(source, ids[:, :-1], source_keep=keep).log_softmax(-1)[0]  # (T, V)
            total = log_probs.gather(-1, ids[0, 1:, None]).sum().item()
            assert hyp.log_prob == pytest.approx(total, abs=1e-4)


def test_source_padding_does_not_change_memory_logits_or_translation(model):
    source = torch.tensor([[9, 14, 22, 7, EOS]])
    keep = torch.ones_like(source, dtype=torch.bool)
    target = torch.tensor([[BOS, 12, 30, 8, 17]])
    alone_logits = model(source, target, source_keep=keep)[0]  # (T, V)
    alone = translate_ids(model, source, keep, bos_id=BOS, eos_id=EOS, max_new_tokens=15)
    padded, padded_keep = pad_ids([[30, 8, 11, 9, 6, 12, 19, 17, EOS], source[0].tolist()], PAD)
    wide = torch.cat([padded, torch.full((2, 6), PAD)], dim=1)  # extra all-padding columns
    wide_keep = torch.cat([padded_keep, torch.zeros((2, 6), dtype=torch.bool)], dim=1)
    other_pad = wide.masked_fill(~wide_keep, 33)  # the padding id itself is irrelevant once masked
    for ids, mask in [(padded, padded_keep), (wide, wide_keep), (other_pad, wide_keep)]:
        torch.testing.assert_close(model.encode(ids, mask)[1, :5], model.encode(source, keep)[0], atol=1e-5, rtol=0)
        logits = model(ids, target.expand(2, -1), source_keep=mask)[1]
        torch.testing.assert_close(logits, alone_logits, atol=1e-5, rtol=0)
        assert translate_ids(model, ids, mask, bos_id=BOS, eos_id=EOS, max_new_tokens=15)[1] == alone[0]
    # The check is sensitive: attending to the padded memory positions would change the logits.
    memory = model.encode(wide, wide_keep)
    unmasked = model.decode(target.expand(2, -1), memory, None)[1]
    assert (unmasked - alone_logits).abs().max() > 1e-2


def test_forward_features_collect_encoder_decoder_and_cross_maps_of_the_forward(model):
    """``forward`` is the head over ``forward_features``; its maps: encoder layers, then decoder layers."""
    batch = _batch()
    source, target, keep = batch["source"], batch["target_in"], batch["source_keep"]
    maps = AttentionMaps()
    with torch.no_grad():
        features = model.forward_features(source, target, source_keep=keep, maps=maps)
        torch.testing.assert_close(model(source, target, source_keep=keep), model.forward_head(features))
        memory = model.encode(source, keep)
        torch.testing.assert_close(model.decode(target, memory, padding_mask(keep)), model.forward_head(features))
    (b, s), t = source.shape, target.shape[1]
    assert [m.shape for m in maps.self_attn] == [(b, 4, s, s)] * 2 + [(b, 4, t, t)] * 2
    assert [m.shape for m in maps.cross_attn] == [(b, 4, t, s)] * 2
    for probs in (*maps.self_attn[:2], *maps.cross_attn):  # no query looks at source padding
        assert torch.equal(probs.masked_fill(keep[:, None, None, :], 0.0), torch.zeros_like(probs))
    for probs in maps.self_attn[2:]:
        assert torch.equal(probs.triu(1), torch.zeros_like(probs))  # the decoder is causal


def test_bound_decoder_satisfies_the_decoding_protocol(model):
    source, keep = pad_ids([[9, 14, EOS], [7, EOS]], PAD)
    bound = bind_memory(model, source, keep, beams=3)
    assert bound.memory.shape[0] == 6 and bound.max_seq_len == 24
    cache = bound.init_cache(6)
    assert bound(torch.full((6, 1), BOS), cache=cache).shape == (6, 1, VOCAB)
    with pytest.raises(ValueError, match="6 memories are bound"):
        bound.init_cache(4)


def test_max_new_tokens_never_exceeds_the_decoder_window(model):
    source, keep = pad_ids([[9, 14, 22, EOS]], PAD)
    out = translate_ids(model, source, keep, bos_id=BOS, eos_id=VOCAB - 1, max_new_tokens=500)
    assert len(out[0]) <= 24


def test_shared_vocab_ties_all_three_matrices_and_separate_vocab_does_not():
    shared = Seq2Seq(_config(shared=True))
    assert shared.src_embedding.weight is shared.tgt_embedding.weight is shared.lm_head.weight
    separate = Seq2Seq(_config(shared=False))
    assert separate.tgt_embedding.weight is separate.lm_head.weight
    assert separate.src_embedding.weight.shape[0] == VOCAB and separate.lm_head.weight.shape[0] == VOCAB + 4


def test_config_errors_name_the_field():
    stack = TransformerConfig(dim=32, n_heads=4)
    with pytest.raises(ValueError, match="shared_vocab"):
        Seq2SeqConfig(10, 12, True, stack, stack)
    with pytest.raises(ValueError, match=r"encoder\.dim=32 and decoder\.dim=64"):
        Seq2SeqConfig(10, 10, True, stack, TransformerConfig(dim=64, n_heads=4))


def test_too_long_source_is_a_clear_error_for_the_model(model):
    with pytest.raises(ValueError, match=r"max_seq_len is 24; crop it"):
        model.encode(torch.full((1, 30), 7))


def test_translate_crops_a_too_long_sentence_with_a_warning(caplog):
    torch.manual_seed(0)
    tokenizer = CharTokenizer("abcdefghijklmnopqrstuvwxyz ")
    stack = TransformerConfig(dim=32, n_layers=1, n_heads=4, max_seq_len=24)
    config = Seq2SeqConfig(tokenizer.vocab_size, tokenizer.vocab_size, True, stack, stack)
    module = Seq2SeqModule(config).eval()
    module.src_tokenizer = module.tgt_tokenizer = tokenizer
    with caplog.at_level(logging.WARNING):
        out = module.translate(["short one", "a" * 100], strategy="beam", beams=2)
    assert len(out) == 2 and all(isinstance(text, str) for text in out)
    assert "sentence 2 is longer than the model's source window of 24 tokens" in caplog.text
    assert "sentence 1" not in caplog.text
