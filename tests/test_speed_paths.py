"""The fast paths of the training loop compute the same numbers as the plain formulas."""
import warnings

import pytest
import torch

from dfa_lib import BP, DFA, FA, MLP, write_grads
from dfa_lib.averaging import average_cache, batch_mean
from dfa_lib.rules import times_derivative


def _cache(hidden, n=5):
    torch.manual_seed(0)
    model = MLP([7, 6, 5, 3], hidden=hidden)
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
    avg = average_cache(cache, batch_mean)
    p = torch.randn(1, 6)
    assert torch.allclose(times_derivative(model, avg, 1, p), p * (1 - torch.tanh(avg.pre[0]) ** 2), atol=1e-6)


def test_write_grads_scale_is_applied_once_per_layer_either_way():
    for n in (5, 40):  # 40 rows > 7 inputs: the gradient, not the signal, is scaled
        model, cache = _cache("tanh", n)
        e = torch.randn(n, 3)
        for make_rule in (BP, DFA, FA):
            rule = make_rule(model)
            deltas = rule.signals(model, cache, e)
            write_grads(model, cache, deltas, scale=1 / n)
            for layer, d, h in zip(model.layers, deltas, cache.inputs):
                assert torch.allclose(layer.weight.grad, d.T @ h / n, atol=1e-6)
                assert torch.allclose(layer.bias.grad, d.sum(0) / n, atol=1e-6)
            rule.detach()  # a model carries one rule at a time


class _SGDThroughGrad(torch.optim.SGD):
    """Plain SGD that train() does not recognise: it takes the .grad + optimizer.step() path."""


def _train_pair(make_opt, epochs=3, **kw):
    """The same run twice, once on the fused plain-SGD path and once through .grad."""
    from dfa_lib import train
    from conftest import small_classification

    models = []
    for cls in (torch.optim.SGD, _SGDThroughGrad):
        torch.manual_seed(0)
        model = MLP([6, 8, 8, 3], hidden="tanh").double()
        rule = DFA(model, dist="uniform", scale=0.5, generator=torch.Generator().manual_seed(1))
        opt, on_epoch = make_opt(cls, model)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
            train(model, rule, small_classification(), epochs=epochs, batch_size=16, optimizer=opt,
                  on_epoch=on_epoch, generator=torch.Generator().manual_seed(2), progress=False, **kw)
        models.append(model)
    return models


def _assert_same_weights(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=0, atol=1e-12), (p - q).abs().max()


def test_fused_plain_sgd_equals_gradients_then_optimizer_step():
    fused, through_grad = _train_pair(lambda cls, m: (cls(m.parameters(), lr=0.5), None))
    _assert_same_weights(fused, through_grad)
    assert all(p.grad is None for p in fused.parameters())  # the fused path never fills .grad
    assert all(p.grad is not None for p in through_grad.parameters())


def test_fused_plain_sgd_follows_param_groups_schedulers_and_frozen_layers():
    def make(cls, m):
        opt = cls([{"params": m.layers[0].parameters(), "lr": 2.0},
                   {"params": list(m.layers[1].parameters()) + list(m.layers[2].parameters())}], lr=0.3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
        return opt, lambda history, epoch, model: schedule.step()

    fused, through_grad = _train_pair(make, epochs=4)
    _assert_same_weights(fused, through_grad)
    fused_frozen, through_grad_frozen = _train_pair(make, epochs=2, frozen=(2,))
    _assert_same_weights(fused_frozen, through_grad_frozen)
    torch.manual_seed(0)
    start = MLP([6, 8, 8, 3], hidden="tanh").double()
    assert torch.equal(fused_frozen.layers[1].weight, start.layers[1].weight)


def test_momentum_sgd_takes_the_gradient_path():
    from dfa_lib import train
    from conftest import small_classification

    model = MLP([6, 8, 3], hidden="tanh")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, BP(), small_classification(), epochs=1, batch_size=16, optimizer=opt, progress=False)
    assert all(p.grad is not None for p in model.parameters())
    assert opt.state[model.layers[0].weight]["momentum_buffer"] is not None


def test_a_bad_learning_rate_is_named():
    from dfa_lib import train
    from conftest import small_classification

    model = MLP([6, 8, 3])
    for lr in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="lr must be"):
            train(model, BP(), small_classification(), epochs=1, lr=lr, progress=False)
