"""Core stacks configured like GPT-2 and BERT reproduce Hugging Face transformers
(random init, weights copied across with the product's mapping, ``anyformer.text.hf``; nothing
downloaded)."""

import pytest
import torch

from anyformer.core import Decoder, Encoder, TransformerConfig, padding_mask
from anyformer.text.hf import bert_state_from_hf, gpt_state_from_hf

transformers = pytest.importorskip("transformers")

D, LAYERS, HEADS, VOCAB, CTX = 64, 2, 4, 101, 32


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of one submodule (``decoder.``, ``encoder.``), without the prefix."""
    return {name.removeprefix(prefix): value for name, value in state.items() if name.startswith(prefix)}


def test_decoder_reproduces_gpt2_logits():
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=CTX, n_embd=D, n_layer=LAYERS, n_head=HEADS,
        activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, layer_norm_epsilon=1e-5,
    )  # fmt: skip
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    cfg = TransformerConfig(
        dim=D, n_layers=LAYERS, n_heads=HEADS, max_seq_len=CTX, position="learned",
        activation="gelu_tanh", norm_position="pre", norm_eps=1e-5,
    )  # fmt: skip
    decoder = Decoder(cfg).eval()
    decoder.load_state_dict(_part(gpt_state_from_hf(hf.state_dict(), LAYERS), "decoder."))
    wte = hf.transformer.wte.weight
    ids = torch.randint(0, VOCAB, (3, CTX))
    ours_logits = decoder(wte[ids]) @ wte.T
    with torch.no_grad():
        expected = hf(ids).logits
    torch.testing.assert_close(ours_logits, expected, atol=1e-4, rtol=0)


def test_encoder_reproduces_bert_hidden_states():
    torch.manual_seed(0)
    hf_cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=4 * D, max_position_embeddings=CTX, hidden_act="gelu",
        hidden_dropout_prob=0, attention_probs_dropout_prob=0, layer_norm_eps=1e-12,
    )  # fmt: skip
    hf = transformers.BertModel(hf_cfg, add_pooling_layer=False).eval()
    cfg = TransformerConfig(
        dim=D, n_layers=LAYERS, n_heads=HEADS, max_seq_len=CTX, position="learned", activation="gelu",
        norm_position="post", input_norm=True, norm_eps=1e-12,
    )  # fmt: skip
    encoder = Encoder(cfg).eval()
    encoder.load_state_dict(_part(bert_state_from_hf(hf.state_dict(), LAYERS, pooler=False), "encoder."))
    emb = hf.embeddings
    ids = torch.randint(0, VOCAB, (2, 20))
    segments = torch.cat([torch.zeros(2, 12, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)], dim=1)
    keep = torch.ones(2, 20, dtype=torch.bool)
    keep[1, 14:] = False
    x = emb.word_embeddings(ids) + emb.token_type_embeddings(segments)
    ours_hidden = encoder(x, mask=padding_mask(keep))
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=segments, attention_mask=keep.long()).last_hidden_state
    torch.testing.assert_close(ours_hidden, expected, atol=1e-4, rtol=0)
