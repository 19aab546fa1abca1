"""The rule you attach is the rule that runs: a rule's hooks on a model, in the reader's own loop.

A rule built on a model (an MLP included) decides the gradients of ``loss.backward()``; a model
carries one rule at most (a second one is refused, ``rule_of`` and ``detach`` say which and take it
off); a copy of a hooked model carries a copy of the rule; ``torch.compile`` of a hooked model gives
the eager gradients.  Expected gradients are derived by hand: ``dW_l = delta_l^T h_{l-1}`` with the
rule's ``delta_l`` (chapters 1, 2 and 10).
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dfa_lib
from dfa_lib import BP, DFA, FA, MLP, Data, Shallow, detach, rule_of, train


class Net(nn.Module):
    """A reader's own network: three Linear layers, tanh between them, scores out."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(6, 8), nn.Linear(8, 7), nn.Linear(7, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def net(seed=0):
    torch.manual_seed(seed)
    return Net()


def mlp(seed=0):
    torch.manual_seed(seed)
    return MLP([6, 8, 7, 3], hidden="tanh")


def linear_layers(model):
    return list(model.layers) if isinstance(model, MLP) else [model.fc1, model.fc2, model.out]


def data(seed=1, n=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def own_loop_gradients(model, x, labels):
    """One backward pass of the reader's loop (sums over the batch): every weight's and bias's .grad."""
    model.zero_grad(set_to_none=True)
    if isinstance(model, MLP):
        F.binary_cross_entropy_with_logits(model(x), F.one_hot(labels, 3).to(x.dtype), reduction="sum").backward()
    else:
        F.cross_entropy(model(x), labels, reduction="sum").backward()
    return [(layer.weight.grad, layer.bias.grad) for layer in linear_layers(model)]


def by_hand(kind, layers, feedback, x, labels):
    """The rule's gradients written out: e = y_hat - y at the output (sigmoid + BCE or softmax + CE),
    delta_l = (source @ B_l^T) * (1 - h_l^2) with source e (DFA) or delta_{l+1} (FA), none (shallow)."""
    with torch.no_grad():
        hs = [x]
        for layer in layers[:-1]:
            hs.append(torch.tanh(hs[-1] @ layer.weight.T + layer.bias))
        scores = hs[-1] @ layers[-1].weight.T + layers[-1].bias
        probabilities = torch.softmax(scores, 1) if kind.endswith("net") else torch.sigmoid(scores)
        e = probabilities - F.one_hot(labels, 3).to(x.dtype)
        deltas = [e]
        for l in range(len(layers) - 2, -1, -1):
            source = e if kind.startswith("DFA") else deltas[0]
            p = None if kind.startswith("shallow") else source @ feedback[l].T
            deltas.insert(0, None if p is None else p * (1 - hs[l + 1] ** 2))
    return [(None, None) if d is None else (d.T @ h, d.sum(0)) for d, h in zip(deltas, hs)]


def backprop_gradients(model, x, labels):
    """Plain autograd on a copy of the model without any rule."""
    plain = detach(copy.deepcopy(model))
    return own_loop_gradients(plain, x, labels)


def assert_gradients(got, expected):
    for (gw, gb), (ew, eb) in zip(got, expected):
        if ew is None:
            assert gw is None and gb is None
        else:
            torch.testing.assert_close(gw, ew, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(gb, eb, atol=1e-5, rtol=1e-5)


RULES = {"DFA": lambda m: DFA(m, generator=torch.Generator().manual_seed(3)),
         "FA": lambda m: FA(m, generator=torch.Generator().manual_seed(3)),
         "shallow": lambda m: Shallow(m)}


# ------------------------------------------------------------------ the reader's own loop on an MLP
@pytest.mark.parametrize("name", ["DFA", "FA", "shallow"])
def test_a_rule_built_on_an_mlp_trains_it_in_the_readers_own_loop(name):
    model = mlp()
    x, labels = data()
    bp = backprop_gradients(model, x, labels)
    rule = RULES[name](model)
    got = own_loop_gradients(model, x, labels)
    assert_gradients(got, by_hand(name, list(model.layers), getattr(rule, "feedback", None), x, labels))
    first_layer = got[0][0]
    assert first_layer is None or not torch.allclose(first_layer, bp[0][0], atol=1e-3), "that would be BP's gradient"


def test_train_keeps_the_fast_path_on_a_hooked_mlp_and_its_numbers():
    """The hooks do nothing on the fast path (its forward pass runs without gradients)."""
    x, labels = data(n=40)
    runs = []
    for keep_hooks in (True, False):
        model = mlp()
        rule = RULES["DFA"](model)
        if not keep_hooks:
            rule.detach()
        assert rule.uses_fast_path(model)
        train(model, rule, Data(x, labels, x, labels), epochs=2, batch_size=8, lr=0.3, loss="bce", progress=False,
              generator=torch.Generator().manual_seed(0))
        runs.append(model)
    assert rule_of(runs[0]) is not None and rule_of(runs[1]) is None
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        assert torch.equal(a, b)


def test_the_fast_paths_forward_pass_leaves_the_hooks_untouched():
    model = mlp()
    rule = RULES["DFA"](model)
    model.forward_cached(data()[0])
    assert rule.hooks.inputs == [] and rule.hooks.outputs == []


def test_bp_puts_no_hooks_on_a_model():
    model = net()
    x, labels = data()
    expected = backprop_gradients(model, x, labels)
    BP(model)
    assert rule_of(model) is None
    assert_gradients(own_loop_gradients(model, x, labels), expected)


# ------------------------------------------------------------------ one rule per model
def test_a_second_rule_on_a_hooked_model_is_refused():
    model = net()
    FA(model)
    with pytest.raises(RuntimeError, match=r"already carries a rule, FA.*old_rule\.detach\(\).*dfa_lib\.detach"):
        DFA(model)


def test_rerunning_a_notebook_cell_that_builds_the_rule_is_refused():
    model = mlp()
    rule = DFA(model, generator=torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeError, match="already carries a rule, DFA"):
        rule = DFA(model, generator=torch.Generator().manual_seed(2))
    assert rule_of(model) is rule


def test_bp_on_a_model_that_carries_a_rule_is_refused():
    model = mlp()
    DFA(model)
    with pytest.raises(RuntimeError, match="already carries a rule, DFA.*dfa_lib.detach"):
        BP(model)


def test_after_detach_the_new_rule_is_the_one_that_runs():
    model = net()
    old = FA(model)
    old.detach()
    new = RULES["DFA"](model)
    assert rule_of(model) is new
    x, labels = data()
    assert_gradients(own_loop_gradients(model, x, labels),
                     by_hand("DFA net", linear_layers(model), new.feedback, x, labels))


def test_detach_of_the_model_removes_a_rule_whose_handle_is_lost():
    model = net()
    x, labels = data()
    expected = backprop_gradients(model, x, labels)
    DFA(model)  # the rule object is not kept
    assert isinstance(rule_of(model), DFA)
    assert detach(model) is model and rule_of(model) is None
    assert_gradients(own_loop_gradients(model, x, labels), expected)
    FA(model)  # and the model takes a new rule


def test_rule_of_a_plain_model_is_none():
    assert rule_of(net()) is None and rule_of(mlp()) is None


def test_rule_of_and_detach_are_exported():
    assert {"rule_of", "detach"} <= set(dfa_lib.__all__)
    assert dfa_lib.rule_of is rule_of and dfa_lib.detach is detach


# ------------------------------------------------------------------ what a copy carries
def test_a_copy_of_a_hooked_model_carries_a_consistent_copy_of_the_rule():
    model = mlp()
    rule = RULES["DFA"](model)
    copied = copy.deepcopy(model)
    twin = rule_of(copied)
    assert isinstance(twin, DFA) and twin is not rule and rule_of(model) is rule
    assert torch.equal(twin.B, rule.B) and twin.B.data_ptr() != rule.B.data_ptr()
    assert twin.hooks.rule is twin and twin.hooks.layers == list(copied.layers)
    x, labels = data()
    assert_gradients(own_loop_gradients(copied, x, labels), by_hand("DFA", list(copied.layers), twin.feedback, x, labels))


def test_a_rules_repr_says_what_it_is_attached_to():
    model = mlp()
    rule = DFA(model)
    assert "attached to MLP with 3 learning layers" in repr(rule_of(copy.deepcopy(model)))
    rule.detach()
    assert "not attached" in repr(rule)


def test_detach_of_a_copy_gives_a_plain_model_and_leaves_the_original_hooked():
    model = net()
    x, labels = data()
    expected = backprop_gradients(model, x, labels)
    rule = RULES["FA"](model)
    baseline = detach(copy.deepcopy(model))
    assert rule_of(baseline) is None and rule_of(model) is rule
    assert_gradients(own_loop_gradients(baseline, x, labels), expected)
    baseline(x)  # no check of the copied rule is left on the model


# ------------------------------------------------------------------ torch.compile and calling a rule
@pytest.mark.slow
@pytest.mark.parametrize("name", ["DFA", "FA"])
def test_a_compiled_hooked_model_gets_the_rules_gradients(name, one_thread):
    model = net()
    rule = RULES[name](model)
    compiled = torch.compile(model)
    x, labels = data()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(compiled(x), labels, reduction="sum").backward()
    got = [(layer.weight.grad, layer.bias.grad) for layer in linear_layers(model)]
    assert_gradients(got, by_hand(f"{name} net", linear_layers(model), rule.feedback, x, labels))


def test_calling_a_rule_like_a_layer_says_what_to_call():
    model = mlp()
    rule = DFA(model)
    with pytest.raises(TypeError, match="not a layer: call the model"):
        rule(data()[0])
