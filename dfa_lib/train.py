"""The training loop: batches, epochs, evaluation, history and callbacks.

Everything a single mini-batch goes through (forward, error, signals, update) is
:class:`dfa_lib.step.Step` for an :class:`~dfa_lib.models.MLP` on a rule's fast path and
:class:`dfa_lib.step.AutogradStep` for any other ``nn.Module`` of ``nn.Linear``/``nn.Conv2d``
layers (chapters 10, 11); this module only prepares the run and loops.  The options cover
what the seeds did with separate copies of the loop: seed 001's averaged loops
(:mod:`dfa_lib.averaging`), frozen layers (seed 003), early stopping on a tolerance (seed 001).

Introduced in chapter 1 (``book/01_linear_fa.ipynb``); averaging in chapter 4, frozen
layers in chapter 6.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from .averaging import make_averaging
from .checks import check_epochs, check_inputs  # issue 10
from .data import Data
from .history import History
from .losses import check_loss, per_example_loss, per_example_loss_of_scores, predictions_of_scores
from .metrics import error_rate
from .models import MLP
from .rules import BP, FeedbackRule, learning_layers
from .step import AutogradStep, CompiledStep, EpochSums, Step, TrainingDivergedError
from .targets import Targets, gather_rows, prepare_targets
from .update import check_lr, make_updater
from .utils import flush_denormal

DIVERGENCE_CHECK_STEPS = 200  # read the on-device divergence flag this often (and at every epoch's end)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, targets: Targets, loss: str, batch_size: int = 10000) -> tuple:
    """Mean loss and error of ``model`` on a whole set, in chunks of ``batch_size``, in eval mode.

    An :class:`~dfa_lib.models.MLP` returns its output function's values; any other model scores
    (logits), which the loss turns into probabilities itself (:mod:`dfa_lib.losses`).
    """
    was_training = model.training
    model.eval()
    try:
        out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    if isinstance(model, MLP):
        return per_example_loss(loss, out, targets.values).mean().item(), error_rate(out, targets)
    return (per_example_loss_of_scores(loss, out, targets.values).mean().item(),
            error_rate(predictions_of_scores(loss, out), targets))


def train(
    model: torch.nn.Module,
    rule: FeedbackRule,
    data: Data,
    *,
    epochs: int = 10,
    batch_size: int | None = 64,
    lr: float = 0.01,
    optimizer: torch.optim.Optimizer | None = None,
    loss: str = "bce",
    reduction: str = "mean",
    averaging: str = "none",
    frozen: Sequence[int] = (),
    tol: float | None = None,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    eval_initial: bool = True,
    kind: str | None = None,
    on_step: Callable | None = None,
    on_epoch: Callable | None = None,
    progress: bool = True,
    compile: bool | str = False,
) -> History:
    """Train ``model`` with ``rule`` on ``data`` and return its :class:`History`.

    ``model`` is a :class:`~dfa_lib.models.MLP` or any ``nn.Module`` made of ``nn.Linear`` and
    ``nn.Conv2d`` layers (with activations, pooling, flatten, dropout, batch norm between them)
    that returns scores (logits); see :mod:`dfa_lib.rules.graph`.

    Args:
        epochs: passes over the training set.
        batch_size: examples per step; ``None`` for the full set (seed 002's full batch).
        lr, optimizer: plain SGD with ``lr`` unless an optimizer over ``model.parameters()`` is given.
            Plain SGD (``torch.optim.SGD`` without momentum or weight decay, also when passed in,
            e.g. with a learning-rate scheduler) updates the weights in place without filling
            ``.grad``; other optimizers see the rule's gradients in ``.grad`` (:mod:`dfa_lib.update`).
        loss: ``"bce"``, ``"ce"`` or ``"mse"`` (see :mod:`dfa_lib.losses`).
        reduction: ``"mean"`` divides the gradient by the number of rows in a step, ``"sum"`` does not
            (seed 001 sums).
        averaging: ``"none"``; ``"batch"`` replaces each batch by its mean before the error is formed
            (seed 001's "master error"); ``"class"`` by its per-class means (one row per class present).
        frozen: 1-based indices of (learning) layers that must not change (seed 003 freezes layer 1).
        tol: stop early when the training error changes by at most ``tol`` between epochs.
        generator: random stream for shuffling (default: a fresh one from torch's global RNG).
        kind: force the target kind: ``"classification"``, ``"binary"`` or ``"regression"``; inferred
            when None (``history.target_kind`` records it).  Float targets that look like class codes
            but are read as regression under ``loss="mse"`` give a warning.
        on_step: ``on_step(history, epoch, step, model, cache, e, signals)`` after every step's
            signals, before the weights change (e.g. to record alignment, chapter 1); on the
            autograd path ``cache``, ``e`` and ``signals`` are None.
        on_epoch: ``on_epoch(history, epoch, model)`` after every epoch's evaluation.
        progress: show a tqdm progress bar over epochs.
        compile: run each step through ``torch.compile`` (:class:`dfa_lib.step.CompiledStep`): ``True``
            for its default mode, or a mode name such as ``"reduce-overhead"`` (CUDA graphs on a GPU).
            MLP fast path only, without ``on_step``; the first steps pay the compile time (about 20 s
            per batch shape on a 2-core CPU), and a step that cannot be compiled runs eagerly with a warning.

    Raises:
        TrainingDivergedError: outputs or weights became NaN or infinite (names the epoch and steps).
        ValueError: a bad argument or input (each message names the problem); see the README's
            "When something goes wrong".
    """
    if hasattr(model, "n_nets"):
        raise TypeError(f"a SeedBatch of {model.n_nets} networks trains with dfa_lib.train_seeds (one generator each)")
    check_loss(loss, getattr(model, "output_name", None))  # issue 10: an output the loss cannot take
    layers = model.layers if isinstance(model, MLP) else learning_layers(model)
    bad = [l for l in frozen if not 1 <= l <= len(layers)]
    if bad:
        raise ValueError(f"frozen layers must be 1-based indices in 1..{len(layers)}; got {bad}")
    epochs = check_epochs(epochs)  # issue 10: any integral type, not bool
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    rule.to(device=device, dtype=dtype)
    x_train, x_test = data.x_train.to(device, dtype), data.x_test.to(device, dtype)
    check_inputs(x_train, x_test)  # issue 10: empty sets, NaN/inf rows (once, not per step)
    n_out = _output_width(model, x_train)
    t_train = prepare_targets(data.y_train.to(device), n_out, loss, len(x_train), dtype, kind)
    t_test = prepare_targets(data.y_test.to(device), n_out, loss, len(x_test), dtype, t_train.kind)
    if rule.uses_fast_path(model):
        step = Step(model, rule, loss, make_updater(model, optimizer, lr, frozen),
                    make_averaging(averaging, t_train), reduction, on_step)
        if compile:
            if on_step is not None:
                raise ValueError("compile=True runs each step as one compiled graph, which on_step cannot look "
                                 "inside: drop on_step or compile")
            step = CompiledStep(step, None if compile is True else compile)
    else:
        if compile:
            raise ValueError(f"compile=True needs an MLP and a rule with a fast path (BP, FA, DFA, shallow); "
                             f"{rule.name} on {type(model).__name__} trains through autograd hooks")
        if averaging != "none":
            raise ValueError(f"averaging={averaging!r} needs an MLP and a rule with a fast path (BP, FA, DFA, shallow)")
        if rule.graph is None and not isinstance(rule, BP):
            rule.attach(model)
        if rule.graph is not None and rule.graph.layers != list(layers):
            raise ValueError(f"{rule.name} is attached to another model: build the rule for the model you train")
        if optimizer is None:
            check_lr(lr)
            optimizer = torch.optim.SGD(list(model.parameters()) + list(rule.parameters()), lr=lr)
        frozen_params = [p for l in frozen for p in layers[l - 1].parameters()]
        step = AutogradStep(model, rule, loss, optimizer, reduction, frozen_params, on_step)
    n = len(x_train)
    bs = n if batch_size is None else min(int(batch_size), n)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    history = History(rule=getattr(rule, "name", type(rule).__name__), target_kind=t_train.kind)
    error_norm = (t_train.values**2).sum().item() if t_train.kind == "regression" else n

    def check(sums: EpochSums, ep: int, first: int, last: int) -> None:
        problem = sums.diverged(model, min(last * bs, n))
        if problem:
            raise TrainingDivergedError(
                f"{history.rule}: {problem} at epoch {ep}, between steps {first} and {last}; "
                "lower the learning rate or the feedback scale")

    # Zero-initialised DFA nets produce subnormal floats that are ~10x slower on CPUs;
    # flushing them to zero changes no result that matters and keeps epochs fast.
    with flush_denormal():
        start = time.perf_counter()
        if eval_initial:
            history.log(0, evaluate(model, x_train, t_train, loss), evaluate(model, x_test, t_test, loss))
        epochs_bar = _progress_bar(range(1, epochs + 1), history.rule, progress)
        for ep in epochs_bar:
            order = torch.randperm(n, generator=generator).to(device) if shuffle else torch.arange(n, device=device)
            sums, checked = EpochSums(device), 0
            model.train()
            for k, i in enumerate(range(0, n, bs), start=1):
                idx = order[i : i + bs]
                step(gather_rows(x_train, idx), t_train.rows(idx), sums, (history, ep, k))
                if k % DIVERGENCE_CHECK_STEPS == 0:
                    check(sums, ep, checked + 1, k)
                    checked = k
            check(sums, ep, checked + 1, k)
            history.log(ep, (sums.loss.item() / n, sums.errors.item() / error_norm),
                        evaluate(model, x_test, t_test, loss))
            if on_epoch is not None:
                on_epoch(history, ep, model)
            if progress:
                epochs_bar.set_postfix(test_error=f"{history.test_error[-1]:.4g}")
            if tol is not None and ep >= 2 and len(history.train_error) >= 2:
                change = abs(history.train_error[-1] - history.train_error[-2])
                if change <= tol:
                    history.stopped_early = f"epoch {ep}: training error changed by {change:.3g} <= tol {tol}"
                    break
        history.seconds = time.perf_counter() - start
    return history


def _output_width(model: torch.nn.Module, x: torch.Tensor) -> int:
    """The number of outputs, from the MLP's sizes or one forward pass of two rows (with a clear error)."""
    if isinstance(model, MLP):
        model._check_input(x)
        return model.sizes[-1]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2])
    except RuntimeError as err:
        raise ValueError(f"the model cannot take inputs of shape {tuple(x.shape[1:])} (one example): {err}") from err
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise ValueError(f"the model must return scores of shape (batch, n_outputs); it returned shape {tuple(out.shape)}")
    return out.shape[1]


def _progress_bar(epochs: range, name: str, show: bool):
    if not show:
        return epochs
    from tqdm.auto import tqdm

    return tqdm(epochs, desc=name, leave=False)
