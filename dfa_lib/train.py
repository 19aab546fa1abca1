"""One training loop for every feedback rule.

The loop is the data flow of the book: draw a mini-batch by indexing preloaded tensors,
forward with a cache, output error, the rule's signals, a weight update, then metrics
into a :class:`History`.  With plain SGD (the default) the update goes straight into the
weights (:func:`dfa_lib.rules.sgd_update`, one fused matmul per layer); any other optimizer
gets the gradients in ``.grad`` and takes its own step.  Options cover what the seeds did with separate
copies of the loop: seed 001's batch-averaged ("master error") and per-class averaged
loops, frozen layers (seed 003), early stopping on a tolerance (seed 001).

Introduced in chapter 1 (``book/01_linear_fa.ipynb``); averaging in chapter 4, frozen
layers in chapter 6.
"""
from __future__ import annotations

import math
import numbers
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .checks import check_epochs, check_inputs  # issue 10
from .data import Data
from .losses import check_loss, output_error, per_example_loss
from .metrics import error_rate, wrong_count
from .models import MLP
from .rules import FeedbackRule, compute_grads, sgd_update
from .targets import Targets, prepare_targets

AVERAGING = ("none", "batch", "class")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class History:
    """Per-epoch metrics of one run.  Entry 0 is the untrained network when ``eval_initial``.

    Errors are fractions (multiply by 100 for %); for regression they are normalised
    squared errors.  ``target_kind`` says which the run used: ``"classification"``,
    ``"binary"`` or ``"regression"`` (see :mod:`dfa_lib.targets`; force it with
    ``train(..., kind=...)``).  ``records`` holds anything a callback adds (e.g. alignment angles).
    """

    rule: str
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_error: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_error: list = field(default_factory=list)
    records: dict = field(default_factory=dict)
    stopped_early: str | None = None
    seconds: float = 0.0
    target_kind: str | None = None

    def record(self, key: str, value) -> None:
        """Append ``value`` to ``records[key]`` (used by callbacks)."""
        self.records.setdefault(key, []).append(value)

    def final(self, key: str = "test_error"):
        """The last value of a metric."""
        return getattr(self, key)[-1] if hasattr(self, key) else self.records[key][-1]

    def plot(self, keys: Sequence[str] = ("train_error", "test_error"), ax=None, label: str | None = None,
             percent: bool = True, logy: bool = False, **kwargs):
        """One line per metric against epochs; returns the axes."""
        from .plot import plot_history

        return plot_history(self, keys=keys, ax=ax, label=label, percent=percent, logy=logy, **kwargs)

    def __repr__(self) -> str:
        last = f", test_error={self.test_error[-1]:.4g}" if self.test_error else ""
        return f"History({self.rule}, epochs={self.epoch[-1] if self.epoch else 0}{last})"


@torch.no_grad()
def evaluate(model: MLP, x: torch.Tensor, targets: Targets, loss: str, batch_size: int = 10000) -> tuple:
    """Mean loss and error of ``model`` on a whole set, in chunks of ``batch_size``."""
    outs = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    out = torch.cat(outs)
    mean_loss = per_example_loss(loss, out, targets.values).mean().item()
    return mean_loss, error_rate(out, targets)


def train(
    model: MLP,
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
) -> History:
    """Train ``model`` with ``rule`` on ``data`` and return its :class:`History`.

    Args:
        epochs: passes over the training set.
        batch_size: examples per step; ``None`` for the full set (seed 002's full batch).
        lr, optimizer: plain SGD with ``lr`` unless an optimizer over ``model.parameters()`` is given.
            Plain SGD (``torch.optim.SGD`` without momentum or weight decay, also when passed in,
            e.g. with a learning-rate scheduler) updates the weights in place without filling
            ``.grad``; other optimizers see the rule's gradients in ``.grad``.
        loss: ``"bce"``, ``"ce"`` or ``"mse"`` (see :mod:`dfa_lib.losses`).
        reduction: ``"mean"`` divides the gradient by the number of rows in a step, ``"sum"`` does not
            (seed 001 sums).
        averaging: ``"none"``; ``"batch"`` replaces each batch by its mean before the error is formed
            (seed 001's "master error"); ``"class"`` by its per-class means (one row per class present).
        frozen: 1-based indices of layers that must not change (seed 003 freezes layer 1).
        tol: stop early when the training error changes by at most ``tol`` between epochs.
        generator: random stream for shuffling (default: a fresh one from torch's global RNG).
        kind: force the target kind: ``"classification"``, ``"binary"`` or ``"regression"``; inferred
            when None (``history.target_kind`` records it).  Float targets that look like class codes
            but are read as regression under ``loss="mse"`` give a warning.
        on_step: ``on_step(history, epoch, step, model, cache, e, signals)`` after every step's
            signals, before the weights change (e.g. to record alignment, chapter 1).
        on_epoch: ``on_epoch(history, epoch, model)`` after every epoch's evaluation.
        progress: show a tqdm progress bar over epochs.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (names epoch and step).
        ValueError: a bad argument or input (each message names the problem); see the README's
            "When something goes wrong".
    """
    check_loss(loss, model.output_name)  # issue 10: refuse an output the loss cannot take
    if averaging not in AVERAGING:
        raise ValueError(f"averaging must be one of {AVERAGING}, got {averaging!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    bad = [l for l in frozen if not 1 <= l <= len(model.layers)]
    if bad:
        raise ValueError(f"frozen layers must be 1-based indices in 1..{len(model.layers)}; got {bad}")
    epochs = check_epochs(epochs)  # issue 10: any integral type

    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    rule.to(device=device, dtype=dtype)
    x_train, x_test = data.x_train.to(device, dtype), data.x_test.to(device, dtype)
    model._check_input(x_train)
    check_inputs(x_train, x_test)  # issue 10: empty sets, NaN/inf rows (once, not per step)
    n_out = model.sizes[-1]
    t_train = prepare_targets(data.y_train.to(device), n_out, loss, len(x_train), dtype, kind)
    t_test = prepare_targets(data.y_test.to(device), n_out, loss, len(x_test), dtype, t_train.kind)
    groups, n_groups = None, 0
    if averaging == "class":
        if t_train.kind == "regression":
            raise ValueError("averaging='class' needs class labels, but the targets are real-valued (regression)")
        groups = t_train.labels if t_train.kind == "classification" else (t_train.values[:, 0] > t_train.threshold).long()
        n_groups = int(groups.max()) + 1  # once, not per step

    if optimizer is None and not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    opt = optimizer if optimizer is not None else torch.optim.SGD(model.parameters(), lr=lr)
    plain_sgd = plain_sgd_rates(opt, model)
    if plain_sgd is not None:
        opt.zero_grad(set_to_none=True)  # no stale .grad: the fused path never writes one
        opt.step()  # a no-op without gradients; tells lr schedulers that the optimizer has stepped
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    n = len(x_train)
    bs = n if batch_size is None else min(int(batch_size), n)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    history = History(rule=getattr(rule, "name", type(rule).__name__), target_kind=t_train.kind)
    frozen = set(frozen)

    def log_epoch(ep: int, train_loss: float, train_err: float) -> None:
        history.epoch.append(ep)
        history.train_loss.append(train_loss)
        history.train_error.append(train_err)
        test_loss, test_err = evaluate(model, x_test, t_test, loss)
        history.test_loss.append(test_loss)
        history.test_error.append(test_err)

    # Zero-initialised DFA nets produce subnormal floats that are ~10x slower on CPUs;
    # flushing them to zero changes no result that matters and keeps epochs fast.
    with _flush_denormal():
        start = time.perf_counter()
        model.eval()
        if eval_initial:
            log_epoch(0, *evaluate(model, x_train, t_train, loss))

        bar = range(1, epochs + 1)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(bar, desc=history.rule, leave=False)
        for ep in bar:
            order = torch.randperm(n, generator=generator).to(device) if shuffle else torch.arange(n, device=device)
            loss_sum = 0.0
            err_sum = torch.zeros((), device=device, dtype=torch.float64)
            for step, i in enumerate(range(0, n, bs), start=1):
                idx = order[i : i + bs]
                # index_select: the same rows as x[idx], ~3x faster for a row gather on CPU
                xb, yb = x_train.index_select(0, idx), t_train.values.index_select(0, idx)
                cache = model.forward_cached(xb)
                batch_loss = per_example_loss(loss, cache.out, yb).sum().item()
                if not math.isfinite(batch_loss):
                    raise TrainingDivergedError(
                        f"{history.rule}: the loss became {batch_loss} at epoch {ep}, step {step}; "
                        "lower the learning rate or the feedback scale"
                    )
                loss_sum += batch_loss
                if t_train.kind == "regression":  # running sum of squared errors, normalised below
                    err_sum += ((cache.out - yb) ** 2).sum()
                elif t_train.kind == "classification":  # the common case, without building a Targets per step
                    err_sum += (cache.out.argmax(1) != t_train.labels.index_select(0, idx)).sum()
                else:
                    err_sum += wrong_count(cache.out, _rows(t_train, idx))
                if averaging == "batch":
                    cache, yb = cache.averaged(), yb.mean(0, keepdim=True)
                elif averaging == "class":
                    g = groups[idx]
                    cache = cache.averaged(g, n_groups=n_groups)
                    yb = cache_mean_targets(yb, g, n_groups)
                e = output_error(loss, model.output_name, cache.pre[-1], cache.out, yb)
                scale = 1.0 / len(e) if reduction == "mean" else 1.0
                if plain_sgd is not None:
                    signals = rule.signals(model, cache, e)
                    if on_step is not None:
                        on_step(history, ep, step, model, cache, e, signals)
                    sgd_update(model, cache, signals, plain_sgd(), scale, frozen)
                else:
                    signals = compute_grads(model, rule, cache, e, scale, frozen)
                    if on_step is not None:
                        on_step(history, ep, step, model, cache, e, signals)
                    opt.step()
            train_loss = loss_sum / n
            if t_train.kind == "regression":
                train_err = err_sum.item() / (t_train.values**2).sum().item()
            else:
                train_err = err_sum.item() / n
            log_epoch(ep, train_loss, train_err)
            if on_epoch is not None:
                on_epoch(history, ep, model)
            if progress:
                bar.set_postfix(test_error=f"{history.test_error[-1]:.4g}")
            if tol is not None and len(history.train_error) >= 2 and ep >= 2:
                change = abs(history.train_error[-1] - history.train_error[-2])
                if change <= tol:
                    history.stopped_early = f"epoch {ep}: training error changed by {change:.3g} <= tol {tol}"
                    break
        history.seconds = time.perf_counter() - start
    return history


def plain_sgd_rates(optimizer: torch.optim.Optimizer, model: MLP) -> Callable | None:
    """For plain SGD, a function giving each layer's current ``(weight lr, bias lr)``; else None.

    Plain means ``torch.optim.SGD`` itself with no momentum, weight decay, Nesterov or
    ``maximize`` in any parameter group: then a step is exactly ``p -= lr * p.grad`` and
    :func:`dfa_lib.rules.sgd_update` can apply it without ``.grad``.  The rates are read from
    the optimizer's groups at every step, so learning-rate schedulers keep working.
    Parameters the optimizer does not hold, or that do not require grad, get ``None``.
    """
    if type(optimizer) is not torch.optim.SGD:
        return None
    for g in optimizer.param_groups:
        if g.get("momentum", 0) or g.get("weight_decay", 0) or g.get("nesterov") or g.get("maximize"):
            return None
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}

    def rate(p):
        g = None if p is None or not p.requires_grad else group_of.get(id(p))
        return None if g is None else float(g["lr"])

    def rates() -> list:
        return [(rate(layer.weight), rate(layer.bias)) for layer in model.layers]

    return rates


@contextmanager
def _flush_denormal():
    """Flush subnormal floats to zero for the duration of a run (where the CPU supports it)."""
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


def _rows(t: Targets, idx: torch.Tensor) -> Targets:
    return Targets(t.values[idx], t.kind, None if t.labels is None else t.labels[idx], t.threshold)


def cache_mean_targets(y: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per-group means of target rows, in the same order as :meth:`ForwardCache.averaged`."""
    from .models import group_mean_fn

    return group_mean_fn(groups, n_groups)(y)
