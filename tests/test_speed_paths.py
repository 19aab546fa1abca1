"""The fast paths of the training loop compute the same numbers as the plain formulas."""
import torch

from dfa_lib import BP, DFA, FA, MLP, write_grads
from dfa_lib.rules import times_derivative


def _cache(hidden, n=5):
    torch.manual_seed(0)
    model = MLP([7, 6, 5, 3], hidden=hidden, output="sigmoid")
    return model, model.forward_cached(torch.randn(n, 7))


def test_times_derivative_matches_the_three_op_form_for_tanh():
    model, cache = _cache("tanh")
    p = torch.randn(5, 6)
    expected = p * (1 - cache.inputs[1] ** 2)
    assert torch.allclose(times_derivative(model, cache, 1, p), expected, atol=1e-6)


def test_times_derivative_falls_back_for_other_activations_and_averaged_caches():
    model, cache = _cache("sigmoid")
    p = torch.randn(5, 6)
    assert torch.allclose(times_derivative(model, cache, 1, p), p * model.hidden_derivative(cache, 1))
    model, cache = _cache("tanh")
    avg = cache.averaged()
    p = torch.randn(1, 6)
    assert torch.allclose(times_derivative(model, avg, 1, p), p * (1 - torch.tanh(avg.pre[0]) ** 2), atol=1e-6)


def test_write_grads_scale_is_applied_once_per_layer_either_way():
    for n in (5, 40):  # 40 rows > 7 inputs: the gradient, not the signal, is scaled
        model, cache = _cache("tanh", n)
        e = torch.randn(n, 3)
        for rule in (BP(), DFA(model), FA(model)):
            deltas = rule.signals(model, cache, e)
            write_grads(model, cache, deltas, scale=1 / n)
            for layer, d, h in zip(model.layers, deltas, cache.inputs):
                assert torch.allclose(layer.weight.grad, d.T @ h / n, atol=1e-6)
                assert torch.allclose(layer.bias.grad, d.sum(0) / n, atol=1e-6)
