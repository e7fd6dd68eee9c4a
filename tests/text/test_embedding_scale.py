"""``scale_embeddings``: the original Transformer's token-embedding scale (Vaswani et al. 2017, 3.4),
which sinusoidal positions need; checked against the formula for GPT and the translation model."""

from __future__ import annotations

import math

import pytest
import torch

from anyformer.core.config import TransformerConfig
from anyformer.core.positions import sinusoidal_table
from anyformer.text.gpt.gpt import GPT, GPTConfig
from anyformer.text.seq2seq.seq2seq import Seq2Seq, Seq2SeqConfig

DIM = 64


def _gpt(scale: bool, position: str = "sinusoidal") -> GPT:
    torch.manual_seed(0)
    stack = TransformerConfig(dim=DIM, n_layers=2, n_heads=4, max_seq_len=32, position=position)
    return GPT(GPTConfig(vocab_size=1000, transformer=stack, scale_embeddings=scale)).eval()


def test_scaled_token_vectors_have_the_size_of_sinusoidal_positions() -> None:
    rms = lambda x: x.pow(2).mean().sqrt().item()  # noqa: E731
    positions = rms(sinusoidal_table(torch.arange(32), DIM))  # sines and cosines: 1/sqrt(2)
    scaled, plain = _gpt(True), _gpt(False)
    scaled_tokens = rms(scaled.token_embedding.weight * scaled.embedding_scale)
    plain_tokens = rms(plain.token_embedding.weight)
    assert positions == pytest.approx(math.sqrt(0.5), rel=1e-3)
    assert scaled_tokens == pytest.approx(1.0, rel=0.05)  # Normal(0, 1/dim) times sqrt(dim)
    assert plain_tokens == pytest.approx(0.02, rel=0.05)  # GPT-2: positions would be ~35x larger


def test_gpt_reads_token_embeddings_times_sqrt_dim() -> None:
    model = _gpt(True)
    ids = torch.randint(0, 1000, (2, 10))
    hidden = model.decoder(model.token_embedding(ids) * math.sqrt(DIM))
    torch.testing.assert_close(model.forward_features(ids), hidden)  # what attention figures read, too
    torch.testing.assert_close(model(ids), model.lm_head(hidden))
    assert model.lm_head.weight is model.token_embedding.weight  # still tied


def test_scaled_gpt_decodes_with_the_cache_as_it_runs_in_full() -> None:
    model = _gpt(True)
    ids = torch.randint(0, 1000, (1, 12))
    cache = model.init_cache(1)
    steps = torch.cat(
        [model(ids[:, :5], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(5, 12)], 1
    )
    torch.testing.assert_close(steps, model(ids), atol=1e-5, rtol=1e-5)


def test_seq2seq_scales_both_sides_and_initializes_a_shared_matrix_once() -> None:
    torch.manual_seed(0)
    stack = TransformerConfig(dim=DIM, n_layers=1, n_heads=4, max_seq_len=16, position="sinusoidal")
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=500, tgt_vocab_size=500, encoder=stack, decoder=stack,
                                  scale_embeddings=True)).eval()  # fmt: skip
    assert model.src_embedding is model.tgt_embedding and model.embedding_scale == math.sqrt(DIM)
    assert model.src_embedding.weight.std().item() == pytest.approx(DIM**-0.5, rel=0.05)
    source, target = torch.randint(0, 500, (2, 7)), torch.randint(0, 500, (2, 5))
    memory = model.core.encoder(model.src_embedding(source) * math.sqrt(DIM))
    hidden = model.core.decoder(model.tgt_embedding(target) * math.sqrt(DIM), memory=memory)
    torch.testing.assert_close(model.forward_features(source, target), hidden)
    torch.testing.assert_close(model(source, target), model.lm_head(hidden))
