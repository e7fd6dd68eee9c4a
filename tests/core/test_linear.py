"""core.linear.Linear against torch's own nn.Linear: same parameters, same results and gradients
to fp32 rounding, and the oneDNN kernel really is the one that runs."""

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from core.linear import ONEDNN_AVAILABLE, Linear, uses_onednn

needs_onednn = pytest.mark.skipif(not ONEDNN_AVAILABLE, reason="this torch build has no oneDNN")


def twins(in_features: int, out_features: int, bias: bool) -> tuple[Linear, nn.Linear]:
    ours = Linear(in_features, out_features, bias=bias)
    reference = nn.Linear(in_features, out_features, bias=bias)
    reference.load_state_dict(ours.state_dict())
    return ours, reference


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 7, 24), (5, 24), (1, 1, 24), (2, 3, 4, 24)])
def test_forward_and_every_gradient_match_nn_linear(shape, bias):
    torch.manual_seed(0)
    ours, reference = twins(24, 40, bias)
    x = torch.randn(shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    grad_out = torch.randn(*shape[:-1], 40)
    y, y_ref = ours(x), reference(x_ref)
    y.backward(grad_out)
    y_ref.backward(grad_out)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)
    if bias:
        torch.testing.assert_close(ours.bias.grad, reference.bias.grad)


def test_strided_input_and_output_gradient():
    torch.manual_seed(0)
    ours, reference = twins(16, 8, bias=True)
    base = torch.randn(6, 16, 5, requires_grad=True)
    base_ref = base.detach().clone().requires_grad_()
    y, y_ref = ours(base.transpose(1, 2)), reference(base_ref.transpose(1, 2))  # (6, 5, 16), not contiguous
    grad_out = torch.randn(5, 6, 8).transpose(0, 1)  # a strided incoming gradient too
    y.backward(grad_out)
    y_ref.backward(grad_out)
    torch.testing.assert_close(base.grad, base_ref.grad)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad)


def test_frozen_weight_gives_input_gradient_only_and_frozen_input_weight_gradient_only():
    torch.manual_seed(0)
    ours = Linear(8, 4)
    ours.requires_grad_(False)
    x = torch.randn(3, 8, requires_grad=True)
    ours(x).sum().backward()
    assert ours.weight.grad is None and x.grad is not None
    ours.requires_grad_(True)
    ours(torch.randn(3, 8)).sum().backward()
    assert ours.weight.grad is not None and ours.bias.grad is not None


def test_tied_weight_accumulates_both_uses_like_nn_linear():
    """GPT's LM head shares the embedding's matrix: the gradient must be the sum of both uses."""
    torch.manual_seed(0)
    embedding = nn.Embedding(11, 8)
    ours, reference = Linear(8, 11, bias=False), nn.Linear(8, 11, bias=False)
    ours.weight = embedding.weight
    ids = torch.tensor([[1, 5, 5, 9]])
    ours(embedding(ids)).logsumexp(-1).sum().backward()
    ours_grad = embedding.weight.grad.clone()
    embedding.weight.grad = None
    reference.weight = embedding.weight
    reference(embedding(ids)).logsumexp(-1).sum().backward()
    torch.testing.assert_close(ours_grad, embedding.weight.grad)


def test_state_dict_is_nn_linears():
    ours, reference = twins(3, 2, bias=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert isinstance(ours, nn.Linear)  # init, weight decay and FLOP counts that look for nn.Linear still see it


def linear_pointwise_calls(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.count for event in prof.key_averages() if event.key == "mkldnn::_linear_pointwise")


@needs_onednn
def test_fp32_cpu_training_runs_all_three_gemms_on_onednn():
    ours = Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    assert uses_onednn(x, ours.weight)
    assert linear_pointwise_calls(lambda: ours(x).sum().backward()) == 3  # forward, input grad, weight grad
    with torch.no_grad():
        assert linear_pointwise_calls(lambda: ours(x)) == 1


def test_other_dtypes_and_autocast_are_exactly_nn_linear():
    torch.manual_seed(0)
    ours, reference = twins(16, 8, bias=True)
    x = torch.randn(4, 16, dtype=torch.float64)
    ours.double(), reference.double()
    assert not uses_onednn(x, ours.weight)
    assert torch.equal(ours(x), reference(x))
    ours.float(), reference.float()
    x = x.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(x, ours.weight)
        assert linear_pointwise_calls(lambda: ours(x)) == 0
        assert torch.equal(ours(x), reference(x))
