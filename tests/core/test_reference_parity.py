"""Core stacks configured like GPT-2 and BERT reproduce Hugging Face transformers
(random init, weights copied across, nothing downloaded)."""

import pytest
import torch
from torch import nn

from anyformer.core import Decoder, Encoder, TransformerConfig, padding_mask

transformers = pytest.importorskip("transformers")

D, LAYERS, HEADS, VOCAB, CTX = 64, 2, 4, 101, 32


def _copy(dst: nn.Parameter, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


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
    _copy(decoder.positions.embedding.weight, hf.transformer.wpe.weight)
    for ours, theirs in zip(decoder.blocks, hf.transformer.h):
        ours.norm1.load_state_dict(theirs.ln_1.state_dict())
        ours.norm2.load_state_dict(theirs.ln_2.state_dict())
        # GPT-2's Conv1D stores (in, out): transpose into nn.Linear's (out, in).
        for linear, conv in [(ours.attn.qkv_proj, theirs.attn.c_attn), (ours.attn.out_proj, theirs.attn.c_proj),
                             (ours.mlp.fc1, theirs.mlp.c_fc), (ours.mlp.fc2, theirs.mlp.c_proj)]:  # fmt: skip
            _copy(linear.weight, conv.weight.T)
            _copy(linear.bias, conv.bias)
    decoder.final_norm.load_state_dict(hf.transformer.ln_f.state_dict())
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
    emb = hf.embeddings
    _copy(encoder.positions.embedding.weight, emb.position_embeddings.weight)
    encoder.input_norm.load_state_dict(emb.LayerNorm.state_dict())
    for ours, theirs in zip(encoder.blocks, hf.encoder.layer):
        att = theirs.attention
        _copy(ours.attn.qkv_proj.weight, torch.cat([att.self.query.weight, att.self.key.weight, att.self.value.weight]))
        _copy(ours.attn.qkv_proj.bias, torch.cat([att.self.query.bias, att.self.key.bias, att.self.value.bias]))
        ours.attn.out_proj.load_state_dict(att.output.dense.state_dict())
        ours.norm1.load_state_dict(att.output.LayerNorm.state_dict())
        ours.mlp.fc1.load_state_dict(theirs.intermediate.dense.state_dict())
        ours.mlp.fc2.load_state_dict(theirs.output.dense.state_dict())
        ours.norm2.load_state_dict(theirs.output.LayerNorm.state_dict())
    ids = torch.randint(0, VOCAB, (2, 20))
    segments = torch.cat([torch.zeros(2, 12, dtype=torch.long), torch.ones(2, 8, dtype=torch.long)], dim=1)
    keep = torch.ones(2, 20, dtype=torch.bool)
    keep[1, 14:] = False
    x = emb.word_embeddings(ids) + emb.token_type_embeddings(segments)
    ours_hidden = encoder(x, mask=padding_mask(keep))
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=segments, attention_mask=keep.long()).last_hidden_state
    torch.testing.assert_close(ours_hidden, expected, atol=1e-4, rtol=0)
