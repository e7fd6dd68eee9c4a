import dataclasses

import pytest
from torch import nn

from anyformer.core import TransformerConfig
from anyformer.core.stack import Encoder


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dim": 30, "n_heads": 4}, r"dim=30 must be divisible by n_heads=4 .*\[1, 2, 3, 5, 6, 10, 15, 30\]"),
        ({"position": "alibi"}, r"position='alibi' is not one of \['none', 'sinusoidal', 'learned', 'rope'\]"),
        ({"ffn": "geglu"}, r"ffn='geglu' is not one of \['gelu', 'swiglu'\]"),
        ({"norm": "batchnorm"}, r"norm='batchnorm' is not one of"),
        ({"norm_position": "sandwich"}, r"norm_position='sandwich' is not one of \['pre', 'post'\]"),
        ({"activation": "tanh"}, r"activation='tanh' is not one of"),
        ({"n_layers": 0}, r"n_layers must be > 0"),
        ({"n_experts": 2, "moe_top_k": 3}, r"moe_top_k=3 must be in \[1, n_experts=2\]"),
        ({"dim": 12, "n_heads": 4, "position": "rope"}, r"even head_dim, got 3"),
        ({"dropout": 1.0}, r"dropout"),
    ],
)
def test_bad_configuration_names_the_field_and_the_allowed_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**overrides)


def test_final_norm_none_follows_norm_position_even_after_an_override():
    post = TransformerConfig(norm_position="post")
    assert post.final_norm is None and post.use_final_norm is False
    switched = dataclasses.replace(post, norm_position="pre")  # what a YAML over a post-norm default does
    assert switched.use_final_norm is True
    assert isinstance(Encoder(switched).final_norm, nn.LayerNorm)
    assert isinstance(Encoder(post).final_norm, nn.Identity)
    assert TransformerConfig(norm_position="pre", final_norm=False).use_final_norm is False  # explicit wins
    assert TransformerConfig(norm_position="post", final_norm=True).use_final_norm is True
    assert TransformerConfig(dim=64, n_heads=8).head_dim == 8
