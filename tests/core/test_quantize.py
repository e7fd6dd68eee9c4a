"""Weight-only bf16/int8 storage for decoding: the quantizer against its formula, the products
against a float64 reference of the stored weights, both int8 paths against each other, and a
quantized GPT's cached decoding against its own uncached forward."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from anyformer.core import quantize
from anyformer.core.config import TransformerConfig
from anyformer.core.decoding import GenerationConfig, generate
from anyformer.core.quantize import (
    INT8_PACK_MAX_ROWS,
    WeightOnlyLinear,
    greedy_agreement,
    mean_next_token_loss,
    quantize_int8,
    store_weights,
    weight_bytes_per_token,
)
from anyformer.text.gpt.gpt import GPT, GPTConfig


def test_int8_quantization_rounds_each_row_to_its_own_scale():
    weight = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    weight[2] = 0.0  # a zero row must not divide by zero
    q, scale = quantize_int8(weight)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    expected_scale = weight.abs().amax(dim=1) / 127
    expected_scale[2] = 1.0
    torch.testing.assert_close(scale, expected_scale)
    assert q.abs().amax(dim=1)[[0, 1, 3, 4, 5]].eq(127).all()  # each row's largest entry uses the full range
    assert ((q.float() * scale[:, None] - weight).abs() <= scale[:, None] / 2 + 1e-7).all()  # round to nearest
    assert q[2].eq(0).all()


def _reference(layer: WeightOnlyLinear, x: torch.Tensor) -> torch.Tensor:
    """x @ W^T + b in float64, W the stored (rounded) weight, x rounded to bf16 as the kernels read it."""
    weight = layer.dequantized().double()
    out = x.to(torch.bfloat16).double() @ weight.T
    return out if layer.bias is None else out + layer.bias.double()


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
@pytest.mark.parametrize("rows", [1, INT8_PACK_MAX_ROWS, INT8_PACK_MAX_ROWS + 1, 40])
def test_weight_only_linear_computes_the_product_of_its_stored_weight(dtype, rows):
    torch.manual_seed(1)
    linear = nn.Linear(64, 48)
    layer = WeightOnlyLinear(linear, dtype)
    x = torch.randn(2, rows, 64)
    out = layer(x)
    assert out.shape == (2, rows, 48) and out.dtype == torch.float32
    expected = _reference(layer, x.reshape(-1, 64)).reshape(2, rows, 48)
    # bf16 output rounding of values of size ~|x||w| sqrt(K): a relative 2^-8 of the largest.
    torch.testing.assert_close(out.double(), expected, atol=expected.abs().max().item() * 2**-7, rtol=0)
    # And close to the fp32 layer it replaced (the rounding of the weights themselves on top).
    torch.testing.assert_close(out, linear(x), atol=0.05 * linear(x).abs().max().item(), rtol=0)


def test_int8_gemv_kernel_and_dequantized_product_agree(monkeypatch):
    torch.manual_seed(2)
    layer = WeightOnlyLinear(nn.Linear(96, 40, bias=False), "int8")
    x = torch.randn(3, 96)
    kernel = layer(x)
    monkeypatch.setattr(quantize, "INT8_PACK_AVAILABLE", False)  # the fallback: dequantize, one bf16 product
    torch.testing.assert_close(layer(x), kernel, atol=kernel.abs().max().item() * 2**-7, rtol=0)


def _tiny_gpt() -> GPT:
    torch.manual_seed(0)
    transformer = TransformerConfig(dim=32, n_layers=2, n_heads=2, max_seq_len=40, dropout=0.0)
    return GPT(GPTConfig(vocab_size=23, transformer=transformer)).eval()


def test_store_weights_replaces_every_linear_and_cuts_the_bytes_read_per_token():
    model = _tiny_gpt()
    fp32_bytes = weight_bytes_per_token(model)
    assert store_weights(model, "fp32") is model and not any(isinstance(m, WeightOnlyLinear) for m in model.modules())
    sizes = {}
    for dtype in ("bf16", "int8"):
        stored = store_weights(copy.deepcopy(model), dtype)
        # Every Linear but the head that makes the logits (kept fp32, still tied to the embedding).
        assert [name for name, m in stored.named_modules() if isinstance(m, nn.Linear)] == ["lm_head"]
        assert stored.lm_head.weight is stored.token_embedding.weight
        everything = store_weights(copy.deepcopy(model), dtype, keep_fp32=())
        assert not any(isinstance(m, nn.Linear) for m in everything.modules())
        assert all(m.dtype_name == dtype for m in stored.modules() if isinstance(m, WeightOnlyLinear))
        assert stored.token_embedding.weight.dtype == torch.float32  # the lookup table stays fp32
        sizes[dtype] = weight_bytes_per_token(stored)
    # bf16 halves the Linear weights, int8 quarters them (plus one scale per row); norms stay fp32.
    assert sizes["bf16"] < 0.55 * fp32_bytes and sizes["int8"] < 0.32 * fp32_bytes
    with pytest.raises(ValueError, match="weight dtype must be one of"):
        store_weights(model, "fp16")


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_a_stored_model_decodes_through_its_cache_as_its_full_forward_does(dtype):
    model = store_weights(_tiny_gpt(), dtype)
    prompt = torch.randint(0, 23, (2, 5), generator=torch.Generator().manual_seed(3))
    sequence = generate(model, prompt, GenerationConfig("greedy", max_new_tokens=12))
    with torch.no_grad():
        logits = model(sequence[:, :-1])  # uncached: every position at once (the dequantized GEMM path)
    # Each greedy token is the argmax of the full forward's logits at its position, unless two logits tie
    # within the kernels' bf16 rounding.
    for position in range(5, sequence.shape[1]):
        top2 = logits[:, position - 1].topk(2).values
        decided = (top2[:, 0] - top2[:, 1]) > 1e-2
        picked = logits[:, position - 1].argmax(-1)
        assert torch.equal(picked[decided], sequence[decided, position]), position


def test_greedy_agreement_and_loss_against_a_reference():
    model = _tiny_gpt()
    prompts = torch.randint(0, 23, (4, 3), generator=torch.Generator().manual_seed(4))
    assert greedy_agreement(model, copy.deepcopy(model), prompts, new_tokens=10) == 1.0
    other = GPT(GPTConfig(vocab_size=23, transformer=model.cfg.transformer)).eval()  # other random weights
    assert greedy_agreement(model, other, prompts, new_tokens=10) < 1.0
    windows = torch.randint(0, 23, (3, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = F.cross_entropy(model(windows[:, :-1]).reshape(-1, 23), windows[:, 1:].reshape(-1))
    assert mean_next_token_loss(model, windows) == pytest.approx(expected.item(), rel=1e-6)
