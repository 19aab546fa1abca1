"""The rules' own weights: where and how they are drawn, how Kolen-Pollack's learn, DRTP's targets.

Written as a user meets them: their own ``nn.Module`` and loop, a float64 or GPU model (PyTorch's
``meta`` device stands in for a GPU: nothing may be drawn on the CPU), a seed passed where a
generator belongs, labels a network cannot have.  Expected values are derived by hand (the draws
from the generator, the gradients from the chain rule), never from the code under test.
"""
import inspect
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dfa_lib import BRSF, DFA, DRTP, FA, FRSF, MLP, USF, KolenPollack

RULES = [FA, DFA, DRTP, USF, FRSF, BRSF, KolenPollack]


def two_layers(dtype=torch.float32, seed=0):
    """A 4-5-3 tanh network as a user writes it."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def three_layers(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def data(n=8, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def uniform(shape, seed, bound, dtype=torch.float32):
    """U[-bound, bound] drawn as a user would from a fresh generator."""
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1) * bound


def xavier(fan_in, fan_out):
    return math.sqrt(6 / (fan_in + fan_out))


def half_squared_error(out, y):
    return 0.5 * ((out - F.one_hot(y, 3).to(out.dtype)) ** 2).sum()


# --------------------------------------------------------------------------- Kolen-Pollack in the user's loop
def kp_gradients_by_hand(model, B, x, y, decay):
    """One backward of 0.5 * |out - onehot|^2 under KP: dW2 = e^T h, dW1 = ((e @ B) * (1 - h^2))^T x, plus decay."""
    W1, b1, W2, b2 = (p.detach() for p in model.parameters())
    h = torch.tanh(x @ W1.T + b1)
    e = h @ W2.T + b2 - F.one_hot(y, 3).to(x.dtype)
    g2 = e.T @ h
    g1 = ((e @ B.detach()) * (1 - h**2)).T @ x
    return g1, g2


def test_kp_own_loop_with_sgd_over_the_model_alone_is_refused():
    model = two_layers()
    KolenPollack(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # forgot the rule's parameters
    x, y = data()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    with pytest.raises(RuntimeError, match=r"list\(model.parameters\(\)\) \+ list\(rule.parameters\(\)\)"):
        model(x)


def test_kp_own_loop_with_fused_adamw_over_the_model_alone_is_refused():
    model = two_layers()
    KolenPollack(model, weight_decay=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # fused steps leave no version trace
    x, y = data()
    with pytest.raises(RuntimeError, match=r"list\(rule.parameters\(\)\)"):
        for _ in range(2):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()


def test_kp_correct_loops_raise_nothing_frozen_layer_lr_zero_eval_forward_and_accumulation():
    model = three_layers()
    model[2].weight.requires_grad_(False)  # a frozen W with its own B
    rule = KolenPollack(model)
    x, y = data()
    for lr, fused in [(0.1, False), (0.0, False), (1e-3, True)]:
        params = [p for p in model.parameters() if p.requires_grad] + list(rule.parameters())
        opt = torch.optim.SGD(params, lr=lr) if not fused else torch.optim.AdamW(params, lr=lr, fused=True)
        for _ in range(3):
            opt.zero_grad()
            for rows in (slice(0, 4), slice(4, 8)):  # two backward calls per step
                F.cross_entropy(model(x[rows]), y[rows]).backward()
            model.eval()
            model(x)  # an evaluation with gradients on, between backward and step
            model.train()
            opt.step()
        model(x)


@pytest.mark.parametrize("decay", [0.1, 0.0])
def test_kp_accumulated_backward_calls_give_b_its_own_decay_and_never_w(decay):
    model = two_layers(torch.float64)
    rule = KolenPollack(model, weight_decay=decay, generator=torch.Generator().manual_seed(3))
    (B,) = rule.feedback_parameters
    x, y = data(8, torch.float64)
    W1, W2 = model[0].weight, model[2].weight
    parts = [kp_gradients_by_hand(model, B, x[:4], y[:4], decay), kp_gradients_by_hand(model, B, x[4:], y[4:], decay)]
    for xb, yb in [(x[:4], y[:4]), (x[4:], y[4:])]:
        half_squared_error(model(xb), yb).backward()
    g1 = parts[0][0] + parts[1][0]
    g2 = parts[0][1] + parts[1][1]
    torch.testing.assert_close(W2.grad, g2 + 2 * decay * W2.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(B.grad, g2 + 2 * decay * B.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(W1.grad, g1 + 2 * decay * W1.detach(), rtol=0, atol=1e-12)
    assert B.grad.data_ptr() != W2.grad.data_ptr()  # two gradients, not one shared tensor


def test_kp_detached_and_attached_again_still_teaches_b():
    decay = 0.1
    model = two_layers(torch.float64)
    rule = KolenPollack(model, weight_decay=decay, generator=torch.Generator().manual_seed(3))
    rule.detach()
    rule.attach(model)
    (B,) = rule.feedback_parameters
    x, y = data(8, torch.float64)
    g1, g2 = kp_gradients_by_hand(model, B, x, y, decay)
    half_squared_error(model(x), y).backward()
    assert B.grad is not None, "B got no gradient after re-attaching"
    torch.testing.assert_close(B.grad, g2 + decay * B.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(model[2].weight.grad, g2 + decay * model[2].weight.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(model[0].weight.grad, g1 + decay * model[0].weight.detach(), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- dtype and device
def test_fa_on_a_float64_model_draws_float64_feedback_and_trains():
    model = three_layers(torch.float64)
    rule = FA(model, generator=torch.Generator().manual_seed(5))
    assert rule.B1.dtype == torch.float64 and rule.B2.dtype == torch.float64
    # B1 has W2^T's shape (6, 5), B2 W3^T's (5, 3): drawn one after the other from the generator
    g = torch.Generator().manual_seed(5)
    expected = [(torch.rand(6, 5, generator=g, dtype=torch.float64) * 2 - 1) * xavier(6, 5),
                (torch.rand(5, 3, generator=g, dtype=torch.float64) * 2 - 1) * xavier(5, 3)]
    torch.testing.assert_close(rule.B1, expected[0], rtol=0, atol=0)
    torch.testing.assert_close(rule.B2, expected[1], rtol=0, atol=0)
    x, y = data(dtype=torch.float64)
    F.cross_entropy(model(x), y).backward()
    assert model[0].weight.grad.dtype == torch.float64


def test_dfa_on_a_float64_model_draws_float64_feedback():
    model = three_layers(torch.float64)
    rule = DFA(model)
    assert rule.B.dtype == torch.float64
    x, y = data(dtype=torch.float64)
    F.cross_entropy(model(x), y).backward()
    assert model[0].weight.grad.dtype == torch.float64


def test_drtp_on_a_float64_model_computes_in_float64():
    model = two_layers(torch.float64)
    rule = DRTP(model, generator=torch.Generator().manual_seed(7))
    B = uniform((5, 3), 7, 1.0, torch.float64)  # DRTP's U[-1, 1], drawn in float64
    x, y = data(dtype=torch.float64)
    rule.observe_target(y)
    F.cross_entropy(model(x), y).backward()
    W1, b1 = model[0].weight.detach(), model[0].bias.detach()
    h = torch.tanh(x @ W1.T + b1)
    delta = (F.one_hot(y, 3).double() / len(y)) @ B.T * (1 - h**2)
    torch.testing.assert_close(model[0].weight.grad, delta.T @ x, rtol=0, atol=1e-14)


@pytest.mark.parametrize("Rule", RULES)
def test_a_rule_for_a_model_on_meta_puts_everything_there_and_draws_nothing_on_the_cpu(Rule):
    model = three_layers().to("meta")
    before = torch.get_rng_state()
    rule = Rule(model)
    tensors = list(rule.parameters()) + list(rule.buffers())
    assert tensors or Rule is USF
    assert all(t.device.type == "meta" for t in tensors), [t.device for t in tensors]
    if Rule is BRSF:  # its magnitudes are redrawn at every forward pass, on the weights' device
        model(torch.empty(2, 4, device="meta"))
        assert all(t.device.type == "meta" for t in rule.buffers())
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("Rule", RULES)
def test_a_cuda_generator_draws_a_cuda_models_weights(Rule):
    model = three_layers().cuda()
    rule = Rule(model, generator=torch.Generator(device="cuda").manual_seed(0))
    assert all(t.is_cuda for t in list(rule.parameters()) + list(rule.buffers()))
    x, y = data()
    rule.observe_target(y.cuda())
    F.cross_entropy(model(x.cuda()), y.cuda()).backward()
    assert model[0].weight.grad is not None


@pytest.mark.parametrize("Rule", RULES)
def test_a_seed_passed_as_generator_is_refused_by_name(Rule):
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator, e.g. torch.Generator\(\).manual_seed\(0\)"):
        Rule(three_layers(), generator=0)


# --------------------------------------------------------------------------- defaults
def test_dfa_on_an_nn_module_defaults_to_xavier_uniform_feedback():
    model = three_layers()
    rule = DFA(model, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    blocks = [(torch.rand(6, 3, generator=g) * 2 - 1) * xavier(6, 3), (torch.rand(5, 3, generator=g) * 2 - 1) * xavier(5, 3)]
    torch.testing.assert_close(rule.B, torch.cat(blocks), rtol=0, atol=0)


def test_fa_and_dfa_on_the_mlp_keep_the_papers_feedback():
    model = MLP([4, 6, 5, 3])
    fa = FA(model, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    torch.testing.assert_close(fa.B1, (torch.rand(6, 5, generator=g) * 2 - 1) * 0.5, rtol=0, atol=0)
    dfa = DFA(MLP([4, 6, 5, 3]), generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    expected = torch.cat([torch.randn(6, 3, generator=g) * 1.9, torch.randn(5, 3, generator=g) * 1.9])
    torch.testing.assert_close(dfa.B, expected, rtol=0, atol=0)


def test_usf_scales_sign_w_like_biotorch():
    model = three_layers()
    rule = USF(model)
    for B, layer in zip(rule.feedback, [model[2], model[4]]):
        fan_out, fan_in = layer.weight.shape
        torch.testing.assert_close(B, math.sqrt(2 / (fan_in + fan_out)) * layer.weight.detach().T.sign())


def test_frsf_magnitudes_are_biotorchs_xavier_uniform_in_absolute_value():
    model = three_layers()
    rule = FRSF(model, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    R1 = ((torch.rand(5, 6, generator=g) * 2 - 1) * xavier(6, 5)).abs()
    torch.testing.assert_close(rule.feedback[0], (R1 * model[2].weight.detach().sign()).T, rtol=0, atol=1e-7)


def test_brsf_redraws_magnitudes_within_biotorchs_range():
    model = three_layers()
    rule = BRSF(model, generator=torch.Generator().manual_seed(4))
    x, y = data()
    model(x)
    B = rule.feedback[1]  # layer 3: W of shape (3, 5), B of W^T's (5, 3)
    assert 0 < B.abs().max() <= xavier(5, 3)


# --------------------------------------------------------------------------- DRTP's targets
@pytest.mark.parametrize("y,message", [
    (torch.tensor([0, 1, 3]), r"class indices must lie in 0..2 .*got values from 0 to 3"),
    (torch.tensor([0, -1, 2]), r"class indices must lie in 0..2 .*got values from -1 to 2"),
    (torch.tensor([0.0, 1.0, 2.0]), r"class indices must be integers \(y.long\(\) if they are whole numbers\)"),
    (torch.tensor([[0], [1], [2]]), r"got a column of shape \(3, 1\): pass y.squeeze\(1\)"),
], ids=["too-large", "negative", "float-codes", "column"])
def test_drtp_names_targets_it_cannot_project(y, message):
    rule = DRTP(two_layers())
    with pytest.raises(ValueError, match=message):
        rule.observe_target(y)


# --------------------------------------------------------------------------- documentation
@pytest.mark.parametrize("Rule", RULES)
def test_every_constructor_argument_is_documented_in_the_class_docstring(Rule):
    doc = inspect.getdoc(Rule)
    assert "Args:" in doc, f"{Rule.__name__} has no Args: section"
    args = doc.split("Args:")[1]
    for name in inspect.signature(Rule.__init__).parameters:
        if name != "self":
            assert f"\n{name}:" in "\n" + "\n".join(l.strip() for l in args.splitlines()), (Rule.__name__, name)
    assert "Initialize self" not in (inspect.getdoc(Rule.__init__) or "Initialize self")


def test_a_dfa_scale_means_the_same_distribution_on_an_mlp_and_on_a_sequential():
    """DFA(model, scale=s) is N(0, s^2) whatever the model; only the scale-less default differs."""
    from dfa_lib import DFA, MLP

    mlp = MLP([20, 300, 10])
    seq = torch.nn.Sequential(torch.nn.Linear(20, 300), torch.nn.Tanh(), torch.nn.Linear(300, 10))
    a = DFA(mlp, scale=0.5, generator=torch.Generator().manual_seed(0))
    b = DFA(seq, scale=0.5, generator=torch.Generator().manual_seed(0))
    assert a.dist == b.dist == "normal"
    torch.testing.assert_close(a.B, b.B)
