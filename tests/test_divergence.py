"""A run that diverges stops with TrainingDivergedError naming the epoch and the step.

A run diverges in two ways: its weights overflow (the outputs turn NaN), or a sigmoid or
softmax prediction saturates to exactly 0 or 1 on the wrong side, which keeps logits, weights
and the loss (computed from the logits) finite.  train() must catch both, on every loss,
without reading the device every step; and a healthy run, even a confident one with a few
mistakes, must train to the end.
"""
import os

import pytest
import torch

from conftest import small_classification, train_mlp
from dfa_lib import BP, DFA, FA, MLP, TrainingDivergedError, linear_teacher, load_mnist, seed_everything, train

MNIST_DIR = os.environ.get("DFA_MNIST_DIR")
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster



@pytest.mark.parametrize(
    "loss,lr,scale",
    [
        # saturated predictions: the loss from the logits stays finite
        pytest.param("bce", 1e3, 1.0),
        pytest.param("ce", 1e3, 1.0),
        # weights overflow to inf, outputs turn NaN
        ("bce", 1e38, 100.0),
        ("ce", 1e38, 100.0),
        ("mse", 1e38, 100.0),
        ("mse", 1e3, 1.0),
    ],
)
def test_diverged_run_raises_for_every_loss(loss, lr, scale):
    seed_everything(0)
    model = MLP([6, 32, 32, 3])
    with pytest.raises(TrainingDivergedError) as err:
        train(model, DFA(model), small_classification(n=256, scale=scale), epochs=3, batch_size=64, lr=lr, loss=loss, progress=False)
    message = str(err.value)
    assert "epoch" in message and "step" in message, message


def test_diverged_regression_run_raises():
    """A regression-sized run (chapter 1's linear task) whose squared error blows up."""
    data, _ = linear_teacher(n_in=30, n_out=10, n_samples=100, seed=0)
    seed_everything(0)
    model = MLP([30, 20, 10], hidden="identity", bias=False).double()
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+") as err:
        train(model, FA(model), data, epochs=200, batch_size=None, lr=5.0, loss="mse", kind="regression",
              progress=False)
    assert "step" in str(err.value)


@pytest.mark.skipif(not MNIST_DIR, reason="needs DFA_MNIST_DIR")
def test_mnist_dfa_at_lr_1e3_saturates_and_raises():
    """A reader's real mistake: MNIST subset, MLP([784, 128, 128, 10]), DFA, lr=1e3: outputs saturate to exactly 0 or 1."""
    data = load_mnist(root=MNIST_DIR).subset(500, 200)
    seed_everything(0)
    model = MLP([784, 128, 128, 10])
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+") as err:
        train(model, DFA(model), data, epochs=2, lr=1e3, progress=False)
    assert "step" in str(err.value)


def test_divergence_check_does_not_read_the_device_every_step(monkeypatch):
    """The check must stay on the device: no host synchronisation per step (read once per epoch or every few
    hundred steps), so that a GPU run is not slowed.  Counted here as reads of tensor values on the host."""
    data = small_classification(n=512)
    seed_everything(0)
    model = MLP([6, 8, 3])
    reads = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            reads["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    steps = 512 // 2
    train(model, BP(), data, epochs=1, batch_size=2, lr=0.1, progress=False, eval_initial=False)
    assert reads["n"] < steps // 4, f"{reads['n']} host reads in one epoch of {steps} steps"


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_a_few_confident_mistakes_are_not_divergence(loss):
    """Saturated-and-wrong rows up to SATURATED_FRACTION (20 %) of an epoch are a healthy, very confident
    network's mistakes (chapter 4's per-class averaged loop meets 10.5 %); above it the run has diverged."""
    from dfa_lib.step import EpochSums
    from dfa_lib.targets import prepare_targets

    model = MLP([6, 3])
    labels = torch.zeros(100, dtype=torch.long)
    batch = prepare_targets(labels, 3, loss, 100)
    for wrong, verdict in [(20, None), (21, "21 of 100 rows")]:
        out = torch.full((100, 3), 0.25)
        out[:, 0] = 0.5
        out[:wrong] = torch.tensor([0.0, 1.0, 0.0])  # the target class at exactly 0: -log(0)
        sums = EpochSums("cpu")
        sums.add(loss, torch.zeros(100, 3), out, batch)  # the predictions decide; the logits only feed the loss
        problem = sums.diverged(model, 100)
        assert (problem is None) if verdict is None else (verdict in problem and "saturated" in problem), problem


def test_finite_runs_of_every_loss_train_to_the_end():
    """The counterpart: ordinary runs of every loss train to the end."""
    for loss in ("bce", "ce", "mse"):
        _, h = train_mlp(small_classification(), loss=loss, lr=0.1, epochs=2)
        assert h.epoch == [0, 1, 2]
