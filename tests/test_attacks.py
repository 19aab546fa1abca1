"""FGSM, PGD and the random-sign baseline of dfa_lib.attacks (chapter 13), on tiny float64 models.

A linear model's FGSM step is known in closed form, PGD with one step from the clean input is FGSM,
and the rule's input gradient differs from the exact one for FA with random feedback but not for
FA whose feedback is the forward weight.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dfa_lib import FA, MLP, DFA, Shallow, fgsm, input_gradient_of_loss, pgd, random_sign_noise, rule_of


def batch(n=5, d=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64) * 0.6 + 0.2  # away from the bounds: no clamping
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def linear_model(d=4, classes=3, seed=1):
    torch.manual_seed(seed)
    return nn.Linear(d, classes).double()


def mlp(seed=2):
    torch.manual_seed(seed)
    return MLP([4, 6, 5, 3], hidden="tanh").double()


def test_fgsm_on_a_linear_model_is_the_hand_computed_step():
    model, (x, y) = linear_model(), batch()
    eps = 0.05
    W, b = model.weight.detach(), model.bias.detach()
    p = torch.softmax(x @ W.T + b, dim=1)
    grad = (p - torch.nn.functional.one_hot(y, 3).double()) @ W  # per example: W^T (softmax - onehot)
    expected = x + eps * grad.sign()
    assert torch.equal(fgsm(model, x, y, eps), expected)
    assert torch.allclose(input_gradient_of_loss(model, x, y), grad)


def test_pgd_with_one_step_of_size_epsilon_and_no_random_start_is_fgsm():
    model, (x, y) = mlp(), batch()
    FA(model)
    for gradient in ("exact", "rule"):
        a = pgd(model, x, y, 0.03, steps=1, step_size=0.03, random_start=False, gradient=gradient)
        assert torch.equal(a, fgsm(model, x, y, 0.03, gradient=gradient))


def test_pgd_stays_in_the_epsilon_ball_and_the_data_range():
    model, (x, y) = mlp(), batch(n=8)
    x = x.clone()
    x[0, 0], x[1, 1] = 0.0, 1.0  # entries on the bounds: the projection must keep them inside
    eps = 0.1
    adv = pgd(model, x, y, eps, steps=5, step_size=0.05, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-12
    assert adv.min() >= 0 and adv.max() <= 1
    loss = nn.functional.cross_entropy
    assert loss(model(adv), y) >= loss(model(x), y)  # the attack does its job on this tiny net


def test_random_sign_noise_moves_every_entry_by_epsilon():
    x, _ = batch(n=6)
    noise = random_sign_noise(x, 0.07, generator=torch.Generator().manual_seed(0))
    assert torch.allclose((noise - x).abs(), torch.full_like(x, 0.07))
    assert set(torch.sign(noise - x).unique().tolist()) == {-1.0, 1.0}
    edge = torch.ones(2, 3, dtype=torch.float64)
    assert random_sign_noise(edge, 0.5).max() <= 1  # clamped to the data range


def test_exact_and_rule_gradients_differ_for_fa_with_random_feedback():
    model, (x, y) = mlp(), batch()
    rule = FA(model, generator=torch.Generator().manual_seed(3))
    exact = input_gradient_of_loss(model, x, y, "exact")
    by_rule = input_gradient_of_loss(model, x, y, "rule")
    assert not torch.allclose(exact, by_rule)
    rule.detach()  # the exact gradient is the detached network's plain autograd gradient
    assert torch.allclose(exact, input_gradient_of_loss(model, x, y, "exact"))


def test_exact_and_rule_gradients_agree_for_fa_with_the_forward_weights_as_feedback():
    model, (x, y) = mlp(), batch()
    rule = FA(model)
    for l in range(1, len(model.layers)):
        setattr(rule, f"B{l}", model.layers[l].weight.detach().T.clone())
    exact = input_gradient_of_loss(model, x, y, "exact")
    assert torch.allclose(exact, input_gradient_of_loss(model, x, y, "rule"))
    assert rule_of(model) is rule  # the rule stays attached after the attack


def test_rules_without_an_input_signal_refuse_the_rule_gradient():
    model, (x, y) = mlp(), batch()
    Shallow(model)
    with pytest.raises(ValueError, match="gradient='exact'"):
        fgsm(model, x, y, 0.1, gradient="rule")
    fgsm(model, x, y, 0.1, gradient="exact")  # the exact gradient is always defined


def test_dfa_rule_gradient_is_defined_and_differs():
    model, (x, y) = mlp(), batch()
    DFA(model, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(input_gradient_of_loss(model, x, y, "exact"),
                              input_gradient_of_loss(model, x, y, "rule"))


def test_the_attack_leaves_no_parameter_gradients_and_restores_the_mode():
    model, (x, y) = mlp(), batch()
    FA(model)
    model.train()
    pgd(model, x, y, 0.1, steps=2, gradient="rule")
    assert model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: fgsm(m, x, y, -0.1), "epsilon must be >= 0"),
    (lambda m, x, y: fgsm(m, x + 1.0, y, 0.1), "outside the data range"),
    (lambda m, x, y: fgsm(m, x, torch.nn.functional.one_hot(y, 3), 0.1), "one class index per input"),
    (lambda m, x, y: fgsm(m, x, y.double() + 0.5, 0.1), "class indices"),
    (lambda m, x, y: fgsm(m, x, y + 3, 0.1), r"class indices in \[0, 2\]"),
    (lambda m, x, y: fgsm(m, x, y, 0.1, gradient="bp"), "gradient must be 'exact'"),
    (lambda m, x, y: pgd(m, x, y, 0.1, steps=0), "steps must be a positive integer"),
    (lambda m, x, y: random_sign_noise(x, -1.0), "epsilon must be >= 0"),
])
def test_bad_input_gives_a_clear_error(call, message):
    model, (x, y) = mlp(), batch()
    with pytest.raises(ValueError, match=message):
        call(model, x, y)


def test_fa_rule_gradient_is_the_hand_computed_feedback_path():
    torch.manual_seed(5)
    model = MLP([4, 6, 3], hidden="tanh").double()
    rule = FA(model, generator=torch.Generator().manual_seed(6))
    x, y = batch()
    W1, b1 = model.layers[0].weight.detach(), model.layers[0].bias.detach()
    W2, b2 = model.layers[1].weight.detach(), model.layers[1].bias.detach()
    h = torch.tanh(x @ W1.T + b1)
    e = torch.softmax(h @ W2.T + b2, dim=1) - torch.nn.functional.one_hot(y, 3).double()
    expected = ((e @ rule.B1.T) * (1 - h ** 2)) @ W1  # B1 in place of W2^T, then the first layer's own weight
    assert torch.allclose(input_gradient_of_loss(model, x, y, "rule"), expected)


def test_rule_gradient_reaches_the_input_through_modules_before_the_first_layer():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    rule = FA(model)
    rule.B1 = model[3].weight.detach().T.clone()  # B = W: the rule's gradient is the exact one
    x, y = batch()
    images = x.view(5, 1, 2, 2)
    by_rule = input_gradient_of_loss(model, images, y, "rule")
    assert by_rule.shape == images.shape
    assert torch.allclose(by_rule, input_gradient_of_loss(model, images, y, "exact"))


def test_input_gradient_takes_labels_as_a_list_and_refuses_one_hot():
    model, (x, y) = mlp(), batch()
    assert torch.equal(input_gradient_of_loss(model, x, y.tolist()), input_gradient_of_loss(model, x, y))
    with pytest.raises(ValueError, match="one class index per input"):
        input_gradient_of_loss(model, x, torch.nn.functional.one_hot(y, 3))


def test_rule_gradient_through_a_conv_layer_is_exact_when_the_feedback_is_the_forward_weight():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).double()
    rule = FA(model)
    rule.B1 = model[3].weight.detach().T.clone()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    assert torch.allclose(input_gradient_of_loss(model, x, y, "rule"), input_gradient_of_loss(model, x, y, "exact"))


@pytest.mark.parametrize("Rule", [FA, DFA])
@pytest.mark.parametrize("gradient", ["exact", "rule"])
def test_attacks_run_on_a_model_on_another_device(Rule, gradient):
    """The meta device stands in for a GPU: the model, its rule's matrices, the inputs and the labels all live
    there, the random start comes from a CPU generator, and the adversarial inputs come back on the device."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.Tanh(), nn.Linear(8, 3))
    Rule(model, example_input=torch.rand(1, 1, 28, 28)) if Rule is DFA else Rule(model)
    model.to("meta")
    x, y = torch.rand(4, 1, 28, 28, device="meta"), torch.tensor([0, 1, 2, 0], device="meta")
    for adv in (pgd(model, x, y, 0.1, steps=2, gradient=gradient, generator=torch.Generator().manual_seed(0)),
                fgsm(model, x, y, 0.1, gradient=gradient),
                random_sign_noise(x, 0.1, generator=torch.Generator().manual_seed(0))):
        assert adv.device.type == "meta" and adv.shape == x.shape
