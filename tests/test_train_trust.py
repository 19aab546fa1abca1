"""dfa_lib.train never loses work and never runs something other than what was asked.

Each test is a mistake or a mishap as a reader meets it in a notebook: a run that blows up, the
stop button, a stale optimizer cell, a final softmax, a batch-norm net with an odd-sized set, a
rule class passed in place of a rule, a DataLoader in place of Data, a GPU generator, and a
progress bar that should move during a long epoch.
"""
import math

import pytest
import torch
import torch.nn as nn

from conftest import small_classification as small
from dfa_lib import (
    BP, DFA, MLP, Data, History, KolenPollack, TrainingDivergedError, linear_teacher, seed_everything, train,
)
from dfa_lib.rules import FA


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


def net(d=6, h=16, c=3):
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, c))


def quiet(model, rule, data, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("generator", torch.Generator().manual_seed(0))
    return train(model, rule, data, **kw)


# --------------------------------------------------------------------------- divergence and interruption
def test_mse_run_whose_loss_overflows_while_the_outputs_stay_finite_is_reported():
    """lr=1e4 under squared error: after one epoch the outputs are ~1e20, finite in float32, but their
    squared error is not; the run must not return a history whose test loss is inf."""
    seed_everything(0)
    model = MLP([6, 32, 32, 3])
    with pytest.raises(TrainingDivergedError, match="loss became infinite") as err:
        quiet(model, BP(), small(n=256), epochs=1, lr=1e4, loss="mse")
    assert "epoch 1" in str(err.value)


def test_the_epoch_sums_see_a_training_loss_that_overflows():
    """Inside an epoch, outputs of 1e20 (finite) give a squared error of 5e39 (inf in float32)."""
    from dfa_lib.step import EpochSums
    from dfa_lib.targets import prepare_targets

    model = MLP([6, 3])
    batch = prepare_targets(torch.tensor([0, 1, 2, 0]), 3, "mse", 4)
    out = torch.full((4, 3), 1e20)
    sums = EpochSums("cpu")
    sums.add("mse", out, out, batch)  # under "mse" the predictions are the logits
    problem = sums.diverged(model, 4)
    assert problem is not None and "loss" in problem, problem


def test_a_diverged_run_carries_the_history_of_the_epochs_it_completed():
    """Chapter 1's linear task at lr=5 learns for a few epochs, then blows up: those epochs are kept."""
    data, _ = linear_teacher(n_in=30, n_out=10, n_samples=100, seed=0)
    seed_everything(0)
    model = MLP([30, 20, 10], hidden="identity", bias=False).double()
    with pytest.raises(TrainingDivergedError) as err:
        quiet(model, FA(model), data, epochs=200, batch_size=None, lr=5.0, loss="mse", kind="regression")
    history = err.value.history
    assert isinstance(history, History)
    assert len(history.epoch) >= 2 and history.epoch == list(range(len(history.epoch)))
    assert all(math.isfinite(v) for v in history.train_loss)
    assert history.stopped_early.startswith("diverged") and not history.interrupted


def test_stopping_in_on_epoch_returns_the_epochs_trained():
    """The reader presses stop (a KeyboardInterrupt) while the third epoch's callback runs."""
    def on_epoch(history, epoch, model):
        if epoch == 3:
            raise KeyboardInterrupt

    seed_everything(0)
    model = MLP([6, 8, 3])
    with pytest.warns(UserWarning, match="interrupted in epoch 3"):
        history = quiet(model, DFA(model), small(), epochs=10, batch_size=16, lr=0.1, on_epoch=on_epoch)
    assert history.epoch == [0, 1, 2, 3]
    assert history.interrupted and "epoch 3 of 10" in history.stopped_early


def test_stopping_in_the_middle_of_an_epoch_keeps_the_epochs_before_it():
    """Stopped in epoch 2's third step (a long epoch, the reader gives up): epochs 0 and 1 stay."""
    def on_step(history, epoch, step, *rest):
        if (epoch, step) == (2, 3):
            raise KeyboardInterrupt

    seed_everything(0)
    model = net()
    with pytest.warns(UserWarning, match="interrupted in epoch 2"):
        history = quiet(model, DFA(model), small(), epochs=5, batch_size=16, lr=0.1, loss="ce", on_step=on_step)
    assert history.epoch == [0, 1] and history.interrupted
    assert "epochs up to 1" in history.stopped_early
    assert history.seconds > 0


def test_a_run_that_ends_normally_is_not_interrupted():
    seed_everything(0)
    model = MLP([6, 8, 3])
    history = quiet(model, DFA(model), small(), epochs=2, batch_size=16)
    assert not history.interrupted and history.stopped_early is None


# --------------------------------------------------------------------------- optimizer and output
@pytest.mark.parametrize("kind", ["MLP fast path", "any model through hooks"])
def test_an_optimizer_built_for_an_earlier_model_is_refused(kind):
    """A notebook cell made the optimizer, then the model was built again: training would change nothing."""
    seed_everything(0)
    make = (lambda: MLP([6, 8, 3])) if kind == "MLP fast path" else net
    old_model = make()
    opt = torch.optim.SGD(old_model.parameters(), lr=0.1)
    model = make()
    with pytest.raises(ValueError, match="built for another model"):
        quiet(model, DFA(model), small(), epochs=1, optimizer=opt, loss="bce" if kind == "MLP fast path" else "ce")


def test_an_optimizer_over_part_of_the_model_still_trains():
    """Leaving layers out of the optimizer is a way to freeze them, not a mistake."""
    seed_everything(0)
    model = net()
    opt = torch.optim.SGD(model[2].parameters(), lr=0.1)
    before = model[0].weight.clone()
    quiet(model, DFA(model), small(), epochs=1, optimizer=opt, loss="ce")
    assert torch.equal(model[0].weight, before)


def test_kolen_pollack_with_an_optimizer_that_lacks_its_feedback_weights_is_refused():
    """Without rule.parameters() in the optimizer, B never learns and KP silently runs as FA."""
    seed_everything(0)
    model = net()
    rule = KolenPollack(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"list\(rule.parameters\(\)\)"):
        quiet(model, rule, small(), epochs=1, optimizer=opt, loss="ce")


def test_kolen_pollack_with_both_sets_of_weights_in_the_optimizer_trains_its_feedback():
    seed_everything(0)
    model = net()
    rule = KolenPollack(model)
    opt = torch.optim.SGD(list(model.parameters()) + list(rule.parameters()), lr=0.1)
    before = rule.feedback_parameters[0].detach().clone()
    quiet(model, rule, small(), epochs=1, optimizer=opt, loss="ce")
    assert not torch.equal(rule.feedback_parameters[0].detach(), before)


def test_a_model_ending_in_softmax_under_cross_entropy_is_refused():
    """loss='ce' takes the softmax itself: a final nn.Softmax would make it a softmax of probabilities."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3), nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="drop the softmax"):
        quiet(model, DFA(model), small(), epochs=1, loss="ce")


# --------------------------------------------------------------------------- clear errors where the mistake is
def batch_norm_net():
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def test_batch_norm_and_a_last_batch_of_one_row_say_which_batch_size_to_use():
    """65 examples in batches of 64: the last batch is one row, which batch norm cannot normalise."""
    seed_everything(0)
    model = batch_norm_net()
    with pytest.raises(ValueError, match=r"batch norm.*one row.*65 examples in batches of 64.*batch_size=\d+") as err:
        quiet(model, DFA(model), small(n=65), epochs=1, batch_size=64, loss="ce")
    suggested = int(str(err.value).split("batch_size=")[1].split(",")[0].split(" ")[0])
    assert 65 % suggested != 1 and suggested >= 2


def test_batch_norm_with_batches_of_several_rows_trains():
    seed_everything(0)
    model = batch_norm_net()
    history = quiet(model, DFA(model), small(n=66), epochs=1, batch_size=64, loss="ce")
    assert history.epoch == [0, 1]


def test_conv_batch_norm_takes_a_single_image_batch():
    """BatchNorm2d normalises over the pixels too: one image of 4x4 is 16 values per channel, which trains."""
    seed_everything(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(32, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 1, 4, 4, generator=g)
    data = Data(x[:5], torch.tensor([0, 1, 2, 0, 1]), x[5:], torch.tensor([0, 1, 2, 0, 1]))
    assert quiet(model, BP(), data, epochs=1, batch_size=2, loss="ce").epoch == [0, 1]


def test_a_test_set_with_other_features_is_named():
    seed_everything(0)
    model = MLP([6, 8, 3])
    data = small()
    data = Data(data.x_train, data.y_train, data.x_test[:, :5], data.y_test)
    with pytest.raises(ValueError, match=r"x_test.*\(5,\).*x_train.*\(6,\)"):
        quiet(model, DFA(model), data, epochs=1)


def test_a_rule_class_in_place_of_a_rule_says_to_build_it():
    model = MLP([6, 8, 3])
    with pytest.raises(TypeError, match=r"DFA\(model\)"):
        quiet(model, DFA, small(), epochs=1)


def test_a_rule_name_in_place_of_a_rule_says_to_build_it():
    model = MLP([6, 8, 3])
    with pytest.raises(TypeError, match=r"DFA\(model\)"):
        quiet(model, "dfa", small(), epochs=1)


def test_a_dataloader_in_place_of_data_says_how_to_build_data():
    d = small()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(d.x_train, d.y_train), batch_size=16)
    model = MLP([6, 8, 3])
    with pytest.raises(TypeError, match=r"dfa_lib.Data\(x_train, y_train, x_test, y_test\)"):
        quiet(model, DFA(model), loader, epochs=1)


def test_a_tuple_in_place_of_data_says_how_to_build_data():
    d = small()
    model = MLP([6, 8, 3])
    with pytest.raises(TypeError, match=r"dfa_lib.Data\(\*data\)"):
        quiet(model, DFA(model), (d.x_train, d.y_train, d.x_test, d.y_test), epochs=1)


def test_a_model_that_returns_a_tuple_is_named():
    class ScoresAndFeatures(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(6, 16), nn.Linear(16, 3)

        def forward(self, x):
            h = torch.tanh(self.body(x))
            return self.head(h), h

    model = ScoresAndFeatures()
    with pytest.raises(TypeError, match="one tensor of scores"):
        quiet(model, DFA(model), small(), epochs=1, loss="ce")


# --------------------------------------------------------------------------- any device
def test_epoch_sums_are_float32_on_apple_mps_and_float64_elsewhere():
    """MPS has no float64; the sums keep float64 wherever it exists (the CPU's numbers do not change)."""
    from dfa_lib.step import accumulator_dtype

    assert accumulator_dtype("mps") == torch.float32
    assert accumulator_dtype(torch.device("mps", 0)) == torch.float32
    for device in ("cpu", "cuda", "cuda:1", "meta"):
        assert accumulator_dtype(device) == torch.float64


@pytest.mark.parametrize("path", ["MLP fast path", "any model through hooks"])
def test_a_training_step_makes_no_tensor_off_the_models_device(path):
    """A step of a model on PyTorch's 'meta' device (shapes, no values): any tensor made on a fixed device
    (the CPU) in the step, the loss, the signals or the epoch sums would fail to combine with it."""
    from dfa_lib.step import AutogradStep, EpochSums, Step
    from dfa_lib.targets import Targets
    from dfa_lib.update import make_updater

    meta = torch.device("meta")
    x = torch.empty(4, 6, device=meta)
    batch = Targets(torch.empty(4, 3, device=meta), "classification", labels=torch.empty(4, dtype=torch.long,
                                                                                        device=meta))
    if path == "MLP fast path":
        model = MLP([6, 8, 3]).to(meta)
        step = Step(model, DFA(model).to(meta), "bce", make_updater(model, None, 0.1))
    else:
        model = net().to(meta)
        step = AutogradStep(model, DFA(model).to(meta), "ce", torch.optim.SGD(model.parameters(), lr=0.1))
    sums = EpochSums(meta)
    step(x, batch, sums)
    assert sums.loss.device == meta and sums.errors.device == meta


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU for a CUDA generator")
def test_a_cuda_generator_shuffles_a_gpu_run():
    seed_everything(0)
    device = torch.device("cuda")
    model = MLP([6, 8, 3]).to(device)
    history = train(model, DFA(model), small().to(device), epochs=2, batch_size=16, progress=False,
                    generator=torch.Generator(device=device).manual_seed(0))
    assert history.epoch == [0, 1, 2]


# --------------------------------------------------------------------------- progress
class RecordingBar:
    """Stands in for tqdm: records what train() asks of its progress bar."""

    made = []

    def __init__(self, iterable=None, total=None, leave=True, **kwargs):
        self.total, self.leave, self.n, self.postfix, self.closed = total, leave, 0, {}, False
        RecordingBar.made.append(self)

    def update(self, n=1):
        self.n += n

    def set_postfix(self, **kwargs):
        self.postfix = kwargs

    def close(self):
        self.closed = True


def test_the_progress_bar_moves_during_an_epoch_and_shows_the_test_error(monkeypatch):
    """A long epoch must not sit at 0 %: the bar counts steps, over all epochs, and goes away at the end."""
    import tqdm.auto

    RecordingBar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    seen = []

    def on_step(history, epoch, step, *rest):
        seen.append(RecordingBar.made[-1].n)

    seed_everything(0)
    model = MLP([6, 8, 3])
    train(model, DFA(model), small(n=64), epochs=3, batch_size=4, progress=True, on_step=on_step,
          generator=torch.Generator().manual_seed(0))
    (bar,) = RecordingBar.made
    steps = 3 * 64 // 4
    assert bar.total == steps and bar.n == steps
    assert 0 < seen[15] < 16, "the bar did not move during the first epoch"
    assert not bar.leave and bar.closed
    assert "test_error" in bar.postfix


# --------------------------------------------------------------------------- a model carries one rule
def test_a_bp_baseline_made_by_deepcopy_of_a_hooked_model_is_refused():
    """copy.deepcopy copies the rule's hooks with the layers: train(copy, BP()) would train DFA."""
    import copy

    import dfa_lib

    model = net()
    DFA(model, generator=torch.Generator().manual_seed(0))
    baseline = copy.deepcopy(model)
    with pytest.raises(ValueError, match=r"carries another rule, DFA.*dfa_lib.detach\(model\)"):
        quiet(baseline, BP(), small(), epochs=1)
    dfa_lib.detach(baseline)
    quiet(baseline, BP(), small(), epochs=1)  # a plain model now: BP it is


@pytest.mark.parametrize("make_model", [lambda: MLP([6, 16, 3]), net], ids=["MLP", "Sequential"])
def test_train_with_another_rule_than_the_one_the_model_carries_is_refused(make_model):
    model = make_model()
    FA(model)
    with pytest.raises(ValueError, match="carries another rule, FA"):
        quiet(model, DFA(make_model()), small(), epochs=1, loss="ce" if isinstance(model, nn.Sequential) else "bce")
