"""The feedback rules against identities that must hold exactly."""
import itertools

import pytest
import torch

from dfa_lib import BP, DFA, FA, MLP, Shallow, compute_grads, output_error, per_example_loss


pytestmark = pytest.mark.usefixtures("double_precision")  # float64 identities


# "Exactly" means: equal up to float64 rounding (the same sums may be taken through
# differently laid-out matrices, which changes the last bit).
EXACT = dict(rtol=1e-12, atol=1e-15)

LOSSES = ["bce", "ce", "mse"]  # sigmoid, softmax and identity on the logits
SIZES = [[5, 7, 3], [4, 6, 5, 2], [3, 8, 8, 8, 4]]
HIDDEN = ["tanh", "sigmoid", "relu", "identity"]


def batch(model, n=11, seed=0, one_hot=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, model.sizes[0], generator=g)
    if one_hot:
        y = torch.nn.functional.one_hot(torch.randint(0, model.sizes[-1], (n,), generator=g), model.sizes[-1]).double()
    else:
        y = torch.randn(n, model.sizes[-1], generator=g)
    return x, y


def rule_grads(model, rule, x, y, loss):
    cache = model.forward_cached(x)
    e = output_error(loss, cache.logits, y)
    compute_grads(model, rule, cache, e, scale=1.0 / len(x))
    return [p.grad.clone() if p.grad is not None else None for p in model.parameters()]


def autograd_grads(model, x, y, loss):
    model.zero_grad(set_to_none=True)
    per_example_loss(loss, model(x), y).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("sizes,hidden,loss", list(itertools.product(SIZES, HIDDEN, LOSSES)))
def test_bp_equals_autograd(sizes, hidden, loss):
    torch.manual_seed(1)
    model = MLP(sizes, hidden=hidden)
    x, y = batch(model, one_hot=loss != "mse")
    expected = autograd_grads(model, x, y, loss)
    got = rule_grads(model, BP(), x, y, loss)
    for g, want in zip(got, expected):
        torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hidden", HIDDEN)
def test_bce_and_ce_on_logits_give_torchs_gradients(hidden):
    """The MLP returns logits: the library's BP under "bce" is torch's BCEWithLogitsLoss (summed over
    outputs, averaged over rows), under "ce" torch's cross_entropy, both through plain autograd."""
    torch.manual_seed(7)
    model = MLP([5, 7, 6, 3], hidden=hidden)
    x, y = batch(model, n=13)
    for loss, torch_loss in [
        ("bce", lambda logits: torch.nn.BCEWithLogitsLoss(reduction="sum")(logits, y) / len(x)),
        ("ce", lambda logits: torch.nn.functional.cross_entropy(logits, y.argmax(1))),
    ]:
        model.zero_grad(set_to_none=True)
        torch_loss(model(x)).backward()
        expected = [p.grad.clone() for p in model.parameters()]
        for g, want in zip(rule_grads(model, BP(), x, y, loss), expected):
            torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)
        model.zero_grad(set_to_none=True)
        per_example_loss(loss, model(x), y).mean().backward()  # the library's loss through autograd: the same
        for p, want in zip(model.parameters(), expected):
            torch.testing.assert_close(p.grad, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_output_error_is_the_matched_pairs_y_hat_minus_y_bit_for_bit(dtype):
    """e = dl/da_L is sigmoid(a) - y, softmax(a) - y, a - y: the very values the fast path always sent back."""
    torch.manual_seed(8)
    a, y = 5 * torch.randn(9, 4, dtype=dtype), torch.rand(9, 4, dtype=dtype).round()
    assert torch.equal(output_error("bce", a, y), torch.sigmoid(a) - y)
    assert torch.equal(output_error("ce", a, y), torch.softmax(a, dim=-1) - y)
    assert torch.equal(output_error("mse", a, y), a - y)
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (9,)), 4).to(dtype)  # ce's derivative needs rows summing to 1
    with torch.enable_grad():  # and it is the loss's derivative
        for loss in LOSSES:
            logits = a.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(per_example_loss(loss, logits, y).sum(), logits)
            torch.testing.assert_close(g, output_error(loss, a, y))


def test_the_training_step_sends_back_sigmoid_of_the_logits_minus_the_target():
    """train()'s fast path: the error each step hands the rule is exactly sigmoid(a_L) - y under "bce"."""
    from dfa_lib import Data, train

    torch.manual_seed(9)
    model = MLP([5, 7, 3], hidden="tanh")
    x, y = batch(model, n=12)
    seen = []

    def on_step(history, epoch, step, model, cache, e, signals):
        seen.append(torch.equal(e, torch.sigmoid(cache.logits) - y))

    train(model, DFA(model), Data(x, y, x, y), epochs=2, batch_size=None, lr=0.1, loss="bce", shuffle=False,
          on_step=on_step, progress=False)
    assert seen == [True, True]


@pytest.mark.parametrize("sizes,hidden", list(itertools.product(SIZES, HIDDEN)))
def test_fa_with_transposed_forward_weights_is_bp(sizes, hidden):
    torch.manual_seed(2)
    model = MLP(sizes, hidden=hidden)
    fa = FA(model)
    fa.set_feedback([model.layers[l].weight.T.clone() for l in range(1, len(model.layers))])
    x, y = batch(model)
    bp = rule_grads(model, BP(), x, y, "bce")
    got = rule_grads(model, fa, x, y, "bce")
    for g, want in zip(got, bp):
        torch.testing.assert_close(g, want, **EXACT)


@pytest.mark.parametrize("hidden", HIDDEN)
def test_dfa_one_hidden_layer_with_transposed_output_weights_is_bp(hidden):
    torch.manual_seed(3)
    model = MLP([6, 9, 4], hidden=hidden)
    dfa = DFA(model)
    dfa.set_feedback([model.layers[1].weight.T.clone()])
    x, y = batch(model)
    bp = rule_grads(model, BP(), x, y, "bce")
    got = rule_grads(model, dfa, x, y, "bce")
    for g, want in zip(got, bp):
        torch.testing.assert_close(g, want, **EXACT)


def test_dfa_is_not_bp_in_a_deep_net():
    """The identity above is special to one hidden layer: deeper, DFA differs from BP."""
    torch.manual_seed(4)
    model = MLP([6, 9, 9, 4], hidden="tanh")
    dfa = DFA(model)
    dfa.set_feedback([model.layers[1].weight.T @ model.layers[2].weight.T, model.layers[2].weight.T.clone()])
    x, y = batch(model)
    bp = rule_grads(model, BP(), x, y, "bce")
    got = rule_grads(model, dfa, x, y, "bce")
    assert not torch.allclose(got[0], bp[0])  # f' between the layers breaks the product
    torch.testing.assert_close(got[2], bp[2])  # the last hidden layer still matches


def test_dfa_hidden_signals_by_hand():
    torch.manual_seed(5)
    model = MLP([5, 7, 6, 3], hidden="tanh")
    dfa = DFA(model, dist="uniform", scale=0.3)
    x, y = batch(model)
    cache = model.forward_cached(x)
    e = torch.sigmoid(cache.logits) - y
    signals = dfa.signals(model, cache, e)
    B1, B2 = dfa.feedback
    h1 = torch.tanh(x @ model.layers[0].weight.T + model.layers[0].bias)
    h2 = torch.tanh(h1 @ model.layers[1].weight.T + model.layers[1].bias)
    # Elementwise, written out: delta_l[n, i] = (sum_k e[n, k] B_l[i, k]) * (1 - h_l[n, i]^2)
    by_hand1 = torch.empty_like(h1)
    for n, i in itertools.product(range(h1.shape[0]), range(h1.shape[1])):
        by_hand1[n, i] = sum(e[n, k] * B1[i, k] for k in range(3)) * (1 - h1[n, i] ** 2)
    torch.testing.assert_close(signals[0], by_hand1)
    torch.testing.assert_close(signals[1], (e @ B2.T) * (1 - h2**2))
    torch.testing.assert_close(signals[2], e)


def test_fa_linear_update_matches_lillicrap_formula():
    """Linear 30-20-10 net: FA's hidden update is Delta W0 = -(B e) x^T (column form)."""
    torch.manual_seed(6)
    model = MLP([30, 20, 10], hidden="identity", bias=False, init=("uniform", 0.01))
    fa = FA(model, dist="uniform", scale=0.5)
    x = torch.randn(8, 30)
    y = torch.randn(8, 10)
    grads = rule_grads(model, fa, x, y, "mse")
    W0, W = model.layers[0].weight, model.layers[1].weight
    e = y.T - W @ W0 @ x.T  # Lillicrap's e = y* - y, columns are examples
    B = fa.feedback[0]  # (20, 10)
    torch.testing.assert_close(-grads[0], (B @ e @ x) / 8)
    torch.testing.assert_close(-grads[1], (e @ (W0 @ x.T).T) / 8)


def test_shallow_trains_only_the_output_layer():
    model = MLP([4, 5, 5, 3])
    x, y = batch(model)
    grads = rule_grads(model, Shallow(), x, y, "bce")
    assert all(g is None for g in grads[:4])
    assert grads[4] is not None and grads[5] is not None


def test_seed_000_shape_mistake_gives_a_clear_error():
    model = MLP([3, 4, 2])
    dfa = DFA(model)
    with pytest.raises(ValueError, match=r"hidden layer 1 must have shape \(4, 2\).*got \(2, 4\)"):
        dfa.set_feedback([torch.randn(2, 4)])
    with pytest.raises(ValueError, match="one feedback matrix per hidden layer: 1 .* got 2"):
        dfa.set_feedback([torch.randn(2, 4), torch.randn(4, 3)])
    fa = FA(MLP([3, 4, 5, 2]))
    with pytest.raises(ValueError, match=r"hidden layer 2 must have shape \(5, 2\).*W_3\^T.*got \(2, 5\)"):
        fa.set_feedback([torch.randn(4, 5), torch.randn(2, 5)])


def test_rule_refuses_a_model_of_other_sizes():
    dfa = DFA(MLP([3, 4, 2]))
    other = MLP([3, 5, 2])
    cache = other.forward_cached(torch.randn(2, 3))
    with pytest.raises(ValueError, match="built for sizes"):
        dfa.signals(other, cache, torch.randn(2, 2))


def test_feedback_matrices_are_buffers_in_state_dict_and_seeded():
    model, twin = MLP([5, 6, 7, 3]), MLP([5, 6, 7, 3])  # one rule per model
    torch.manual_seed(7)
    a = DFA(model, dist="normal", scale=1.9)
    torch.manual_seed(7)
    b = DFA(twin, dist="normal", scale=1.9)
    assert "B" in a.state_dict()
    torch.testing.assert_close(a.B, b.B)
    assert a.B.shape == (13, 3)
    assert abs(a.B.std().item() - 1.9) < 0.6
    fa = FA(MLP([5, 6, 7, 3]), dist="uniform", scale=0.5)
    assert set(fa.state_dict()) == {"B1", "B2", "_extra_state"}  # the extra state records the sizes
    assert fa.B1.abs().max() <= 0.5
    assert a.to(torch.float32).B.dtype == torch.float32


def test_dfa_uses_one_matmul_for_all_layers(monkeypatch):
    model = MLP([5, 6, 7, 8, 3])
    dfa = DFA(model)
    cache = model.forward_cached(torch.randn(4, 5))
    calls = []
    real = torch.Tensor.__matmul__

    def counting(self, other):
        calls.append((tuple(self.shape), tuple(other.shape)))
        return real(self, other)

    monkeypatch.setattr(torch.Tensor, "__matmul__", counting)
    dfa.signals(model, cache, torch.randn(4, 3))
    assert calls == [((4, 3), (3, 21))]
