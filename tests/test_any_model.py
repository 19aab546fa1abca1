"""Every rule on any model of Linear and Conv2d layers (dfa_lib.rules.graph), against hand derivations.

The identities that must hold exactly: the autograd path with BP's weights is autograd itself;
FA with B = W is BP (also on a conv net); uSF is BP when every |w| = 1; DFA on one hidden
layer with B = W_2^T is BP; the autograd path of FA and DFA on an MLP equals the MLP fast path.
"""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import assert_same_gradients as assert_same, gradients as grads, toy_batch as batch
from dfa_lib import BP, BRSF, DFA, DRTP, FA, FRSF, MLP, USF, Data, KolenPollack, Shallow, alignment, train
from dfa_lib.rules import learning_layers


pytestmark = pytest.mark.usefixtures("double_precision")  # float64 identities


def lenet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh()), nn.Flatten(),
        nn.Linear(4 * 2 * 2, 6), nn.Tanh(), nn.Linear(6, 3),
    )


def test_learning_layers_are_found_in_nested_sequentials_in_order():
    model = lenet()
    kinds = [type(l).__name__ for l in learning_layers(model)]
    assert kinds == ["Conv2d", "Conv2d", "Linear", "Linear"]
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        learning_layers(nn.Sequential(nn.Tanh()))


@pytest.mark.parametrize("image", [True, False])
def test_the_autograd_path_with_bp_is_autograd(image):
    model = lenet() if image else nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = batch(image=image)
    plain = grads(model, x, y)
    rule = BP(model, path="autograd")  # hooks on, but they cut nothing
    assert_same(grads(model, x, y, rule), plain)


def test_fa_with_b_equal_to_w_is_bp_on_a_conv_net():
    model, (x, y) = lenet(), batch()
    reference = grads(model, x, y)  # before the rule's hooks go on
    rule = FA(model)
    layers = learning_layers(model)
    rule.set_feedback([l.weight.detach().transpose(0, 1) for l in layers[1:]])
    assert_same(grads(model, x, y, rule), reference)


def test_fa_with_random_b_differs_from_bp_and_keeps_the_last_layer_exact():
    model, (x, y) = lenet(), batch()
    bp = grads(model, x, y)
    rule = FA(model)
    fa = grads(model, x, y, rule)
    assert not torch.allclose(fa[0], bp[0])
    assert_same(fa[-2:], bp[-2:])  # the output layer's own gradient needs no feedback


def test_usf_with_unit_magnitudes_is_bp():
    model, (x, y) = lenet(), batch()
    with torch.no_grad():
        for layer in learning_layers(model):
            layer.weight.copy_(torch.where(layer.weight >= 0, 1.0, -1.0) * 0.3)  # all |w| equal
    reference = grads(model, x, y)
    rule = USF(model, scale=math.sqrt(3))  # magnitude bound / sqrt(3) = 1: B = sign(W), unscaled
    # sign(W) = W / 0.3: the signal is BP's divided by 0.3 at every layer it crosses
    got = grads(model, x, y, rule)
    n_cross = [3, 3, 2, 2, 1, 1, 0, 0]  # layers above each parameter's layer
    assert_same([g * 0.3**k for g, k in zip(got, n_cross)], reference, atol=1e-12)


def test_frsf_is_fixed_and_brsf_redraws_its_magnitudes_every_batch():
    model, (x, y) = lenet(), batch()
    fr = FRSF(model, generator=torch.Generator().manual_seed(0))
    before = fr.feedback[0].clone()
    grads(model, x, y, fr)
    assert torch.equal(fr.feedback[0], before)
    fr.detach()
    br = BRSF(model, generator=torch.Generator().manual_seed(0))
    first = grads(model, x, y, br)[0]
    second = grads(model, x, y, br)[0]
    assert not torch.allclose(first, second)  # same weights and batch, new magnitudes
    for B, layer in zip(br.feedback, learning_layers(model)[1:]):
        assert torch.equal(B.sign(), layer.weight.transpose(0, 1).sign())


@pytest.mark.parametrize("Rule,loss", [(DFA, "ce"), (FA, "bce"), (BP, "bce"), (Shallow, "bce"), (DFA, "mse")])
def test_the_autograd_path_equals_the_mlp_fast_path(Rule, loss):
    """MLP is one case of the general mechanism: its hand-written fast path gives the same weights."""
    torch.manual_seed(0)
    fast_model = MLP([7, 6, 5, 3], hidden="tanh")
    slow_model = copy.deepcopy(fast_model)

    def kw():  # the same feedback draw for both rules
        return {"generator": torch.Generator().manual_seed(2)} if Rule in (FA, DFA) else {}

    fast, slow = Rule(fast_model, **kw()), Rule(slow_model, path="autograd", **kw())
    assert fast.uses_fast_path(fast_model) and not slow.uses_fast_path(slow_model)
    if Rule is DFA:
        assert torch.equal(fast.B, slow.B)
    data = Data(*batch(40, image=False), *batch(10, seed=3, image=False))
    for model, rule in [(fast_model, fast), (slow_model, slow)]:
        train(model, rule, data, epochs=2, batch_size=8, lr=0.2, loss=loss,
              generator=torch.Generator().manual_seed(4), progress=False)
    for p, q in zip(fast_model.parameters(), slow_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_dfa_one_hidden_layer_with_b_equal_to_w2_transposed_is_bp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = batch(image=False)
    reference = grads(model, x, y)
    rule = DFA(model)
    rule.set_feedback([model[2].weight.detach().T])
    assert_same(grads(model, x, y, rule), reference)


def test_dfa_on_a_conv_net_by_hand():
    """Every block output gets e @ B_l^T reshaped; autograd carries it through tanh and pooling."""
    model, (x, y) = lenet(), batch()
    rule = DFA(model, example_input=x[:1], generator=torch.Generator().manual_seed(5))
    got = grads(model, x, y, rule)
    # by hand: run the blocks with detached inputs and inject the signals
    conv1, conv2, fc1, fc2 = learning_layers(model)
    h1 = F.max_pool2d(torch.tanh(conv1(x)), 2)                     # block 1 output (3, 4, 4)
    h2 = torch.tanh(conv2(h1.detach())).flatten(1)                  # block 2 output, flattened (16)
    h3 = torch.tanh(fc1(h2.detach()))                               # block 3 output (6)
    out = fc2(h3.detach())
    e = (F.softmax(out, 1) - F.one_hot(y, 3)) / len(x)
    B1, B2, B3 = rule.feedback
    assert B1.shape == (3 * 4 * 4, 3) and B2.shape == (16, 3) and B3.shape == (6, 3)
    model.zero_grad(set_to_none=True)
    torch.autograd.backward([h1, h2, h3, out], [(e @ B1.T).reshape(h1.shape), e @ B2.T, e @ B3.T, e])
    assert_same(got, [p.grad for p in model.parameters()])


@pytest.mark.parametrize("Rule", [BP, FA, DFA, USF])
def test_max_pooling_before_tanh_is_the_same_network(Rule):
    """Chapter 11 pools before tanh (a quarter of the tanh work): tanh is increasing, so it commutes
    with max pooling, and every rule gives the same scores and the same gradients in either order."""
    def net(pool_first):
        torch.manual_seed(0)
        act = [nn.MaxPool2d(2), nn.Tanh()] if pool_first else [nn.Tanh(), nn.MaxPool2d(2)]
        return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), *act, nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(),
                             nn.Linear(4 * 2 * 2, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = batch()
    results = []
    for pool_first in (False, True):
        model = net(pool_first)
        rule = Rule() if Rule is BP else Rule(model, generator=torch.Generator().manual_seed(5),
                                               **({"example_input": x[:1]} if Rule is DFA else {}))
        results.append((model(x).detach(), grads(model, x, y, rule)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-12)
    assert_same(results[0][1], results[1][1])


@pytest.mark.parametrize("Rule", [DFA, DRTP])
def test_direct_signals_take_a_channels_last_block_s_layout(Rule):
    """On a channels-last (NHWC) model a conv block's signal comes out channels-last too (B's rows
    reordered to H, W, C), with the same values: the gradients equal the plain-layout model's."""
    x, y = batch()
    results = []
    for channels_last in (False, True):
        model = lenet()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        rule = Rule(model, example_input=x[:1], generator=torch.Generator().manual_seed(5))
        kept = {}
        hook = learning_layers(model)[1].register_forward_pre_hook(lambda m, args: kept.setdefault("x", args[0]))
        signals = []
        original = rule.direct_signals
        rule.direct_signals = lambda source, blocks: signals.extend(original(source, blocks)) or tuple(signals)
        results.append(grads(model, x, y, rule))
        hook.remove()
        assert signals[0].shape == kept["x"].shape
        innermost = 1 if channels_last else 3  # channels-last: C varies fastest in memory, as in the block output
        assert kept["x"].stride()[innermost] == 1 and signals[0].stride()[innermost] == 1
    assert_same(results[0], results[1])


def test_dfa_on_a_conv_net_needs_an_example_input():
    with pytest.raises(ValueError, match="example_input"):
        DFA(lenet())


def test_drtp_update_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = batch(image=False)
    rule = DRTP(model, generator=torch.Generator().manual_seed(1))
    got = grads(model, x, y, rule)
    W1, W2, W3 = (model[i].weight.detach() for i in (0, 2, 4))
    t = F.one_hot(y, 3).double()
    B1, B2 = rule.feedback
    h1 = torch.tanh(x @ W1.T + model[0].bias.detach())
    h2 = torch.tanh(h1 @ W2.T + model[2].bias.detach())
    out = h2 @ W3.T + model[4].bias.detach()
    n = len(x)
    d1 = (t @ B1.T / n) * (1 - h1**2)                 # the target, not the error, projected
    d2 = (t @ B2.T / n) * (1 - h2**2)
    e = (F.softmax(out, 1) - t) / n                    # the output layer learns from its error
    expected = [d1.T @ x, d1.sum(0), d2.T @ h1, d2.sum(0), e.T @ h2, e.sum(0)]
    assert_same(got, expected, atol=1e-12)
    with pytest.raises(RuntimeError, match="observe_target"):
        F.cross_entropy(model(x), y).backward()


def test_shallow_trains_only_the_last_layer_on_any_model():
    model, (x, y) = lenet(), batch()
    rule = Shallow(model)
    got = grads(model, x, y, rule)
    assert all(g is None for g in got[:-2]) and all(g is not None for g in got[-2:])


def test_kolen_pollack_gives_b_w_s_gradient_and_b_converges_to_w():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    rule = KolenPollack(model, weight_decay=0.05, generator=torch.Generator().manual_seed(1))
    x, y = batch(64, image=False)
    grads(model, x, y, rule)
    for B, layer in zip(rule.feedback_parameters, learning_layers(model)[1:]):
        decayed_w_grad = layer.weight.grad - 0.05 * layer.weight.detach()
        torch.testing.assert_close(B.grad - 0.05 * B.detach(), decayed_w_grad)
    start = alignment(model, rule, x, y)["weight"]
    gaps = [(layer.weight - B).detach().clone() for B, layer in zip(rule.feedback_parameters, learning_layers(model)[1:])]
    teacher = torch.randn(7, 3, generator=torch.Generator().manual_seed(9))
    opt = torch.optim.SGD(list(model.parameters()) + list(rule.parameters()), lr=0.5)
    for step in range(400):
        xb, _ = batch(32, seed=step, image=False)
        opt.zero_grad()
        F.cross_entropy(model(xb), (xb @ teacher).argmax(1)).backward()
        opt.step()
    # the same gradient for W and B: their difference only decays, by (1 - lr * weight_decay) a step
    for gap, B, layer in zip(gaps, rule.feedback_parameters, learning_layers(model)[1:]):
        torch.testing.assert_close(layer.weight - B, gap * (1 - 0.5 * 0.05) ** 400, rtol=1e-6, atol=1e-12)
    end = alignment(model, rule, x, y)["weight"]
    assert min(start) > 60 and max(end) < 5, (start, end)


def test_alignment_of_bp_equivalents_is_zero_and_of_random_feedback_is_not():
    model, (x, y) = lenet(), batch()
    rule = FA(model)
    layers = learning_layers(model)
    rule.set_feedback([l.weight.detach().transpose(0, 1) for l in layers[1:]])
    a = alignment(model, rule, x, y)
    assert max(a["signal"] + a["update"] + a["weight"]) < 1e-5
    rule.detach()
    dfa = DFA(model, example_input=x[:1])
    a = alignment(model, dfa, x, y)
    assert len(a["signal"]) == 3 and min(a["signal"]) > 10 and a["weight"] == [None] * 3
    assert all(p.grad is None for p in model.parameters())  # alignment writes no .grad


def test_a_sequential_with_dropout_and_batchnorm_trains_in_both_modes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 3))
    x, y = batch(32)
    data = Data(x, y, *batch(8, seed=2))
    for Rule in (BP, FA, USF, BRSF, KolenPollack, Shallow):
        rule = Rule(model) if Rule is not BP else BP()
        h = train(model, rule, data, epochs=2, batch_size=8, lr=0.05, loss="ce", progress=False)
        assert len(h.test_error) == 3 and model.training  # evaluated in eval mode, trained in train mode
        rule.detach()
    for Rule in (DFA, DRTP):
        rule = Rule(model, example_input=x[:1])
        train(model, rule, data, epochs=1, batch_size=8, lr=0.05, loss="ce", progress=False)
        rule.detach()


def test_a_rule_attached_to_one_model_refuses_another():
    a, b = lenet(0), lenet(1)
    rule = FA(a)
    x, y = batch(8)
    with pytest.raises(ValueError, match="attached to another model"):
        train(b, rule, Data(x, y, x, y), epochs=1, progress=False)
    with pytest.raises(RuntimeError, match="already attached"):
        rule.attach(b)


def test_the_own_loop_needs_no_extra_line():
    """A plain PyTorch loop trains with DFA once the rule is built: loss.backward(); opt.step()."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 3))
    x, _ = batch(128)
    y = (x.flatten(1) @ torch.randn(64, 3)).argmax(1)  # a task a network can learn: a linear teacher
    DFA(model, scale=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = F.cross_entropy(model(x), y).item()
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert F.cross_entropy(model(x), y).item() < 0.5 * first


@pytest.mark.parametrize("Rule", [FA, USF, FRSF, KolenPollack, Shallow, DFA, DRTP])
def test_a_model_with_its_rule_survives_a_save_and_load(Rule, tmp_path):
    model, (x, y) = lenet(), batch()
    rule = Rule(model, example_input=x[:1]) if Rule in (DFA, DRTP) else Rule(model)
    before = grads(model, x, y, rule)
    torch.save((model, rule), tmp_path / "run.pt")
    model2, rule2 = torch.load(tmp_path / "run.pt", weights_only=False)
    assert_same(grads(model2, x, y, rule2), before)
    if Rule is KolenPollack:  # the gradient hooks are back, once
        B, w = rule2.feedback_parameters[0], learning_layers(model2)[1].weight
        torch.testing.assert_close(B.grad - rule2.weight_decay * B.detach(), w.grad - rule2.weight_decay * w.detach())


def test_kolen_pollack_with_decoupled_decay_under_adamw_shrinks_the_gap_by_the_decay_alone():
    """Chapter 10's recipe for Adam: weight_decay=0 in the rule, AdamW's decoupled decay on W and B."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    rule = KolenPollack(model, weight_decay=0.0, generator=torch.Generator().manual_seed(1))
    layers = learning_layers(model)[1:]
    gaps = [(layer.weight - B).detach().clone() for B, layer in zip(rule.feedback_parameters, layers)]
    lr, decay, steps = 1e-2, 2.0, 50
    opt = torch.optim.AdamW(list(model.parameters()) + list(rule.parameters()), lr=lr, weight_decay=decay)
    teacher = torch.randn(7, 3, generator=torch.Generator().manual_seed(9))
    for step in range(steps):
        xb, _ = batch(32, seed=step, image=False)
        opt.zero_grad()
        F.cross_entropy(model(xb), (xb @ teacher).argmax(1)).backward()
        opt.step()
    for gap, B, layer in zip(gaps, rule.feedback_parameters, layers):
        torch.testing.assert_close(layer.weight - B, gap * (1 - lr * decay) ** steps, rtol=1e-6, atol=1e-12)


class CachedForwardNet(nn.Module):
    """Not an MLP (no subclass), but it offers what the fast path works on: sizes, n_hidden, layers,
    activation, check_input, forward_cached and hidden_derivative."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp
        self.sizes, self.n_hidden, self.activation = mlp.sizes, mlp.n_hidden, mlp.activation

    def check_input(self, x):
        self.mlp.check_input(x)

    @property
    def layers(self):
        return self.mlp.layers

    def forward(self, x):
        return self.mlp(x)

    def forward_cached(self, x):
        return self.mlp.forward_cached(x)

    def hidden_derivative(self, cache, l):
        return self.mlp.hidden_derivative(cache, l)


def test_the_fast_path_is_chosen_by_what_a_model_offers_not_by_its_type():
    from dfa_lib.models import caches_forward
    from dfa_lib.seeds import SeedBatch

    torch.manual_seed(0)
    mlp = MLP([7, 6, 5, 3], hidden="tanh")
    assert caches_forward(mlp) and caches_forward(SeedBatch([mlp, copy.deepcopy(mlp)]))
    assert not caches_forward(nn.Sequential(nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)))
    twin = CachedForwardNet(copy.deepcopy(mlp))
    assert caches_forward(twin)
    data = Data(*batch(40, image=False), *batch(10, seed=3, image=False))
    runs = []
    for model in (mlp, twin):
        rule = DFA(model, generator=torch.Generator().manual_seed(2))
        assert rule.uses_fast_path(model)
        assert (rule.dist, rule.scale) == ("normal", 1.9)  # DFA's defaults on an MLP (the seed's), not Xavier's
        runs.append(train(model, rule, data, epochs=2, batch_size=8, lr=0.2, loss="bce",
                          generator=torch.Generator().manual_seed(4), progress=False))
    assert runs[0].test_loss == runs[1].test_loss
    for p, q in zip(mlp.parameters(), twin.parameters()):
        assert torch.equal(p, q)
