import pytest
import torch

from anyformer.core import TransformerConfig
from anyformer.core.ffn import MLP, MixtureOfExperts, SwiGLU


def _cfg(**overrides):
    return TransformerConfig(**(dict(dim=16, n_heads=2, mlp_ratio=2.0) | overrides))


def test_mlp_and_swiglu_formulas():
    torch.manual_seed(0)
    x = torch.randn(3, 16)
    mlp = MLP(_cfg(activation="gelu_tanh"))
    expected = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x), approximate="tanh"))
    torch.testing.assert_close(mlp(x), expected)
    swiglu = SwiGLU(_cfg(ffn="swiglu"))
    gate, up = swiglu.fc1.weight.chunk(2)
    gb, ub = swiglu.fc1.bias.chunk(2)
    expected = swiglu.fc2(torch.nn.functional.silu(x @ gate.T + gb) * (x @ up.T + ub))
    torch.testing.assert_close(swiglu(x), expected)


@pytest.mark.parametrize("ffn", ["gelu", "swiglu"])
def test_one_expert_equals_the_dense_feed_forward(ffn):
    torch.manual_seed(0)
    moe = MixtureOfExperts(_cfg(ffn=ffn, n_experts=1, moe_top_k=1))
    dense = (MLP if ffn == "gelu" else SwiGLU)(_cfg(ffn=ffn))
    dense.load_state_dict(moe.experts[0].state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(moe(x), dense(x))


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_each_token_goes_to_exactly_top_k_experts(top_k):
    torch.manual_seed(0)
    moe = MixtureOfExperts(_cfg(n_experts=4, moe_top_k=top_k))
    calls = torch.zeros(10, dtype=torch.long)
    x = torch.randn(10, 16)
    x_ids = {tuple(row.tolist()): i for i, row in enumerate(x)}

    def count(module, inputs, output):
        for row in inputs[0]:
            calls[x_ids[tuple(row.tolist())]] += 1

    hooks = [expert.register_forward_hook(count) for expert in moe.experts]
    out = moe(x)
    for hook in hooks:
        hook.remove()
    assert calls.tolist() == [top_k] * 10
    # The output is the renormalized-probability mix of exactly the chosen experts.
    probs = moe.router(x).softmax(-1)
    top_p, top_e = probs.topk(top_k, -1)
    top_p = top_p / top_p.sum(-1, keepdim=True)
    expected = torch.stack([sum(top_p[n, j] * moe.experts[top_e[n, j]](x[n]) for j in range(top_k)) for n in range(10)])
    torch.testing.assert_close(out, expected)


def test_balance_loss_is_minimal_for_uniform_routing():
    torch.manual_seed(0)
    moe = MixtureOfExperts(_cfg(n_experts=4, moe_top_k=1))
    # Uniform routing: router probabilities all 1/E and each expert takes the same share.
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(4, 16) * 1e-4)
    x = torch.eye(16)[:4].repeat(5, 1)  # 20 tokens, 5 routed to each expert, probs ~ uniform
    moe(x)
    assert moe.balance_loss.item() == pytest.approx(1.0, abs=1e-3)
    # Collapsed routing (everything to one expert with high probability) costs more.
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 5.0
    moe(torch.rand(20, 16) + 0.5)
    assert moe.balance_loss.item() > 2.0
    # Random routers never beat uniform.
    for seed in range(5):
        torch.manual_seed(seed)
        moe.router.reset_parameters()
        moe(torch.randn(64, 16))
        assert moe.balance_loss.item() >= 1.0 - 1e-6
