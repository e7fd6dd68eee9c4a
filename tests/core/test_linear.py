"""anyformer.core.linear.Linear against torch's own nn.Linear: same parameters, same results and gradients
to fp32 rounding, eager and compiled, and the oneDNN kernel really is the one that runs."""

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from anyformer.core.linear import ONEDNN_AVAILABLE, ONEDNN_MIN_MACS, ONEDNN_MIN_WEIGHT, Linear, uses_onednn

needs_onednn = pytest.mark.skipif(not ONEDNN_AVAILABLE, reason="this torch build has no oneDNN")
IN, OUT = 256, 512  # a weight of ONEDNN_MIN_WEIGHT entries: oneDNN at any batch


def twins(in_features: int = IN, out_features: int = OUT, bias: bool = True) -> tuple[Linear, nn.Linear]:
    ours = Linear(in_features, out_features, bias=bias)
    reference = nn.Linear(in_features, out_features, bias=bias)
    reference.load_state_dict(ours.state_dict())
    return ours, reference


def linear_pointwise_calls(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.count for event in prof.key_averages() if event.key == "mkldnn::_linear_pointwise")


def assert_matches_nn_linear(ours: nn.Module, reference: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> None:
    x_ref = x.detach().clone().requires_grad_()
    x = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), reference(x_ref)
    y.backward(grad_out)
    y_ref.backward(grad_out)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    ours_params = dict(getattr(ours, "_orig_mod", ours).named_parameters())  # a compiled module wraps the original
    for name, param in reference.named_parameters():
        torch.testing.assert_close(ours_params[name].grad, param.grad)


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 7, IN), (5, IN), (1, 1, IN), (2, 3, 4, IN)])
def test_forward_and_every_gradient_match_nn_linear(shape, bias):
    torch.manual_seed(0)
    ours, reference = twins(bias=bias)
    x = torch.randn(shape)
    assert uses_onednn(x, ours.weight)
    assert_matches_nn_linear(ours, reference, x, torch.randn(*shape[:-1], OUT))


@needs_onednn
def test_strided_input_and_output_gradient():
    torch.manual_seed(0)
    ours, reference = twins()
    x = torch.randn(6, IN, 5).transpose(1, 2)  # (6, 5, IN), not contiguous
    assert_matches_nn_linear(ours, reference, x, torch.randn(5, 6, OUT).transpose(0, 1))


@needs_onednn
def test_frozen_weight_gives_input_gradient_only_and_frozen_input_weight_gradient_only():
    ours = Linear(IN, OUT)
    ours.requires_grad_(False)
    x = torch.randn(3, IN, requires_grad=True)
    ours(x).sum().backward()
    assert ours.weight.grad is None and x.grad is not None
    ours.requires_grad_(True)
    assert linear_pointwise_calls(lambda: ours(torch.randn(3, IN)).sum().backward()) == 2  # no input-grad product
    assert ours.weight.grad is not None and ours.bias.grad is not None


@needs_onednn
def test_tied_weight_accumulates_both_uses_like_nn_linear():
    """GPT's LM head shares the embedding's matrix: the gradient must be the sum of both uses."""
    torch.manual_seed(0)
    embedding = nn.Embedding(OUT, IN)
    ids = torch.tensor([[1, 5, 5, 9]])
    grads = []
    for head in (Linear(IN, OUT, bias=False), nn.Linear(IN, OUT, bias=False)):
        head.weight = embedding.weight
        embedding.weight.grad = None
        head(embedding(ids)).logsumexp(-1).sum().backward()
        grads.append(embedding.weight.grad.clone())
    torch.testing.assert_close(*grads)


def test_state_dict_is_nn_linears():
    ours, reference = twins(3, 2)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert isinstance(ours, nn.Linear)  # init, weight decay and FLOP counts that look for nn.Linear still see it


@needs_onednn
def test_fp32_cpu_training_runs_all_three_products_on_onednn():
    ours = Linear(IN, OUT)
    x = torch.randn(4, IN, requires_grad=True)
    assert linear_pointwise_calls(lambda: ours(x).sum().backward()) == 3  # forward, input grad, weight grad
    with torch.no_grad():
        assert linear_pointwise_calls(lambda: ours(x)) == 1


@needs_onednn
def test_small_products_stay_on_mkl_and_big_batches_of_small_weights_do_not():
    small = Linear(16, 8)
    assert small.weight.numel() < ONEDNN_MIN_WEIGHT
    few_rows = torch.randn(4, 16)
    many_rows = torch.randn(ONEDNN_MIN_MACS // (16 * 8), 16)
    assert not uses_onednn(few_rows, small.weight) and linear_pointwise_calls(lambda: small(few_rows)) == 0
    assert uses_onednn(many_rows, small.weight) and linear_pointwise_calls(lambda: small(many_rows)) == 1


@pytest.mark.parametrize("in_features, rows", [(IN, 0), (0, 3)])
def test_empty_products_match_nn_linear(in_features, rows):
    """An empty batch (or a zero-width input) is a valid nn.Linear call, forward and backward."""
    ours, reference = twins(in_features, OUT)
    assert_matches_nn_linear(ours, reference, torch.randn(rows, in_features), torch.randn(rows, OUT))


def test_without_onednn_it_is_exactly_nn_linear(monkeypatch):
    """A torch without the operator (or with a renamed one) trains on MKL, not an error."""
    import anyformer.core.linear

    monkeypatch.setattr(anyformer.core.linear, "ONEDNN_AVAILABLE", False)
    ours, reference = twins()
    x = torch.randn(4, IN)
    assert linear_pointwise_calls(lambda: ours(x).sum().backward()) == 0
    assert torch.equal(ours(x), reference(x))


def test_other_dtypes_and_autocast_are_exactly_nn_linear():
    torch.manual_seed(0)
    ours, reference = twins()
    x = torch.randn(4, IN, dtype=torch.float64)
    ours.double(), reference.double()
    assert not uses_onednn(x, ours.weight)
    assert torch.equal(ours(x), reference(x))
    ours.float(), reference.float()
    x = x.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(x, ours.weight)
        assert linear_pointwise_calls(lambda: ours(x)) == 0
        assert torch.equal(ours(x), reference(x))


@needs_onednn
def test_compiled_graph_keeps_the_onednn_operator_whole_and_matches_eager():
    """One graph (no break at the operator) whose forward and backward equal nn.Linear's."""
    torch.manual_seed(0)
    ours, reference = twins()
    compiled = torch.compile(ours, fullgraph=True)
    assert_matches_nn_linear(compiled, reference, torch.randn(3, 5, IN), torch.randn(3, 5, OUT))
    with torch.no_grad():
        assert linear_pointwise_calls(lambda: compiled(torch.randn(3, 5, IN))) == 1


def transformer_models() -> dict[str, nn.Module]:
    from anyformer.rl.dt import DecisionTransformer, DTConfig
    from anyformer.speech.speech import SpeechConfig, SpeechTransformer
    from anyformer.text.bert.bert import BertConfig, BertForClassification, BertForPretraining
    from anyformer.text.gpt.gpt import GPT, GPTConfig
    from anyformer.text.seq2seq.seq2seq import Seq2Seq, Seq2SeqConfig
    from anyformer.vision.vit import ViT, ViTConfig

    return {
        "gpt": GPT(GPTConfig()),
        "bert pretraining": BertForPretraining(BertConfig()),
        "bert classifier": BertForClassification(BertConfig()),
        "seq2seq": Seq2Seq(Seq2SeqConfig()),
        "vit": ViT(ViTConfig()),
        "speech": SpeechTransformer(SpeechConfig()),
        "decision transformer": DecisionTransformer(DTConfig()),
    }


def test_every_projection_of_every_transformer_task_is_core_linear():
    """A projection added as a plain nn.Linear would silently miss the oneDNN products."""
    for name, model in transformer_models().items():
        plain = [path for path, m in model.named_modules() if isinstance(m, nn.Linear) and not isinstance(m, Linear)]
        assert not plain, f"{name}: plain nn.Linear at {plain}"
        assert any(isinstance(m, Linear) for m in model.modules()), name
