"""What the rules do with every part of a user's own model (dfa_lib.rules.graph).

Every parameter is trained by the rule, trained locally inside its block (normalisation
layers), ignored (frozen) or refused by name; the model's returned scores are the output layer;
a conv layer's string padding, the model's later dtype and device, tokens, in-place activations
and a bad example_input each either work (checked against torch.autograd) or stop with an error
that names the mistake where it is made.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import assert_same_gradients, fa_with_forward_weights, gradients, small_convnet, toy_batch
from dfa_lib import BP, DFA, DRTP, FA, USF, KolenPollack, Shallow


pytestmark = pytest.mark.usefixtures("double_precision")  # float64 identities


# ------------------------------------------------------------------ every parameter is accounted for
class TokenClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, tokens):
        return self.fc2(torch.tanh(self.fc1(self.embed(tokens).mean(1))))


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc_in, self.lstm, self.fc_out = nn.Linear(5, 8), nn.LSTM(8, 8, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc_out(self.lstm(torch.tanh(self.fc_in(x)))[0][:, -1])


class Scaled(nn.Module):
    """A learned scale used in forward, outside any layer."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)
        self.gain = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)) * self.gain)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.attn, self.fc2 = nn.Linear(5, 8), nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc2(self.attn(h, h, h)[0].mean(1))


UNSUPPORTED = {
    "embedding": (TokenClassifier, "'embed' (Embedding)"),
    "lstm": (Recurrent, "'lstm' (LSTM)"),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3)),
               "'0' (Conv1d)"),
    "conv_transpose": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.ConvTranspose2d(2, 2, 3),
                                             nn.Flatten(), nn.Linear(128, 3)), "'2' (ConvTranspose2d)"),
    "attention": (Attention, "'attn' (MultiheadAttention)"),
    "functional_parameter": (Scaled, "the model itself (Scaled): gain"),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
@pytest.mark.parametrize("Rule", [FA, DFA, USF, KolenPollack, Shallow])
def test_parameters_no_rule_can_train_are_refused_by_name(case, Rule):
    """Today an embedding before the first layer never trains, an LSTM inside a block trains by backprop."""
    make, named = UNSUPPORTED[case]
    with pytest.raises(ValueError, match="cannot train the parameters of") as error:
        Rule(make())
    assert named in str(error.value) and "nn.Linear and nn.Conv2d" in str(error.value)


def test_a_frozen_embedding_is_ignored_and_the_rest_trains():
    model = TokenClassifier()
    model.embed.requires_grad_(False)
    tokens, y = torch.randint(0, 10, (4, 6), generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])
    reference = gradients(model, tokens, y)
    fa_with_forward_weights(model)
    got = gradients(model, tokens, y)
    assert got[0] is None
    assert_same_gradients(got, reference)


def test_bp_with_hooks_still_takes_any_model():
    BP(Recurrent(), path="autograd")  # nothing is cut: autograd trains every parameter


@pytest.mark.parametrize("norm", ["batch", "layer", "group"])
def test_normalisation_inside_a_block_is_trained_locally(norm):
    """FA with B = W is BP for every parameter, the norm layers' affine parameters included."""
    torch.manual_seed(0)
    make = {"batch": lambda c: nn.BatchNorm2d(c), "layer": lambda c: nn.GroupNorm(1, c),
            "group": lambda c: nn.GroupNorm(2, c)}[norm]
    tail = nn.LayerNorm(6) if norm == "layer" else nn.BatchNorm1d(6) if norm == "batch" else nn.Identity()
    model = nn.Sequential(nn.Conv2d(1, 4, 3), make(4), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(36, 6), tail, nn.Tanh(), nn.Linear(6, 3))
    x, y = toy_batch()
    reference = gradients(model, x, y)
    fa_with_forward_weights(model)
    assert_same_gradients(gradients(model, x, y), reference)


def test_a_norm_layer_before_the_first_learning_layer_is_refused_at_the_first_forward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(5), nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    rule = FA(model)
    with torch.no_grad():
        model(x)  # evaluation needs no gradient: nothing to check
    with pytest.raises(ValueError, match=r"'0' \(BatchNorm1d\) runs before the first learning layer"):
        gradients(model, x, y)
    rule.detach()
    BP(model, path="autograd")  # BP does not cut there: the norm layer trains
    assert gradients(model, x, y)[0] is not None


# ------------------------------------------------------------------ the model's output is the output layer
class WithProbe(nn.Module):
    """A linear probe on the hidden features, registered after the head and trained on its own."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.head, self.probe = nn.Linear(5, 8), nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        scores = self.head(h)
        self.probe_scores = self.probe(h.detach())
        return scores


@pytest.mark.parametrize("Rule", [FA, DFA, Shallow])
def test_a_probe_registered_after_the_head_is_not_taken_for_the_output_layer(Rule):
    model = WithProbe()
    Rule(model)
    with pytest.raises(RuntimeError, match=r"does not depend on 'probe'"):
        model(torch.randn(4, 5))


class Tupled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc2(h), h


def test_a_model_returning_a_tuple_is_told_to_return_one_tensor_of_scores():
    model = Tupled()
    DFA(model)
    with pytest.raises(TypeError, match="one tensor of scores"):
        model(torch.randn(4, 5))


# ------------------------------------------------------------------ padding="same" and "valid"
@pytest.mark.parametrize("kernel,dilation,padding", [
    (3, 1, "same"), (4, 1, "same"), (3, 2, "same"), (4, 2, "same"), ((2, 3), 1, "same"), ((2, 4), (1, 3), "same"),
    (3, 1, "valid"), (4, 2, "valid")])
def test_fa_with_b_equal_to_w_is_bp_on_a_conv_with_string_padding(kernel, dilation, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel, padding=padding, dilation=dilation)
    body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), conv, nn.Tanh(), nn.Flatten())
    x, y = toy_batch(size=9)
    with torch.no_grad():
        width = body(x[:1]).shape[1]
    model = nn.Sequential(*body, nn.Linear(width, 3))
    reference = gradients(model, x, y)
    fa_with_forward_weights(model)
    assert_same_gradients(gradients(model, x, y), reference)


@pytest.mark.parametrize("Rule", [USF, KolenPollack])
def test_sign_symmetry_and_kolen_pollack_take_same_padding_with_an_even_kernel(Rule):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Conv2d(3, 4, 4, padding="same"), nn.Tanh(),
                          nn.Flatten(), nn.Linear(4 * 7 * 7, 3))
    Rule(model)
    x, y = toy_batch(size=9)
    assert all(g is not None for g in gradients(model, x, y))


# ------------------------------------------------------------------ the rule follows the model's dtype and device
def test_fa_follows_model_double_called_after_the_rule_was_built():
    torch.set_default_dtype(torch.float32)
    model = small_convnet().float()
    rule = FA(model)
    model.double()
    x, y = toy_batch()
    gradients(model, x.double(), y)
    assert all(B.dtype == torch.float64 for B in rule.feedback)


def test_kolen_pollack_s_optimizer_keeps_training_b_after_model_double():
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    rule = KolenPollack(model)
    opt = torch.optim.SGD(list(model.parameters()) + list(rule.parameters()), lr=0.1)
    B = rule.feedback_parameters[0]
    model.double()
    before = B.detach().clone()
    opt.zero_grad()
    F.cross_entropy(model(torch.randn(4, 5, dtype=torch.float64)), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    assert rule.feedback_parameters[0] is B and B.dtype == torch.float64
    assert not torch.equal(B.detach(), before.double())  # the optimizer still holds the rule's B


@pytest.mark.parametrize("Rule", [FA, DFA, KolenPollack])
def test_a_rule_follows_its_model_to_another_device(Rule):
    """PyTorch's meta device stands in for a GPU: no data, but every device check of a real one."""
    model = small_convnet()
    x, y = toy_batch()
    rule = Rule(model, example_input=x[:1]) if Rule is DFA else Rule(model)
    model.to("meta")
    F.cross_entropy(model(x.to("meta")), y.to("meta")).backward()
    assert all(t.device.type == "meta" for t in list(rule.buffers()) + list(rule.parameters()))


# ------------------------------------------------------------------ clear errors where the mistake is made
def test_a_numpy_example_input_is_refused_with_the_fix():
    with pytest.raises(TypeError, match="torch.as_tensor"):
        DFA(small_convnet(), example_input=toy_batch()[0][:1].numpy())


def test_an_example_input_without_its_batch_dimension_says_x_1_not_x_0():
    x, _ = toy_batch()
    with pytest.raises(ValueError, match=r"x\[:1\], not x\[0\]"):
        DFA(small_convnet(), example_input=x[0])


def test_a_flattened_image_as_example_input_of_a_conv_net_is_named():
    x, _ = toy_batch()
    with pytest.raises(ValueError, match=r"unflattened images \(N, C, H, W\)"):
        DFA(small_convnet(), example_input=x[:1].flatten(1))


def test_a_batch_of_another_image_size_than_the_example_input_is_named():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 4, 3), nn.Tanh(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    small, _ = toy_batch(size=8)
    DFA(model, example_input=small[:1])
    x, y = toy_batch(size=12)
    with pytest.raises(ValueError, match=r"received blocks of shape \(3, 12, 12\) per example, but DFA was built "
                                         r"for \(3, 8, 8\)"):
        gradients(model, x, y)


@pytest.mark.parametrize("Rule", [DFA, DRTP])
def test_tokens_through_a_linear_stack_with_dfa_are_told_each_row_must_be_one_example(Rule):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    Rule(model)
    with pytest.raises(ValueError, match="each row must be one example"):
        model(torch.randn(4, 6, 5))


def test_fa_on_tokens_gives_backprop_s_gradients_with_b_equal_to_w():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(4, 6, 5), torch.randint(0, 3, (4, 6))

    def token_grads():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        return [p.grad.clone() for p in model.parameters()]

    reference = token_grads()
    fa_with_forward_weights(model)
    assert_same_gradients(token_grads(), reference)


def test_an_in_place_relu_after_a_layer_trains_with_fa():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(inplace=True), nn.Linear(8, 8), nn.ReLU(inplace=True),
                          nn.Linear(8, 3))
    x, y = torch.randn(6, 5), torch.randint(0, 3, (6,))
    reference = gradients(model, x, y)
    fa_with_forward_weights(model)
    assert_same_gradients(gradients(model, x, y), reference)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(5, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.fc1(x))
        h = torch.tanh(self.fc2(h))
        return self.out(torch.tanh(self.fc2(h)))  # fc2 used twice: shared weights


class Reordered(nn.Module):
    def __init__(self):
        super().__init__()
        self.out, self.fc1 = nn.Linear(8, 3), nn.Linear(5, 8)  # defined head first

    def forward(self, x):
        return self.out(torch.tanh(self.fc1(x)))


@pytest.mark.parametrize("make,message", [(Shared, r"'fc2' .* ran a second time in one forward pass"),
                                          (Reordered, r"'fc1' .* ran before 'out'")])
def test_a_layer_used_twice_or_out_of_order_is_named(make, message):
    model = make()
    FA(model)
    with pytest.raises(RuntimeError, match=message):
        model(torch.randn(4, 5))


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.spare = nn.Linear(5, 8), nn.Linear(8, 3), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def test_a_registered_layer_the_forward_never_runs_is_named():
    """DFA would take the unused layer for the output layer and send no signal at all."""
    model = Unused()
    DFA(model)
    with pytest.raises(RuntimeError, match=r"did not run learning layer\(s\) 'spare'"):
        model(torch.randn(4, 5))
