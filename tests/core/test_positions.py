import math

import pytest
import torch

from anyformer.core.positions import LearnedPositions, RotaryEmbedding, SinusoidalPositions, sinusoidal_table


def test_sinusoidal_matches_closed_formula():
    dim, base = 10, 10000.0
    table = sinusoidal_table(torch.arange(50), dim, base)
    for pos in (0, 1, 7, 49):
        for i in range(dim // 2):
            angle = pos / base ** (2 * i / dim)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_sinusoidal_works_beyond_its_precomputed_length_and_with_offsets():
    module = SinusoidalPositions(dim=8, max_seq_len=4)
    x = torch.zeros(1, 3, 8)
    torch.testing.assert_close(module(x, start=10)[0], sinusoidal_table(torch.arange(10, 13), 8))
    torch.testing.assert_close(module(x, start=1)[0], sinusoidal_table(torch.arange(1, 4), 8))


def test_learned_positions_offset_and_limit():
    module = LearnedPositions(dim=4, max_seq_len=6)
    x = torch.zeros(1, 2, 4)
    torch.testing.assert_close(module(x, start=3)[0], module.embedding.weight[3:5])
    with pytest.raises(ValueError, match="max_seq_len=6"):
        module(x, start=5)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    rope = RotaryEmbedding(head_dim=16, max_seq_len=8)  # also beyond the precomputed table
    q, k = torch.randn(16), torch.randn(16)

    def score(q_pos: int, k_pos: int) -> float:
        q_rot = rope(q.view(1, 1, 1, 16), start=q_pos)
        k_rot = rope(k.view(1, 1, 1, 16), start=k_pos)
        return (q_rot * k_rot).sum().item()

    for offset in (0, 3, 40):
        assert score(5 + offset, 2 + offset) == pytest.approx(score(5, 2), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)


def test_rope_preserves_norm_and_is_identity_at_position_zero():
    rope = RotaryEmbedding(head_dim=8, max_seq_len=16)
    x = torch.randn(2, 3, 5, 8)
    rotated = rope(x, start=4)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rope(x[:, :, :1], start=0), x[:, :, :1])
