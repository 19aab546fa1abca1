"""Tests of dfa_lib.local: the Hebbian rules of chapter 8 against hand-derived updates and
against seed 004's own one-network-at-a-time code."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dfa_lib import local, stats
from dfa_lib.data import logic_gate


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (fixture in conftest.py)


# --------------------------------------------------------------------------- seed 004's code
class SeedToyNetwork(nn.Module):
    """Seed 004's ``ToyNetwork`` (its rules un-commented), used as the reference."""

    def __init__(self, n_input, hidden_layer_sizes, n_output):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(n_input, hidden_layer_sizes[0], bias=False)])
        self.layers.extend([nn.Linear(h1, h2, bias=False) for h1, h2 in zip(hidden_layer_sizes, hidden_layer_sizes[1:])])
        self.layers.append(nn.Linear(hidden_layer_sizes[-1], n_output, bias=False))

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return torch.tanh(self.layers[-1](x))

    def supervised_hebbian_update(self, input, output, learning_rate):
        y = output
        for layer_no in range(len(self.layers) - 1, 0, -1):
            x = input
            for layer in self.layers[:layer_no]:
                x = torch.relu(layer(x))
            deltaw = learning_rate * torch.mm(y.t(), x)
            self.layers[layer_no].weight.data += deltaw
            self.layers[layer_no].weight.data = torch.clamp(self.layers[layer_no].weight.data, min=-1, max=1)
            y = x

    def unsupervised_hebbian_update(self, input, learning_rate):
        x = input
        for layer in self.layers:
            y = layer(x)
            deltaw = learning_rate * x.t().mm(y).t()
            layer.weight.data += deltaw
            layer.weight.data = layer.weight.data.clamp(-1, 1)
            x = layer(x)

    def semisupervised_hebbian_update(self, input, output, learning_rate):
        binarized_prediction = (self.forward(input) > 0).float()
        binarized_target = (output > 0).float()
        loss = F.mse_loss(binarized_prediction, binarized_target)
        global_context = loss.item()
        global_context = 1 - 2 * global_context
        global_context = -(2 * binarized_prediction - 1) * global_context
        x = input
        for layer in self.layers:
            y = layer(x)
            deltaw = learning_rate * x.t().mm(y).t() * global_context
            layer.weight.data += deltaw
            layer.weight.data = layer.weight.data.clamp(-1, 1)
            x = y

    def hebbian_forward(self, input, lr, max_weight=1):  # from seed's FeedForwardNetwork
        x = input
        for layer in self.layers:
            y = torch.sigmoid(layer(x))
            layer.weight.data += lr * torch.mm(y.t(), x) * (max_weight - torch.abs(layer.weight.data))
            x = y


def seed_net_from(weights, n):
    """Seed network whose weights are network ``n`` of the batched networks."""
    sizes = [weights[0].shape[2]] + [w.shape[1] for w in weights]
    net = SeedToyNetwork(sizes[0], sizes[1:-1], sizes[-1])
    for layer, w in zip(net.layers, weights):
        layer.weight.data = w[n].clone()
    return net


def pop(sizes, n=5, seed=0):
    return local.init_nets(n, sizes, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- hand-derived updates
def test_supervised_step_2_3_1_by_hand():
    W1 = torch.tensor([[0.5, -0.2], [-0.3, 0.4], [0.1, 0.1]])
    W2 = torch.tensor([[0.2, -0.1, 0.3]])
    x, t, lr = torch.tensor([1.0, -1.0]), torch.tensor([-1.0]), 0.1
    h = [max(0.0, float(W1[i, 0] * x[0] + W1[i, 1] * x[1])) for i in range(3)]
    expected_W2 = W2.clone()
    for j in range(3):
        expected_W2[0, j] = min(1.0, max(-1.0, float(W2[0, j] + lr * t[0] * h[j])))
    new = local.supervised_hebbian_step([W1[None], W2[None]], x[None, None], t[None, None], lr=lr)
    assert torch.allclose(new[1][0], expected_W2)
    assert torch.equal(new[0][0], W1), "the input layer must stay as initialised"


def test_supervised_step_hidden_layer_by_hand():
    g = torch.Generator().manual_seed(3)
    W1, W2, W3 = (torch.rand(3, 2, generator=g) - 0.5), (torch.rand(4, 3, generator=g) - 0.5), (torch.rand(1, 4, generator=g) - 0.5)
    x, t, lr = torch.tensor([-1.0, 1.0]), torch.tensor([1.0]), 0.5
    h1 = torch.relu(W1 @ x)
    h2 = torch.relu(W2 @ h1)
    e3 = torch.empty_like(W3)
    e2 = torch.empty_like(W2)
    for i in range(1):
        for j in range(4):
            e3[i, j] = min(1.0, max(-1.0, float(W3[i, j] + lr * t[i] * h2[j])))
    for i in range(4):
        for j in range(3):
            e2[i, j] = min(1.0, max(-1.0, float(W2[i, j] + lr * h2[i] * h1[j])))
    new = local.supervised_hebbian_step([W1[None], W2[None], W3[None]], x[None, None], t[None, None], lr=lr)
    assert torch.allclose(new[2][0], e3) and torch.allclose(new[1][0], e2)
    assert torch.equal(new[0][0], W1)


def test_soft_bounded_step_by_hand():
    W = torch.tensor([[0.5, -0.9]])
    x = torch.tensor([1.0, 1.0])
    y = torch.sigmoid(W @ x)
    expected = W + 0.1 * torch.outer(y, x) * (1 - W.abs())
    new = local.soft_bounded_hebbian_step([W[None]], x[None, None], lr=0.1)
    assert torch.allclose(new[0][0], expected)


# --------------------------------------------------------------------------- batched nets == seed, one net at a time
@pytest.mark.parametrize("hidden", [[3], [4, 3]])
@pytest.mark.parametrize("rule", ["supervised", "unsupervised", "semisupervised_seed", "soft_bounded"])
def test_batched_nets_equal_separate_seed_runs(rule, hidden):
    x, y = logic_gate("xor", coding="pm1")
    n, n_iters, lr = 6, 25, 0.05
    w0 = pop([2, *hidden, 1], n=n, seed=1)
    idx = local.sample_patterns(n_iters, n, generator=torch.Generator().manual_seed(2))
    name, kw = (rule, {}) if rule != "semisupervised_seed" else ("semisupervised", {"modulation": "seed"})
    w = local.train_nets(w0, x, y, rule=name, n_iters=n_iters, lr=lr, indices=idx, **kw)
    for k in range(n):
        net = seed_net_from(w0, k)
        for it in range(n_iters):
            xi, yi = x[idx[it, k]].unsqueeze(0), y[idx[it, k]].unsqueeze(0)
            if rule == "supervised":
                net.supervised_hebbian_update(xi, yi, lr)
            elif rule == "unsupervised":
                net.unsupervised_hebbian_update(xi, lr)
            elif rule == "semisupervised_seed":
                net.semisupervised_hebbian_update(xi, yi, lr)
            else:
                net.hebbian_forward(xi, lr)
        for l, layer in enumerate(net.layers):
            assert torch.allclose(w[l][k], layer.weight.data, atol=1e-6), f"net {k}, layer {l} differs from the seed's code"


def test_reward_modulation_differs_from_seed_sign():
    x, y = logic_gate("and", coding="pm1")
    w0 = pop([2, 3, 1], n=4)
    a = local.semisupervised_hebbian_step(w0, x[:1], y[:1], lr=0.1, modulation="reward")
    b = local.semisupervised_hebbian_step(w0, x[:1], y[:1], lr=0.1, modulation="seed")
    pred_pos = local.predict(w0, x[:1])[:, 0, 0]
    # the seed's extra factor -(2p - 1) flips the sign exactly when the answer is positive
    for k in range(4):
        d_a, d_b = a[0][k] - w0[0][k], b[0][k] - w0[0][k]
        sign = -1.0 if pred_pos[k] else 1.0
        assert torch.allclose(d_b, sign * d_a, atol=1e-7)


# --------------------------------------------------------------------------- properties
def test_clipping_and_frozen_input_layer():
    x, y = logic_gate("and", coding="pm1")
    w0 = pop([2, 10, 10, 1], n=8)
    w = local.train_nets(w0, x, y, "supervised", n_iters=200, lr=1.0, generator=torch.Generator().manual_seed(0))
    for l in (1, 2):
        assert w[l].abs().max() <= 1.0
        assert (w[l].abs() == 1.0).any(), "with lr = 1 some weights must hit the bound"
    assert torch.equal(w[0], w0[0])


def test_hidden_to_hidden_weights_saturate_at_plus_one():
    # the reason two hidden layers fail (chapter 8): h2 h1^T >= 0 pushes W2 up to +1
    x, y = logic_gate("and", coding="pm1")
    w = local.train_nets(pop([2, 10, 10, 1], n=20), x, y, "supervised", n_iters=1000, lr=0.01,
                               generator=torch.Generator().manual_seed(0))
    assert (w[1] == 1.0).float().mean() > 0.5


def test_success_on_hand_built_and_network():
    x, y = logic_gate("and", coding="pm1")
    # units relu(x1 + x2) and relu(-x1 - x2), output tanh(h1 - h2): +2 on (1, 1), -2 on (-1, -1)
    # and exactly 0 on the mixed patterns, which "> 0" reads as the negative class.
    W1 = torch.tensor([[[1.0, 1.0], [-1.0, -1.0]]])
    W2 = torch.tensor([[[1.0, -1.0]]])
    ok = local.success([W1, W2], x, y)
    assert ok.tolist() == [True]  # out is 0 (read as "not > 0" = False) on the mixed patterns
    assert local.success([W1, -W2], x, y).tolist() == [False]
    xo, yo = logic_gate("xor", coding="pm1")
    assert local.success([W1, W2], xo, yo).tolist() == [False]


def test_wilson_interval_known_values():
    lo, hi = stats.wilson_interval(0, 100)
    assert lo == 0.0 and math.isclose(hi, 1.959964**2 / (100 + 1.959964**2), rel_tol=1e-5)
    lo, hi = stats.wilson_interval(73, 100)
    assert math.isclose(lo, 0.63569, abs_tol=1e-4) and math.isclose(hi, 0.80734, abs_tol=1e-4)
    lo, hi = stats.wilson_interval(100, 100)
    assert hi == 1.0 and math.isclose(lo, 100 / (100 + 1.959964**2), rel_tol=1e-5)
    assert stats.intervals_overlap((0.1, 0.3), (0.3, 0.5))
    assert not stats.intervals_overlap((0.1, 0.29), (0.3, 0.5))


def test_init_matches_nn_linear_bounds():
    w = local.init_nets(50, [2, 100, 1], generator=torch.Generator().manual_seed(0))
    assert w[0].abs().max() <= 1 / math.sqrt(2) and w[0].abs().max() > 0.95 / math.sqrt(2)
    assert w[1].abs().max() <= 0.1 and w[1].shape == (50, 1, 100)


def test_run_setting_is_deterministic():
    a, wa = local.run_setting("xor", [10], 50, n_nets=20, generator=torch.Generator().manual_seed(5), return_weights=True)
    b, wb = local.run_setting("xor", [10], 50, n_nets=20, generator=torch.Generator().manual_seed(5), return_weights=True)
    assert a == b and all(torch.equal(p, q) for p, q in zip(wa, wb))


# --------------------------------------------------------------------------- any device
# PyTorch's "meta" device stands in for a GPU: a tensor made without a device lands on the CPU
# and cannot meet a meta tensor.  Counting successes reads numbers back, which meta cannot.
@pytest.mark.parametrize("rule", sorted(local.STEPS))
def test_hebbian_training_runs_where_the_networks_live(rule):
    x, y = logic_gate("xor", coding="pm1", device="meta")
    w0 = local.init_nets(5, [2, 3, 3, 1], generator=torch.Generator().manual_seed(0), device="meta")
    w = local.train_nets(w0, x, y, rule=rule, n_iters=4, generator=torch.Generator().manual_seed(1))
    assert [t.device.type for t in w] == ["meta"] * 3


def test_run_setting_on_a_device_draws_the_same_networks():
    runs = [local.run_setting("xor", [10], 50, n_nets=20, generator=torch.Generator().manual_seed(5),
                              return_weights=True, **device) for device in [{}, {"device": torch.device("cpu")}]]
    (a, wa), (b, wb) = runs
    assert a == b and all(torch.equal(p, q) for p, q in zip(wa, wb))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_run_setting_on_a_gpu_counts_as_on_the_cpu():
    cpu = local.run_setting("and", [10], 100, n_nets=50, generator=torch.Generator().manual_seed(3))
    gpu = local.run_setting("and", [10], 100, n_nets=50, generator=torch.Generator().manual_seed(3), device="cuda")
    assert abs(cpu - gpu) <= 2  # same networks; float rounding may tip a borderline one


# --------------------------------------------------------------------------- clear errors
def test_clear_errors():
    x, y = logic_gate("xor", coding="pm1")
    w = pop([2, 3, 1])
    with pytest.raises(ValueError, match="unknown rule"):
        local.train_nets(w, x, y, rule="hebbb")
    with pytest.raises(ValueError, match="expected"):
        local.forward(w, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="inputs"):
        local.train_nets(pop([3, 3, 1]), x, y)
    with pytest.raises(ValueError, match="weights\\[1\\] expects"):
        local.forward([w[0], torch.zeros(5, 1, 4)], x)
    with pytest.raises(ValueError, match="modulation"):
        local.semisupervised_hebbian_step(w, x, y, modulation="sign")
    with pytest.raises(ValueError, match="unknown activation"):
        local.forward(w, x, hidden="gelu")
    with pytest.raises(ValueError, match="k must lie"):
        stats.wilson_interval(101, 100)
    with pytest.raises(ValueError, match="sizes"):
        local.init_nets(3, [2])
