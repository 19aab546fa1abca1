"""Tests of dfa_lib.plasticity: learned rules applied to whole weight matrices (chapter 9)."""
import pytest
import torch
import torch.nn as nn

from dfa_lib import local
from dfa_lib.local import meta, plasticity as pl
from dfa_lib.data import logic_gate


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (fixture in conftest.py)


class DeltaRule(nn.Module):
    """A hand-written rule in the learned rules' interface: dw = lr * m * pre."""

    def __init__(self, lr):
        super().__init__()
        self.lr = lr

    def init_state(self, weights):
        return None

    def step_all(self, hs, weights, ms, state):
        return [self.lr * m * a.unsqueeze(1) for a, m in zip(hs[:-1], ms)], state


def setup(n=5, hidden=(3,), seed=0, steps=7):
    g = torch.Generator().manual_seed(seed)
    x, y = logic_gate("xor", coding="pm1")
    sizes = [2, *hidden, 1]
    w0 = local.init_nets(n, sizes, generator=g)
    fb = pl.init_net_feedback(n, sizes, generator=g)
    idx = local.sample_patterns(steps, n, generator=g)
    return x, y, w0, fb, idx


def test_local_features_values():
    pre = torch.tensor([[[1.0, -1.0]]])        # (1, 1, 2)
    post = torch.tensor([[[2.0], [0.0], [3.0]]])  # (1, 3, 1)
    w = torch.arange(6.0).view(1, 3, 2)
    m = torch.tensor([[[0.5], [-1.0], [2.0]]])
    f = pl.local_features(pre, post, w, m, "products")
    assert f.shape == (1, 3, 2, 8)
    i, j = 2, 1
    expected = [-1.0, 3.0, 5.0, 2.0, -3.0, -2.0, 6.0, -6.0]
    assert f[0, i, j].tolist() == expected
    assert pl.local_features(pre, post, w, m, "raw").shape == (1, 3, 2, 4)


def test_episode_with_delta_rule_equals_hand_loop():
    """run_episode wires pre, post, signals correctly: a DFA-like delta rule, by hand."""
    x, y, w0, fb, idx = setup()
    lr = 0.1
    w = meta.run_episode(DeltaRule(lr), w0, x, y, idx.shape[0], "feedback", fb, idx)
    for n in range(w0[0].shape[0]):
        W1, W2, B = w0[0][n].clone(), w0[1][n].clone(), fb[0][n]
        for k in range(idx.shape[0]):
            xi, ti = x[idx[k, n]], y[idx[k, n]]
            h = torch.relu(W1 @ xi)
            e = ti - torch.tanh(W2 @ h)
            dW2 = lr * torch.outer(e, h)
            dW1 = lr * torch.outer(B @ e, xi)
            W1, W2 = W1 + dW1, W2 + dW2
        assert torch.allclose(w[0][n], W1, atol=1e-6) and torch.allclose(w[1][n], W2, atol=1e-6)


def test_modulatory_inputs():
    e = -torch.tensor([[0.5], [-2.0]])  # e = y_hat - t; the rules see t - y_hat
    sizes = [2, 3, 1]
    fb = [torch.randn(2, 3, 1)]
    err = pl.modulatory_inputs("error", e, sizes)
    assert [m.shape for m in err] == [(2, 3, 1), (2, 1, 1)] and torch.all(err[0][1] == -2.0)
    rew = pl.modulatory_inputs("reward", e, sizes)
    assert torch.all(rew[0][0] == -0.25) and torch.all(rew[1][1] == -4.0)
    fbs = pl.modulatory_inputs("feedback", e, sizes, fb)
    assert torch.allclose(fbs[0][:, :, 0], fb[0][:, :, 0] * -e) and torch.equal(fbs[1][:, :, 0], -e)
    with pytest.raises(ValueError, match="feedback matrix"):
        pl.modulatory_inputs("feedback", e, sizes)
    with pytest.raises(ValueError, match="unknown modulation"):
        pl.modulatory_inputs("dopamine", e, sizes)


@pytest.mark.parametrize("Rule", [pl.MLPRule, pl.LSTMRule])
def test_untrained_rule_changes_nothing_and_gradients_flow(Rule):
    torch.manual_seed(0)
    x, y, w0, fb, idx = setup()
    rule = Rule()
    w = meta.run_episode(rule, w0, x, y, idx.shape[0], "feedback", fb, idx)
    assert all(torch.equal(a, b) for a, b in zip(w, w0)), "zero-initialised readout: no change"
    for p in rule.parameters():
        nn.init.normal_(p, std=0.3)
    loss = meta.episode_loss(meta.run_episode(rule, w0, x, y, idx.shape[0], "feedback", fb, idx), x, y)
    loss.backward()
    for name, p in rule.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_mlp_rule_bounded_and_same_for_every_synapse():
    torch.manual_seed(1)
    rule = pl.MLPRule(max_step=0.05)
    for p in rule.parameters():
        nn.init.normal_(p, std=2.0)
    pre, post = torch.randn(3, 1, 4), torch.randn(3, 5, 1)
    w, m = torch.randn(3, 5, 4), torch.randn(3, 5, 1)
    dw, _ = rule(pre, post, w, m)
    assert dw.shape == (3, 5, 4) and dw.abs().max() <= 0.05
    # one synapse alone gives the same change as inside the matrix: the rule is shared
    one, _ = rule(pre[1:2, :, 2:3], post[1:2, 3:4], w[1:2, 3:4, 2:3], m[1:2, 3:4])
    assert torch.allclose(one[0, 0, 0], dw[1, 3, 2], atol=1e-6)


def test_lstm_step_all_equals_per_layer_calls():
    torch.manual_seed(2)
    rule = pl.LSTMRule()
    for p in rule.parameters():
        nn.init.normal_(p, std=0.5)
    x, y, w0, fb, idx = setup(n=2, hidden=(4,))
    hs = [h[:, 0, :] for h in local.forward(w0, x[idx[0]].unsqueeze(1))]
    ms = pl.modulatory_inputs("feedback", hs[-1] - y[idx[0]], [2, 4, 1], fb)
    dws, state = rule.step_all(hs, w0, ms, rule.init_state(w0))
    assert state[0].shape == (sum(w.numel() for w in w0), rule.hidden)
    for l in range(2):
        dw_l, _ = rule(hs[l].unsqueeze(1), hs[l + 1].unsqueeze(2), w0[l], ms[l])
        assert torch.allclose(dws[l], dw_l, atol=1e-6)


def test_meta_train_deterministic_and_lowers_loss():
    def run():
        torch.manual_seed(0)
        rule = pl.MLPRule()
        hist = meta.meta_train(rule, "and", n_meta_steps=15, n_nets=16, n_steps=10, lr=3e-2,
                             generator=torch.Generator().manual_seed(1))
        return rule, hist
    r1, h1 = run()
    r2, h2 = run()
    assert h1 == h2
    assert all(torch.equal(a, b) for a, b in zip(r1.parameters(), r2.parameters()))
    assert min(h1[-5:]) < h1[0], "meta-training should lower the episode loss"
    k = meta.count_solved(r1, "and", n_nets=10, n_steps=10, generator=torch.Generator().manual_seed(9))
    assert isinstance(k, int) and 0 <= k <= 10


def test_es_meta_train_runs_and_changes_rule():
    torch.manual_seed(0)
    rule = pl.MLPRule()
    before = nn.utils.parameters_to_vector(rule.parameters()).clone()
    hist = meta.es_meta_train(rule, "xor", n_meta_steps=2, n_nets=4, n_steps=3, samples=4,
                            generator=torch.Generator().manual_seed(0))
    assert len(hist) == 2
    assert not torch.equal(before, nn.utils.parameters_to_vector(rule.parameters()))
    with pytest.raises(ValueError, match="samples"):
        meta.es_meta_train(rule, samples=3)


def test_rule_response_and_reference_rules():
    pre, post = torch.linspace(-1, 1, 5), torch.linspace(0, 1, 3)
    rule = pl.MLPRule()
    assert pl.rule_response(rule, pre, post, m=1.0).shape == (3, 5)
    ref = pl.reference_rules(pre, post, w=0.5, m=2.0)
    assert torch.allclose(ref["Hebb"][2], pre * 1.0)
    assert torch.allclose(ref["Oja"][2], 1.0 * (pre - 0.5))
    assert torch.allclose(ref["delta"][0], 2.0 * pre)


def test_clear_errors():
    x, y, w0, fb, idx = setup()
    with pytest.raises(ValueError, match="unknown feature set"):
        pl.MLPRule(features="cubic")
    with pytest.raises(ValueError, match="unknown modulation"):
        meta.run_episode(pl.MLPRule(), w0, x, y, idx.shape[0], "dopamine", fb, idx)
    with pytest.raises(ValueError, match="indices has shape"):
        meta.run_episode(pl.MLPRule(), w0, x, y, 3, "feedback", fb, idx)


def test_per_network_targets_equal_shared_targets():
    x, y, w0, fb, idx = setup()
    rule = DeltaRule(0.2)
    shared = meta.run_episode(rule, w0, x, y, idx.shape[0], "feedback", fb, idx)
    per_net = meta.run_episode(rule, w0, x, y.expand(5, 4, 1), idx.shape[0], "feedback", fb, idx)
    assert all(torch.allclose(a, b) for a, b in zip(shared, per_net))
    assert torch.allclose(meta.episode_loss(shared, x, y), meta.episode_loss(shared, x, y.expand(5, 4, 1)))
    with pytest.raises(ValueError, match="per-network targets"):
        meta.run_episode(rule, w0, x, y.expand(3, 4, 1), idx.shape[0], "feedback", fb, idx)


def test_delta_rule_has_a_one_layer_response_like_the_learned_rules():
    pre, post = torch.linspace(-1, 1, 5), torch.linspace(-1, 1, 3)
    dw = pl.rule_response(pl.DeltaRule(0.3), pre, post, w=0.5, m=2.0)
    assert dw.shape == (3, 5)
    assert torch.allclose(dw, 0.3 * 2.0 * pre.expand(3, 5))
    assert isinstance(pl.DeltaRule(), pl.PlasticityRule) and isinstance(pl.MLPRule(), pl.PlasticityRule)


# --------------------------------------------------------------------------- any device, any dtype
# No GPU needed: PyTorch's "meta" device stands in for one (a tensor made without a device
# lands on the CPU and cannot meet a meta tensor), and a float64 rule catches every tensor
# made in the default float32.  Loops that read numbers back (.item()) cannot run on meta;
# they are checked in float64 here and on a GPU where there is one.
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def on(device, tensors):
    return [t.to(device) for t in tensors]


@pytest.mark.parametrize("Rule", [pl.MLPRule, pl.LSTMRule, pl.DeltaRule])
def test_an_episode_runs_where_the_rule_and_networks_live(Rule):
    x, y, w0, fb, _ = setup()
    rule = Rule().to("meta")
    w = meta.run_episode(rule, on("meta", w0), x.to("meta"), y.to("meta"), 7, "feedback", on("meta", fb),
                         generator=torch.Generator().manual_seed(0))
    assert [t.device.type for t in w] == ["meta", "meta"]


def test_a_meta_batch_is_drawn_on_the_device_asked_for():
    for task in ["xor", ["and", "xor"]]:
        drawn = meta.sample_task(task, [2, 3, 1], 5, torch.Generator().manual_seed(0), 7, device="meta",
                                 dtype=torch.float64)
        x, y, w0, fb, idx = drawn
        assert {t.device.type for t in [x, y, *w0, *fb, idx]} == {"meta"}
        assert {t.dtype for t in [x, y, *w0, *fb]} == {torch.float64}


def test_a_meta_batch_on_a_device_holds_the_same_draws():
    cpu = meta.sample_task(["and", "xor"], [2, 3, 1], 5, torch.Generator().manual_seed(0), 7)
    moved = meta.sample_task(["and", "xor"], [2, 3, 1], 5, torch.Generator().manual_seed(0), 7,
                             device=torch.device("cpu"))
    flat = lambda d: [d[0], d[1], *d[2], *d[3], d[4]]
    assert all(torch.equal(a, b) for a, b in zip(flat(cpu), flat(moved)))


def test_feedback_matrices_on_a_device():
    fb = pl.init_net_feedback(3, [2, 4, 5, 1], generator=torch.Generator().manual_seed(0), device="meta")
    assert [(tuple(b.shape), b.device.type) for b in fb] == [((3, 4, 1), "meta"), ((3, 5, 1), "meta")]


@pytest.mark.parametrize("Rule", [pl.MLPRule, pl.LSTMRule, pl.DeltaRule])
def test_rule_response_on_the_device_of_its_grid(Rule):
    rule = Rule().to("meta")
    dw = pl.rule_response(rule, torch.linspace(-1, 1, 5, device="meta"), torch.linspace(0, 1, 3, device="meta"),
                          w=0.5, m=1.0)
    assert dw.shape == (3, 5) and dw.device.type == "meta"


def test_rule_response_in_float64():
    rule = pl.MLPRule().double()
    pre, post = torch.linspace(-1, 1, 5, dtype=torch.float64), torch.linspace(0, 1, 3, dtype=torch.float64)
    assert pl.rule_response(rule, pre, post, m=1.0).dtype == torch.float64


@pytest.mark.parametrize("Rule", [pl.MLPRule, pl.LSTMRule])
def test_meta_training_a_float64_rule(Rule):
    rule = Rule().double()
    hist = meta.meta_train(rule, "and", n_meta_steps=2, n_nets=4, n_steps=3, generator=torch.Generator().manual_seed(1))
    assert len(hist) == 2 and all(p.dtype == torch.float64 for p in rule.parameters())
    k = meta.count_solved(rule, "and", n_nets=4, n_steps=3, generator=torch.Generator().manual_seed(2))
    assert 0 <= k <= 4


def test_evolution_strategies_on_a_float64_rule():
    rule = pl.MLPRule().double()
    hist = meta.es_meta_train(rule, "xor", n_meta_steps=2, n_nets=4, n_steps=3, samples=4,
                              generator=torch.Generator().manual_seed(0))
    assert len(hist) == 2 and all(p.dtype == torch.float64 for p in rule.parameters())


@CUDA
def test_meta_training_on_a_gpu():
    rule = pl.LSTMRule().cuda()
    meta.meta_train(rule, "and", n_meta_steps=2, n_nets=4, n_steps=3, generator=torch.Generator().manual_seed(1))
    meta.es_meta_train(rule, "xor", n_meta_steps=1, n_nets=4, n_steps=3, samples=2,
                       generator=torch.Generator().manual_seed(0))
    assert 0 <= meta.count_solved(rule, "and", n_nets=4, n_steps=3) <= 4
    assert all(p.device.type == "cuda" for p in rule.parameters())
