"""alignment() measures a rule and BP on ONE forward pass and leaves the model as it was.

A user measures the angles between a rule and BP in their own training loop, on their own
nn.Module, often in training mode (dfa_lib.train calls on_epoch there).  Under dropout the two
rules must see the same mask (FA with B = W is BP, so 0 degrees), batch norm's running statistics
must not move, and the angles must be those of the gradients the rule's hooks give in an
ordinary loss.backward() (computed here by hand with autograd, on the same weights).
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import fa_with_forward_weights, small_convnet, toy_batch
from dfa_lib import BP, BRSF, DFA, DRTP, FA, FRSF, USF, KolenPollack, Shallow, alignment
from dfa_lib.rules import learning_layers


pytestmark = pytest.mark.usefixtures("double_precision")  # float64 identities


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(7, 12), nn.Tanh(), nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 3))


def angle(a, b):
    """Angle in degrees between flat vectors (Kahan's atan2 form: exact near 0); 90 where one is missing."""
    if a is None or b is None:
        return 90.0
    u, v = a.flatten().double(), b.flatten().double()
    u, v = u / u.norm(), v / v.norm()
    return math.degrees(2 * math.atan2((u - v).norm().item(), (u + v).norm().item()))


def backward_gradients(model, x, y, rule=None):
    """Gradients at the hidden block outputs and hidden weights after an ordinary loss.backward().

    A block output is the attached input of learning layers 2..L; a pre-hook put in front of the
    rule's own hooks grabs it before the rule cuts the graph there.
    """
    layers = learning_layers(model)
    signals = [None] * (len(layers) - 1)

    def grab(k):
        def pre_hook(layer, args):
            if args[0].requires_grad:
                args[0].register_hook(lambda g: signals.__setitem__(k - 1, g.clone()))
        return pre_hook

    handles = [layer.register_forward_pre_hook(grab(k), prepend=True) for k, layer in enumerate(layers) if k > 0]
    try:
        if rule is not None:
            rule.observe_target(F.one_hot(y, 3).to(x.dtype))
        F.cross_entropy(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    updates = [None if layer.weight.grad is None else layer.weight.grad.clone() for layer in layers[:-1]]
    model.zero_grad(set_to_none=True)
    return signals, updates


def test_fa_with_forward_weights_reads_zero_degrees_under_dropout_in_training_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 32), nn.Tanh(), nn.Dropout(0.5), nn.Linear(32, 32), nn.Tanh(),
                          nn.Dropout(0.5), nn.Linear(32, 3)).train()
    x, y = toy_batch(64, image=False)
    angles = alignment(model, fa_with_forward_weights(model), x, y, loss="ce")
    assert max(angles["signal"] + angles["update"]) < 1e-6, angles


def test_batch_norm_statistics_and_eval_outputs_are_unchanged_by_measuring():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(),
                          nn.Linear(3 * 6 * 6, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    x, y = toy_batch(16)
    rule = FA(model)
    model.train()
    F.cross_entropy(model(x), y)  # a training step's forward: the statistics are no longer the initial ones
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        eval_before = model(x)
    model.train()
    alignment(model, rule, x, y, loss="ce")
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), eval_before)


def build(name, model, x):
    """Rule ``name`` on ``model`` with its own generator (returned, so a test can replay its draws)."""
    g = torch.Generator().manual_seed(5)
    rules = {
        "BP": lambda: BP(model, path="autograd"),
        "FA": lambda: FA(model, generator=g),
        "DFA": lambda: DFA(model, generator=g, example_input=x[:1]),
        "Shallow": lambda: Shallow(model),
        "USF": lambda: USF(model),
        "FRSF": lambda: FRSF(model, generator=g),
        "BRSF": lambda: BRSF(model, generator=g),
        "KolenPollack": lambda: KolenPollack(model, weight_decay=0.0, generator=g),  # .grad = the rule's gradient
        "DRTP": lambda: DRTP(model, generator=g, example_input=x[:1]),
    }
    return rules[name](), g


@pytest.mark.parametrize("architecture", ["mlp", "convnet"])
@pytest.mark.parametrize("name", ["BP", "FA", "DFA", "Shallow", "USF", "FRSF", "BRSF", "KolenPollack", "DRTP"])
def test_angles_are_those_of_the_gradients_the_hooks_give_in_backward(name, architecture):
    make = mlp if architecture == "mlp" else small_convnet
    x, y = toy_batch(6, image=architecture == "convnet")
    bp_signals, bp_updates = backward_gradients(make(0), x, y)  # the same weights, no hooks: BP
    model = make(0)
    rule, g = build(name, model, x)
    draws = g.get_state()  # brSF draws its magnitudes at every forward: replay the same draw below

    angles = alignment(model, rule, x, y, loss="ce")
    assert all(p.grad is None for p in list(model.parameters()) + list(rule.parameters())), "alignment wrote .grad"

    g.set_state(draws)
    signals, updates = backward_gradients(model, x, y, rule)
    expected_signal = [angle(s, b) for s, b in zip(signals, bp_signals)]
    expected_update = [angle(u, b) for u, b in zip(updates, bp_updates)]
    assert len(angles["signal"]) == len(angles["update"]) == len(learning_layers(model)) - 1
    for got, want in zip(angles["signal"] + angles["update"], expected_signal + expected_update):
        assert abs(got - want) < 1e-6, (angles, expected_signal, expected_update)
    if name == "BP":
        assert max(angles["signal"] + angles["update"]) < 1e-6
    if name == "Shallow":
        assert angles["signal"] == angles["update"] == [90.0] * (len(learning_layers(model)) - 1)


def test_float32_batch_is_converted_for_a_float64_model():
    model = mlp()
    rule = FA(model, generator=torch.Generator().manual_seed(3))
    x, y = toy_batch(8, image=False)
    x32 = x.float()  # a batch straight from a float32 data set
    assert alignment(model, rule, x32, y, loss="ce") == alignment(model, rule, x32.double(), y, loss="ce")


def test_on_an_mlp_alignment_and_the_fast_path_measure_the_same_updates_by_default():
    from dfa_lib import MLP, alignment_angles

    torch.manual_seed(0)
    model = MLP([7, 12, 10, 3], hidden="identity")  # both default to train's loss, "bce"
    rule = FA(model, path="autograd", generator=torch.Generator().manual_seed(3))
    x, y = toy_batch(16, image=False)
    hooked = alignment(model, rule, x, y)
    fast = alignment_angles(model, rule, x, y)  # the hand-written signals of chapters 1-7
    assert len(hooked["update"]) == len(fast["update"]) == 2
    for got, want in zip(hooked["update"], fast["update"]):
        assert abs(got - want) < 1e-6, (hooked, fast)


def test_alignment_measures_a_rule_built_on_an_mlp():
    """A rule on an MLP carries hooks (for the reader's own loop), so alignment() measures it too."""
    from dfa_lib import MLP, FA

    torch.manual_seed(0)
    model = MLP([6, 8, 3], hidden="tanh")
    rule = FA(model)
    rule.set_feedback([model.layers[1].weight.detach().T.clone()])  # B = W^T: exactly BP
    angles = alignment(model, rule, torch.randn(16, 6), torch.randint(0, 3, (16,)))
    assert angles["signal"][0] < 1e-6 and angles["update"][0] < 1e-6
