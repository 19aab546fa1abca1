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

