"""One interface for the nine rules: one constructor signature, one name and layout for the feedback
matrices, and the rule-specific knowledge the rest of the library asks the rule for."""
import pytest
import torch
import torch.nn as nn

from dfa_lib import MLP, train
from dfa_lib.data import Data
from dfa_lib.rules import BP, DFA, FA, RULES, KolenPollack, Shallow, learning_layers, make_rule
from dfa_lib.seeds import batch_rules
from dfa_lib.stack import stack


def mlp():
    torch.manual_seed(0)
    return MLP([5, 6, 4, 3], hidden="tanh").double()


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def example(kind):
    shape = (1, 5) if kind == "mlp" else (1, 1, 8, 8)
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


NETWORKS = {"mlp": mlp, "cnn": cnn}

# (shape, sum of absolute values) of every feedback matrix drawn with torch.Generator().manual_seed(1), recorded
# before the constructors and the feedback layout were unified: the draws must not move.
DRAWN = {
    ("mlp", "fa"): [((6, 4), 5.7492859753), ((4, 3), 3.5068961907)],
    ("mlp", "dfa"): [((6, 3), 40.0346846678), ((4, 3), 12.3286336566)],
    ("mlp", "usf"): [((6, 4), 10.733126292), ((4, 3), 6.4142698059)],
    ("mlp", "frsf"): [((6, 4), 8.9067555339), ((4, 3), 6.4935099624)],
    ("mlp", "brsf"): [((6, 4), 8.9067555339), ((4, 3), 6.4935099624)],
    ("mlp", "kp"): [((6, 4), 5.7492859753), ((4, 3), 4.0494149195)],
    ("mlp", "drtp"): [((6, 3), 7.6619574875), ((4, 3), 7.5986983445)],
    ("cnn", "fa"): [((3, 4, 3, 3), 15.2969542791), ((64, 5), 47.5086171275), ((5, 3), 7.4360672791)],
    ("cnn", "dfa"): [((192, 3), 51.5347430143), ((64, 3), 29.9052145578), ((5, 3), 5.9229794675)],
    ("cnn", "usf"): [((3, 4, 3, 3), 19.2428094177), ((64, 5), 54.4804179686), ((5, 3), 7.5)],
    ("cnn", "frsf"): [((3, 4, 3, 3), 15.2969542791), ((64, 5), 47.5086171275), ((5, 3), 7.4360672791)],
    ("cnn", "brsf"): [((3, 4, 3, 3), 15.2969542791), ((64, 5), 47.5086171275), ((5, 3), 7.4360672791)],
    ("cnn", "kp"): [((3, 4, 3, 3), 9.5393269956), ((64, 5), 72.0503852394), ((5, 3), 4.9573781861)],
    ("cnn", "drtp"): [((192, 3), 293.7932376184), ((64, 3), 99.9329479111), ((5, 3), 6.8392675799)],
}


def the_old_call(name, model, generator, x):
    """How each rule was built before every constructor took the common keywords."""
    cls = RULES[name]
    if name in ("bp", "shallow"):
        return cls(model)
    if name in ("dfa", "drtp") and not isinstance(model, MLP):
        return cls(model, generator=generator, example_input=x)
    return cls(model, generator=generator)


@pytest.mark.parametrize("kind", NETWORKS)
@pytest.mark.parametrize("name", RULES)
def test_every_rule_is_built_with_the_common_keywords_and_draws_what_it_drew_before(name, kind):
    model, twin = NETWORKS[kind](), NETWORKS[kind]()
    rule = RULES[name](model, generator=torch.Generator().manual_seed(1), example_input=example(kind))
    before = the_old_call(name, twin, torch.Generator().manual_seed(1), example(kind))
    assert rule.state_dict().keys() == before.state_dict().keys()
    for key, value in rule.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, before.state_dict()[key]), key
    drawn = [(tuple(B.shape), round(float(B.double().abs().sum()), 10)) for B in rule.feedback]
    assert drawn == DRAWN.get((kind, name), [])


@pytest.mark.parametrize("kind", NETWORKS)
@pytest.mark.parametrize("name", RULES)
def test_make_rule_builds_every_rule_with_the_common_keywords(name, kind):
    model = NETWORKS[kind]()
    rule = make_rule(name.upper(), model, generator=torch.Generator().manual_seed(1), example_input=example(kind),
                     path="auto")
    assert type(rule) is RULES[name]


@pytest.mark.parametrize("kind", NETWORKS)
@pytest.mark.parametrize("name", RULES)
def test_every_feedback_matrix_stands_where_bp_has_w_transposed(name, kind):
    model = NETWORKS[kind]()
    rule = RULES[name](model, generator=torch.Generator().manual_seed(1), example_input=example(kind))
    weights = [layer.weight for layer in learning_layers(model)]
    if name in ("bp", "shallow"):
        assert rule.feedback == []
    elif name in ("dfa", "drtp"):  # (entries of block l, outputs): block first, source second
        assert all(B.shape[1] == weights[-1].shape[0] for B in rule.feedback)
        assert len(rule.feedback) == len(weights) - 1
    else:
        assert [tuple(B.shape) for B in rule.feedback] == [tuple(W.transpose(0, 1).shape) for W in weights[1:]]
    assert rule.feedback_stands_for_weights == (name in ("fa", "usf", "frsf", "brsf", "kp"))


@pytest.mark.parametrize("name", ["usf", "frsf", "brsf"])
def test_sign_symmetry_feedback_is_sign_w_transposed(name):
    model = cnn()
    rule = RULES[name](model, generator=torch.Generator().manual_seed(1))
    for B, layer in zip(rule.feedback, learning_layers(model)[1:]):
        assert torch.equal(B.sign(), layer.weight.detach().transpose(0, 1).sign())


def test_kolen_pollack_feedback_shows_its_learned_parameters_transposed():
    rule = KolenPollack(cnn(), generator=torch.Generator().manual_seed(1))
    for B, P in zip(rule.feedback, rule.feedback_parameters):
        assert torch.equal(B, P.detach().transpose(0, 1)) and B.data_ptr() == P.data_ptr()


def test_fa_set_feedback_takes_w_transposed_for_linear_and_conv_layers_alike():
    model = cnn()
    rule = FA(model)
    weights = [layer.weight.detach() for layer in learning_layers(model)[1:]]
    with pytest.raises(ValueError, match=r"hidden layer 1 must have shape \(3, 4, 3, 3\) = conv layer 2's weight "
                                         r"with its channel axes swapped.*got \(4, 3, 3, 3\)"):
        rule.set_feedback(weights)  # the kernel in its own layout is refused, as W is for a Linear layer
    rule.set_feedback([W.transpose(0, 1) for W in weights])
    x, y = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    nn.functional.cross_entropy(model(x), y).backward()
    with_fa = [p.grad.clone() for p in model.parameters()]
    rule.detach()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    for a, b in zip(with_fa, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("keyword,value,error,message", [
    ("generator", 0, TypeError, "generator must be a torch.Generator"),
    ("example_input", [[0.0] * 5], TypeError, "example_input must be a torch.Tensor"),
    ("path", "fast", ValueError, "path must be 'auto' or 'autograd'"),
])
def test_every_rule_names_a_wrong_common_keyword(name, keyword, value, error, message):
    with pytest.raises(error, match=message):
        RULES[name](mlp(), **{keyword: value})


def test_kolen_pollack_loads_a_state_dict_saved_before_its_weights_were_renamed():
    source, target = KolenPollack(mlp(), generator=torch.Generator().manual_seed(1)), KolenPollack(mlp())
    old = {k.replace("feedback_parameters.", "backward."): v for k, v in source.state_dict().items()}
    target.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(target.feedback, source.feedback))


class NoisyFA(FA):
    """A rule subclass: the library must treat it as the FA it extends, without knowing its name."""


def test_seeds_and_stack_ask_the_rule_class_so_a_subclass_batches_and_stacks():
    models = [mlp() for _ in range(2)]
    rules = [NoisyFA(m, generator=torch.Generator().manual_seed(k)) for k, m in enumerate(models)]
    batched = batch_rules(rules)
    assert type(batched) is NoisyFA and batched.feedback[0].shape == (2, 6, 4)
    _, stacked, _ = stack(models, rules)
    assert type(stacked) is NoisyFA and stacked.feedback[0].shape == (12, 8)
    torch.testing.assert_close(stacked.feedback[0][6:, 4:], rules[1].feedback[0], rtol=0, atol=0)


def test_rules_without_an_mlp_fast_path_refuse_to_batch_or_stack():
    models = [mlp() for _ in range(2)]
    kp = [KolenPollack(m) for m in models]
    with pytest.raises(ValueError, match="KolenPollack trains each seed with dfa_lib.train"):
        batch_rules(kp)
    with pytest.raises(ValueError, match="cannot stack rules of type KolenPollack"):
        stack(models, kp)


def test_assigning_a_feedback_buffer_asks_the_rule(monkeypatch):
    rule, asked = DFA(mlp()), []
    monkeypatch.setattr(DFA, "check_feedback_buffer", lambda self, name, value: asked.append(name))
    rule.B = torch.zeros(1)
    assert asked == ["B"]


class PlainBP(BP):
    """BP by another name: still needs no hooks."""


def test_train_attaches_no_hooks_for_a_rule_that_needs_none():
    assert not BP.needs_hooks and Shallow.needs_hooks and FA.needs_hooks
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(8, 5), torch.arange(8) % 3
    rule = PlainBP()
    train(model, rule, Data(x, y, x, y), epochs=1, batch_size=4, lr=0.1, loss="ce", progress=False)
    assert rule.hooks is None


def saved_in_the_kernel_layout(rule):
    """``rule``'s state as saved when FA kept a conv layer's matrix in the kernel's own layout."""
    state = rule.state_dict()
    state["B1"] = state["B1"].transpose(0, 1).contiguous()
    state["_extra_state"] = dict(state["_extra_state"], feedback_shapes=[[4, 3, 3, 3], [64, 5], [5, 3]])
    return state


def test_fa_loads_a_conv_state_dict_saved_in_the_kernel_layout():
    source, target = FA(cnn(), generator=torch.Generator().manual_seed(1)), FA(cnn())
    target.load_state_dict(saved_in_the_kernel_layout(source))
    assert all(torch.equal(a, b) for a, b in zip(target.feedback, source.feedback))


def test_fa_unpickles_a_conv_rule_saved_in_the_kernel_layout():
    rule = FA(cnn(), generator=torch.Generator().manual_seed(1))
    state = rule.__getstate__()
    state = dict(state, _buffers=dict(state["_buffers"], B1=rule.B1.transpose(0, 1).contiguous()))
    del state["conv_feedback_layout"]
    old = FA.__new__(FA)
    old.__setstate__(state)
    assert torch.equal(old.B1, rule.B1)
