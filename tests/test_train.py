"""The training loop: determinism, averaging, frozen layers, early stop and clear errors."""
import pytest
import torch

from conftest import small_classification
from dfa_lib import (
    BP, DFA, FA, MLP, Data, History, TrainingDivergedError, alignment_angles, linear_teacher, logic_gate,
    seed_everything, train,
)
from dfa_lib.averaging import group_mean_fn


def run(seed=0, epochs=3, **kw):
    seed_everything(seed)
    model = MLP([6, 8, 8, 3], hidden="tanh")
    rule = DFA(model, dist="uniform", scale=0.5)
    hist = train(model, rule, small_classification(), epochs=epochs, batch_size=16, lr=0.5, progress=False, **kw)
    return model, hist


def test_same_seed_same_numbers():
    m1, h1 = run(0)
    m2, h2 = run(0)
    assert h1.test_error == h2.test_error and h1.train_loss == h2.train_loss
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    _, h3 = run(1)
    assert h3.train_loss != h1.train_loss


def test_training_lowers_the_loss_and_history_is_complete():
    _, h = run(0)
    assert h.epoch == [0, 1, 2, 3]
    assert len(h.test_error) == len(h.train_loss) == 4
    assert h.train_loss[-1] < h.train_loss[0]


def test_batch_averaging_with_batch_size_one_equals_no_averaging():
    data = small_classification(n=12)
    results = []
    for averaging in ("none", "batch", "class"):
        seed_everything(3)
        model = MLP([6, 5, 3], hidden="tanh")
        rule = DFA(model)
        train(model, rule, data, epochs=2, batch_size=1, lr=0.1, averaging=averaging, progress=False,
              generator=torch.Generator().manual_seed(0))
        results.append([p.detach().clone() for p in model.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_batch_averaging_is_one_update_from_the_mean_row():
    """Seed 001's master error: average a, h, y_hat and y over the batch, then one outer product."""
    torch.manual_seed(0)
    model = MLP([4, 5, 2], hidden="tanh")
    x, y = torch.randn(8, 4), torch.nn.functional.one_hot(torch.arange(8) % 2, 2).float()
    before = [p.detach().clone() for p in model.parameters()]
    rule = BP()
    train(model, rule, Data(x, y.argmax(1), x, y.argmax(1)), epochs=1, batch_size=8, lr=1.0, averaging="batch",
          shuffle=False, progress=False, eval_initial=False)
    W1, b1, W2, b2 = before
    a1 = x @ W1.T + b1
    h1 = torch.tanh(a1)
    y_hat = torch.sigmoid(h1 @ W2.T + b2)
    e = (y_hat.mean(0) - y.mean(0)).unsqueeze(0)  # the master error
    h_bar, a_bar, x_bar = h1.mean(0, keepdim=True), a1.mean(0, keepdim=True), x.mean(0, keepdim=True)
    d1 = (e @ W2) * (1 - torch.tanh(a_bar) ** 2)  # f' taken at the averaged pre-activation
    torch.testing.assert_close(model.layers[1].weight, W2 - e.T @ h_bar)
    torch.testing.assert_close(model.layers[0].weight, W1 - d1.T @ x_bar)


def test_group_means():
    t = torch.tensor([[1.0], [2.0], [10.0], [4.0]])
    g = torch.tensor([0, 0, 2, 0])
    torch.testing.assert_close(group_mean_fn(g, 4)(t), torch.tensor([[7 / 3], [10.0]]))


def test_frozen_layer_does_not_move():
    seed_everything(0)
    model = MLP([6, 8, 8, 3])
    w0 = model.layers[0].weight.detach().clone()
    w1 = model.layers[1].weight.detach().clone()
    train(model, BP(), small_classification(), epochs=1, batch_size=16, lr=0.5, frozen=[1], progress=False)
    assert torch.equal(model.layers[0].weight, w0)
    assert not torch.equal(model.layers[1].weight, w1)
    with pytest.raises(ValueError, match="frozen layers must be 1-based"):
        train(model, BP(), small_classification(), epochs=1, frozen=[0], progress=False)


def test_early_stop_on_tolerance():
    _, h = run(0, epochs=50, tol=1.0)
    assert h.stopped_early and len(h.epoch) == 3  # epochs 0, 1, 2: stops at the first check


def test_divergence_names_epoch_and_step():
    seed_everything(0)
    model = MLP([6, 8, 3], hidden="identity")
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+, between steps \d+ and \d+"):
        train(model, BP(), small_classification(), epochs=50, batch_size=16, lr=1e3, loss="mse", progress=False)


@pytest.mark.parametrize(
    "labels,message",
    [
        (torch.full((64,), 7), r"class indices in \[0, 3\).*from 7 to 7"),
        (torch.rand(64, 3), "not one-hot"),
        (torch.zeros(64, 4), r"rows of shape \(N, 3\)"),
        (torch.zeros(10, dtype=torch.long), "disagree on the number of examples"),
    ],
)
def test_bad_labels_give_clear_errors(labels, message):
    data = small_classification()
    bad = Data(data.x_train, labels, data.x_test, data.y_test)
    model = MLP([6, 8, 3])
    with pytest.raises(ValueError, match=message):
        train(model, BP(), bad, epochs=1, progress=False)


def test_one_hot_labels_equal_class_indices():
    data = small_classification()
    one_hot = Data(data.x_train, torch.nn.functional.one_hot(data.y_train, 3).float(), data.x_test, data.y_test)
    results = []
    for d in (data, one_hot):
        seed_everything(0)
        model = MLP([6, 8, 3])
        results.append(train(model, BP(), d, epochs=2, batch_size=16, progress=False).test_error)
    assert results[0] == results[1]


def test_wrong_input_width_is_reported():
    model = MLP([5, 8, 3])
    with pytest.raises(ValueError, match=r"input must have shape \(batch, 5\).*got \(64, 6\)"):
        train(model, BP(), small_classification(), epochs=1, progress=False)


def test_xor_with_dfa_learns():
    seed_everything(0)
    x, y = logic_gate("xor", "01")
    model = MLP([2, 8, 1], hidden="tanh", init="xavier")
    h = train(model, DFA(model, dist="uniform", scale=1.0), Data(x, y, x, y), epochs=2000, batch_size=None,
              lr=0.5, loss="bce", progress=False)
    assert h.test_error[-1] == 0.0


def test_linear_fa_regression_converges():
    data, _ = linear_teacher(seed=0)
    seed_everything(0)
    model = MLP([30, 20, 10], hidden="identity", bias=False, init=("uniform", 0.01)).double()
    h = train(model, FA(model), data, epochs=300, batch_size=None, lr=0.1, loss="mse", progress=False)
    assert h.test_error[-1] < 1e-3 < h.test_error[0]


def test_alignment_angles_zero_for_bp_and_shapes():
    seed_everything(0)
    model = MLP([6, 8, 8, 3])
    data = small_classification()
    bp = alignment_angles(model, BP(), data.x_train, data.y_train)
    assert len(bp["signal"]) == 2 and max(bp["signal"] + bp["update"]) < 1e-3
    dfa = alignment_angles(model, DFA(model), data.x_train, data.y_train)
    assert all(0 <= a <= 180 for a in dfa["signal"])


def test_history_records_and_plots():
    _, h = run(0)
    h.record("angle", 1.0)
    assert h.records["angle"] == [1.0] and isinstance(h, History)
    import matplotlib

    matplotlib.use("Agg")
    ax = h.plot()
    assert len(ax.lines) == 2


def test_nan_outputs_under_bce_are_reported_as_divergence_not_a_torch_range_error():
    seed_everything(0)
    model = MLP([6, 8, 3], hidden="tanh")
    with torch.no_grad():
        model.layers[0].weight[0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, between steps 1 and"):
        train(model, DFA(model), small_classification(), epochs=2, batch_size=16, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="counts CUDA synchronisations: needs a GPU")
def test_a_training_step_never_synchronises_with_the_gpu():
    """Loss, errors and the divergence flags stay on the device: an epoch of 128 steps synchronises a
    handful of times (its reads at the end), not once per step (torch.cuda.set_sync_debug_mode)."""
    import warnings

    seed_everything(0)
    data = small_classification(n=256)
    device = torch.device("cuda")
    model = MLP([6, 8, 8, 3]).to(device)
    gpu = Data(data.x_train.to(device), data.y_train.to(device), data.x_test.to(device), data.y_test.to(device))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train(model, DFA(model), gpu, epochs=1, batch_size=2, lr=0.1, eval_initial=False, progress=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) < 128 // 4, f"{len(syncs)} synchronisations in one epoch of 128 steps"
