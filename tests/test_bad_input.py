"""What a new user hands train(), a model or a rule by mistake ends in a clear error, or in the right result.

Each bad input must raise an exception of a stated type whose message names the problem; a
legitimate input (integer labels of any dtype, numpy arrays, numpy integers) must train
exactly as the canonical form does.
"""
import io
import warnings

import numpy as np
import pytest
import torch

from conftest import small_classification, train_mlp
from dfa_lib import BP, DFA, FA, MLP, Data, alignment_angles, linear_teacher, seed_everything, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


# ------------------------------------------------------- MLP's removed output= argument, and the losses
@pytest.mark.parametrize("output,loss", [("sigmoid", "bce"), ("softmax", "ce"), ("identity", "mse")])
def test_the_removed_output_argument_names_the_loss_that_applies_it(output, loss):
    """Old code, MLP(..., output="sigmoid"), must not get logits where it expected probabilities unnoticed."""
    with pytest.raises(TypeError, match=rf"no longer takes output=.*returns logits.*loss='{loss}'"):
        MLP([6, 8, 3], output=output)


def test_an_output_no_loss_applies_is_refused_by_name():
    with pytest.raises(TypeError, match=r"no longer takes output=.*no loss applies 'tanh'"):
        MLP([6, 8, 3], hidden="tanh", output="tanh")
    with pytest.raises(TypeError):  # the old positional output (MLP(sizes, "tanh", "sigmoid")) is refused too
        MLP([6, 8, 3], "tanh", "sigmoid")


def test_an_unknown_loss_is_named():
    with pytest.raises(ValueError, match=r"unknown loss 'nll'"):
        train(MLP([6, 8, 3]), BP(), small_classification(), epochs=1, loss="nll", progress=False)


@pytest.mark.parametrize("loss", ["bce", "ce", "mse"])
def test_every_loss_trains_an_mlp(loss):
    _, h = train_mlp(small_classification(), loss=loss, lr=0.1, epochs=1)
    assert len(h.test_error) == 2


# --------------------------------------------------------- which kind of target: classes or regression
def pm1(labels, c=3):
    return 2 * torch.nn.functional.one_hot(labels, c).double() - 1


def test_class_coded_float_targets_under_mse_warn_and_history_says_regression():
    data = small_classification()
    coded = Data(data.x_train, pm1(data.y_train), data.x_test, pm1(data.y_test))  # -1/+1 one-of-C
    with pytest.warns(UserWarning, match=r"regression.*kind='classification'") as record:
        _, h = train_mlp(coded, loss="mse", lr=0.05)
    assert record[0].filename == train_mlp.__code__.co_filename  # points at the caller's train(...) line
    assert h.target_kind == "regression"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, h = train_mlp(coded, loss="mse", lr=0.05, kind="regression")  # forced: silent
    assert h.target_kind == "regression"


def test_kind_classification_counts_misclassifications():
    data = small_classification()
    coded = Data(data.x_train, pm1(data.y_train), data.x_test, pm1(data.y_test))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, h = train_mlp(coded, loss="mse", lr=0.05, kind="classification")
    assert h.target_kind == "classification"
    wrong = (model(data.x_test).argmax(1) != data.y_test).float().mean().item()
    assert h.test_error[-1] == pytest.approx(wrong)  # a misclassification rate, not a squared error


def test_soft_labels_warn_too_and_real_regression_does_not():
    data = small_classification()
    soft = torch.softmax(torch.randn(64, 3, generator=torch.Generator().manual_seed(1)), 1)
    with pytest.warns(UserWarning, match="sums to 1"):
        train_mlp(Data(data.x_train, soft, data.x_test, soft), loss="mse", lr=0.1, epochs=1)
    teacher, _ = linear_teacher(n_in=6, n_out=3, n_samples=128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, h = train_mlp(teacher, loss="mse", lr=0.01, epochs=1)
    assert h.target_kind == "regression"
    _, h = train_mlp(small_classification())
    assert h.target_kind == "classification"


def test_unknown_kind_and_tied_targets_are_named():
    with pytest.raises(ValueError, match="kind must be one of"):
        train_mlp(small_classification(), kind="classes")
    data = small_classification()
    tied = torch.zeros(64, 3)
    with pytest.raises(ValueError, match="no single largest entry"):
        train_mlp(Data(data.x_train, tied, data.x_test, tied), loss="mse", kind="classification")


# ----------------------------------------------------------------------------- NaN and infinite inputs
@pytest.mark.parametrize("which", ["x_train", "x_test"])
def test_nan_or_inf_inputs_name_the_set_and_the_rows(which):
    data = small_classification()
    x = getattr(data, which).clone()
    x[3, 0], x[10, 5], x[11, 2] = float("nan"), float("inf"), -float("inf")
    bad = Data(**{**data.__dict__, which: x})
    with pytest.raises(ValueError, match=rf"{which} has 3 of 64 rows with NaN or infinite values \(rows \[3, 10, 11\]"):
        train_mlp(bad)


def test_values_that_overflow_the_model_dtype_count_as_infinite():
    data = small_classification()
    x = data.x_train.double()
    x[0, 0] = 1e300  # finite in float64, inf in the float32 model
    with pytest.raises(ValueError, match="x_train has 1 of 64 rows"):
        train_mlp(Data(x, data.y_train, data.x_test, data.y_test))


def test_large_finite_inputs_are_fine():
    data = small_classification()
    x = data.x_train.clone()
    x[:, 0] = 3e38  # the sum overflows, every entry is finite: no error
    train_mlp(Data(x, data.y_train, data.x_test, data.y_test), epochs=0)


# ------------------------------------------------------------------------------------------ empty sets
def test_empty_train_or_test_set_is_named():
    data = small_classification()
    with pytest.raises(ValueError, match=r"the training set is empty \(x_train has shape \(0, 6\)\)"):
        train_mlp(data.subset(n_train=0))
    with pytest.raises(ValueError, match=r"the test set is empty \(x_test has shape \(0, 6\)\)"):
        train_mlp(data.subset(n_test=0))


# -------------------------------------------------------------------------- labels of any integer type
@pytest.mark.parametrize(
    "convert",
    [
        lambda y: y.to(torch.int32),
        lambda y: y.to(torch.uint8),
        lambda y: y.to(torch.int16),
        lambda y: y.numpy(),
        lambda y: y.numpy().astype(np.int32),
        lambda y: y.float(),  # float class indices of shape (N,)
        lambda y: y.unsqueeze(1),  # a column of class indices
    ],
    ids=["int32", "uint8", "int16", "numpy-int64", "numpy-int32", "float-indices", "column"],
)
def test_labels_of_any_integer_type_train_like_int64(convert):
    data = small_classification()
    _, reference = train_mlp(data)
    converted = Data(data.x_train, convert(data.y_train), data.x_test, convert(data.y_test))
    _, h = train_mlp(converted)
    assert h.test_error == reference.test_error and h.train_loss == reference.train_loss


def test_numpy_inputs_are_converted_too():
    data = small_classification()
    _, reference = train_mlp(data)
    _, h = train_mlp(Data(data.x_train.numpy(), data.y_train.numpy(), data.x_test.numpy(), data.y_test.numpy()))
    assert h.test_error == reference.test_error


def test_bad_labels_name_the_problem():
    data = small_classification()
    halves = data.y_train.float() + 0.5
    with pytest.raises(ValueError, match=r"must be a class index, but these are floats that are not whole numbers \(e.g. "):
        train_mlp(Data(data.x_train, halves, data.x_test, data.y_test))
    with pytest.raises(TypeError, match="must be a torch.Tensor or a numpy array, got list"):
        Data(data.x_train, data.y_train.tolist(), data.x_test, data.y_test)


# ---------------------------------------------------------------- a float64 model given float32 inputs
def test_dtype_mismatch_is_named_or_converted():
    data = small_classification()
    model = MLP([6, 8, 3]).double()
    with pytest.raises(TypeError, match=r"input is torch.float32 but the model's weights are torch.float64"):
        model(data.x_train)
    with pytest.raises(TypeError, match=r"input is torch.float32 but the model's weights are torch.float64"):
        model.forward_cached(data.x_train)
    rule = DFA(model)  # float32 feedback for a float64 model: converted, as train() does
    angles = alignment_angles(model, rule, data.x_train, data.y_train)
    assert angles == alignment_angles(model, rule, data.x_train.double(), data.y_train)
    bp = alignment_angles(model, BP(), data.x_train, data.y_train.numpy())
    assert max(bp["signal"]) < 1e-3


# ---------------------------------------------------- numpy and torch integers as the number of epochs
@pytest.mark.parametrize("epochs", [np.int64(2), np.int32(2), torch.tensor(2)])
def test_any_integral_number_of_epochs(epochs):
    _, h = train_mlp(small_classification(), epochs=epochs)
    assert h.epoch == [0, 1, 2] and all(type(e) is int for e in h.epoch)


@pytest.mark.parametrize("epochs", [2.0, -1, True, "2"])
def test_non_integral_epochs_are_named(epochs):
    with pytest.raises(ValueError, match="epochs must be a non-negative integer"):
        train_mlp(small_classification(), epochs=epochs)


# ------------------------------------------ feedback matrices: loading a state_dict and assigning them
@pytest.mark.parametrize("cls", [DFA, FA])
def test_feedback_state_dict_checks_the_sizes(cls):
    seed_everything(0)
    source = cls(MLP([784, 64, 32, 10]))
    target = cls(MLP([784, 32, 64, 10]))
    before = [b.clone() for b in target.buffers()]
    with pytest.raises(RuntimeError, match=r"saved for a network of sizes \[784, 64, 32, 10\].*sizes \[784, 32, 64, 10\]"):
        target.load_state_dict(source.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(before, target.buffers()))  # nothing half-loaded
    same = cls(MLP([784, 64, 32, 10]))
    same.load_state_dict(source.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(source.buffers(), same.buffers()))


def test_feedback_state_dict_survives_torch_save_with_weights_only():
    rule = DFA(MLP([6, 5, 4, 3]))
    buf = io.BytesIO()
    torch.save(rule.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = DFA(MLP([6, 4, 5, 3]))
    with pytest.raises(RuntimeError, match="wrong layers"):
        other.load_state_dict(state)


def test_assigning_feedback_checks_the_shape():
    dfa, fa = DFA(MLP([6, 5, 4, 3])), FA(MLP([6, 5, 4, 3]))
    with pytest.raises(ValueError, match=r"DFA.B .* must have shape \(9, 3\) .*got \(5, 5\).*set_feedback"):
        dfa.B = torch.randn(5, 5)
    with pytest.raises(ValueError, match=r"DFA.B .*got NoneType"):
        dfa.B = None
    with pytest.raises(ValueError, match=r"FA feedback matrix for hidden layer 2 must have shape \(4, 3\).*got \(3, 4\)"):
        fa.B2 = torch.randn(3, 4)
    assert dfa.B.shape == (9, 3) and fa.B2.shape == (4, 3)
    new = torch.zeros(9, 3)
    dfa.B = new  # the right shape is accepted as before
    assert dfa.B is new
    fa.B1 = torch.ones(5, 4)
    assert torch.equal(fa.feedback[0], torch.ones(5, 4))
