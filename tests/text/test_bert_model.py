"""BERT model: parity with Hugging Face's BertForPreTraining / BertForSequenceClassification
(random init, weights copied across with the product's mapping, ``anyformer.text.hf``; nothing
downloaded), padding invariance, weight tying."""

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn

from anyformer.core import TransformerConfig
from anyformer.core.train.base import param_groups
from anyformer.text.bert.bert import BertConfig, BertForClassification, BertForPretraining, BertModel
from anyformer.text.hf import bert_heads_from_hf, bert_state_from_hf

transformers = pytest.importorskip("transformers")

D, LAYERS, HEADS, VOCAB, CTX = 64, 2, 4, 101, 32


def _config(**overrides) -> BertConfig:
    settings = dict(
        dim=D, n_layers=LAYERS, n_heads=HEADS, max_seq_len=CTX, position="learned", activation="gelu",
        norm_position="post", input_norm=True, norm_eps=1e-12, dropout=0.0, attn_dropout=0.0,
    ) | overrides  # fmt: skip
    return BertConfig(
        vocab_size=VOCAB, num_classes=3, classifier_dropout=0.0, transformer=TransformerConfig(**settings)
    )


def _hf_config():
    return transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=4 * D, max_position_embeddings=CTX, hidden_act="gelu", type_vocab_size=2,
        hidden_dropout_prob=0, attention_probs_dropout_prob=0, layer_norm_eps=1e-12, num_labels=3,
    )  # fmt: skip


def _copy_bert(ours: nn.Module, hf) -> None:
    """Copy a Hugging Face ``BertFor*`` (encoder, pooler and heads) into our ``BertFor*``."""
    hf_state = hf.state_dict()
    state = {f"bert.{name}": value for name, value in bert_state_from_hf(hf_state, LAYERS).items()}
    state |= bert_heads_from_hf(hf_state)
    if isinstance(ours, BertForPretraining):
        state["mlm_head.token_embedding.weight"] = state["bert.token_embedding.weight"]  # tied
    ours.load_state_dict(state)


def _inputs():
    """Three pairs of 20 tokens (12 in segment A), the last two padded after 14 and 9 tokens."""
    batch, length = 3, 20
    ids = torch.randint(0, VOCAB, (batch, length))
    segments = torch.tensor([[0] * 12 + [1] * 8] * batch)
    keep = torch.ones(batch, length, dtype=torch.bool)
    keep[1, 14:] = False
    keep[2, 9:] = False
    return ids, segments, keep


def test_pretraining_heads_reproduce_hf_bert_for_pretraining():
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(_hf_config()).eval()
    ours = BertForPretraining(_config()).eval()
    _copy_bert(ours, hf)
    with torch.no_grad():
        ids, segments, keep = _inputs()
        expected = hf(input_ids=ids, token_type_ids=segments, attention_mask=keep.long())
        hidden = ours(ids, segments, keep)
        mlm, nsp = ours.mlm_head(hidden), ours.nsp_logits(hidden)
    real = keep  # HF's outputs at padded positions are as meaningless as ours
    torch.testing.assert_close(mlm[real], expected.prediction_logits[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(nsp, expected.seq_relationship_logits, atol=1e-4, rtol=0)


def test_classifier_reproduces_hf_bert_for_sequence_classification():
    torch.manual_seed(1)
    hf = transformers.BertForSequenceClassification(_hf_config()).eval()
    ours = BertForClassification(_config()).eval()
    _copy_bert(ours, hf)
    with torch.no_grad():
        ids, segments, keep = _inputs()
        expected = hf(input_ids=ids, token_type_ids=segments, attention_mask=keep.long()).logits
        torch.testing.assert_close(ours(ids, segments, keep), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_padding_is_never_attended(norm_position):
    torch.manual_seed(2)
    model = BertForClassification(_config(norm_position=norm_position, final_norm=norm_position == "pre")).eval()
    ids, segments = torch.randint(0, VOCAB, (2, 12)), torch.tensor([[0] * 6 + [1] * 6] * 2)
    keep = torch.ones(2, 12, dtype=torch.bool)
    extra = 7  # appended padding with arbitrary ids and segments
    padded_ids = torch.cat([ids, torch.randint(0, VOCAB, (2, extra))], 1)
    padded_segments = torch.cat([segments, torch.randint(0, 2, (2, extra))], 1)
    padded_keep = torch.cat([keep, torch.zeros(2, extra, dtype=torch.bool)], 1)
    with torch.no_grad():
        hidden = model.bert(ids, segments, keep)
        padded_hidden = model.bert(padded_ids, padded_segments, padded_keep)
        torch.testing.assert_close(padded_hidden[:, :12], hidden, atol=1e-5, rtol=0)
        torch.testing.assert_close(model(padded_ids, padded_segments, padded_keep), model(ids, segments, keep))
        # Sanity check of the check: attending to the padding would change the outputs.
        attended = model.bert(padded_ids, padded_segments, torch.ones_like(padded_keep))
    assert (attended[:, :12] - hidden).abs().max() > 1e-3


def test_mean_pooling_reads_the_real_tokens_only_and_reuses_the_pooler():
    torch.manual_seed(3)
    cfg = _config()
    cfg.classifier_pool = "mean"
    model = BertForClassification(cfg).eval()
    ids, segments, keep = _inputs()
    with torch.no_grad():
        hidden = model.bert(ids, segments, keep)
        mean = torch.stack([hidden[b, keep[b]].mean(0) for b in range(len(ids))])  # per sentence, by hand
        expected = model.classifier(torch.tanh(model.bert.pooler(mean)))
        torch.testing.assert_close(model(ids, segments, keep), expected)
        # Padding appended to the shortest sentence changes nothing.
        n = int(keep[2].sum())
        alone = model(ids[2:, :n], segments[2:, :n], keep[2:, :n])
        torch.testing.assert_close(alone, expected[2:], atol=1e-5, rtol=0)
        cls_model = BertForClassification(_config()).eval()
        cls_model.load_state_dict(model.state_dict())  # same weights, [CLS] read instead: other logits
        assert (cls_model(ids, segments, keep) - expected).abs().max() > 1e-4


def test_mlm_decoder_is_the_token_embedding_and_decays_once():
    model = BertForPretraining(_config())
    assert model.mlm_head.token_embedding.weight is model.bert.token_embedding.weight
    decay, no_decay = param_groups(model, weight_decay=0.1)
    params = decay["params"] + no_decay["params"]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))
    assert any(p is model.bert.token_embedding.weight for p in no_decay["params"])
    assert model.mlm_head.bias.shape == (VOCAB,)


def test_bert_defaults_are_post_norm_with_embedding_norm():
    cfg = BertConfig().transformer
    assert (cfg.norm_position, cfg.input_norm, cfg.position, cfg.activation, cfg.use_final_norm) == (
        "post", True, "learned", "gelu", False,
    )  # fmt: skip
    model = BertModel(BertConfig())
    assert isinstance(model.encoder.input_norm, nn.LayerNorm) and isinstance(model.encoder.final_norm, nn.Identity)


def test_cli_override_of_norm_position_alone_switches_the_final_norm():
    """BERT's default stack is post-norm; a config that only says ``norm_position: pre`` gets a final norm."""
    parser = ArgumentParser()
    parser.add_argument("--config", type=BertConfig, default=BertConfig())
    parsed = parser.parse_args(["--config.transformer.norm_position", "pre"])
    config = parser.instantiate_classes(parsed).config
    assert config.transformer.norm_position == "pre" and config.transformer.use_final_norm
    assert isinstance(BertModel(config).encoder.final_norm, nn.LayerNorm)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"n_segments": 0}, "n_segments"),
        ({"classifier_dropout": 1.0}, "dropout"),
        ({"classifier_pool": "max"}, "classifier_pool must be one of \\['cls', 'mean'\\]"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        BertConfig(**overrides)
    with pytest.raises(ValueError, match="position='none'"):
        BertConfig(transformer=TransformerConfig(position="none"))


def test_out_of_range_ids_and_shape_mismatches_are_clear_errors():
    model = BertModel(_config())
    ids, segments, keep = _inputs()
    with pytest.raises(ValueError, match="token ids"):
        model(ids + VOCAB, segments, keep)
    with pytest.raises(ValueError, match="segment ids"):
        model(ids, segments + 2, keep)
    with pytest.raises(ValueError, match="shape"):
        model(ids, segments[:, :5], keep)
