import pytest
import torch
from torch import nn

from anyformer.core import Decoder, TransformerConfig


class TinyLM(nn.Module):
    """The smallest causal model anyformer.core.decoding accepts: embedding -> Decoder -> tied head."""

    def __init__(self, vocab_size: int = 23, **overrides) -> None:
        super().__init__()
        settings = dict(dim=32, n_layers=2, n_heads=4, max_seq_len=48, position="learned") | overrides
        self.cfg = TransformerConfig(**settings)
        self.embedding = nn.Embedding(vocab_size, self.cfg.dim)
        self.decoder = Decoder(self.cfg)
        self.max_seq_len = self.cfg.max_seq_len

    def init_cache(self, batch_size, max_len=None):
        return self.decoder.init_cache(batch_size, max_len)

    def forward(self, ids, *, cache=None, mask=None):
        return self.decoder(self.embedding(ids), cache=cache, mask=mask) @ self.embedding.weight.T


@pytest.fixture
def tiny_lm():
    torch.manual_seed(0)
    return TinyLM().eval()
