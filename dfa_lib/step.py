"""One training step: forward, output error, the rule's signals, the update.

The step is the data flow of the book for one mini-batch::

    cache = model.forward_cached(x)             what every layer saw and computed
    cache.out = predictions(loss, cache.logits) y_hat: the loss's output function of the logits
    (cache, y) = averaging(cache, y)            only for seed 001's averaged loops (chapter 4)
    e = output_error(loss, ..., y)              dl/da_L = y_hat - y, the same for every rule
    deltas = rule.signals(model, cache, e)      one teaching signal per layer (dfa_lib.rules)
    update(model, cache, deltas, scale)         dW_l = delta_l^T h_{l-1} (dfa_lib.update)

That is :class:`Step`, the fast path of a model with a cached forward pass (an MLP,
:func:`dfa_lib.models.caches_forward`).  Any other model (or a rule without a fast path)
takes :class:`AutogradStep`: ``model(x)`` (logits), the loss, ``loss.backward()`` with the rule's hooks
deciding every hidden gradient (:mod:`dfa_lib.rules.graph`), ``optimizer.step()``.

Loss and error sums stay on the device (:class:`EpochSums`), so a step never waits for the
GPU; the loop reads them, and the divergence flag, every few hundred steps.  The loop over
batches and epochs is :func:`dfa_lib.train.train`.  Chapter 3 walks through one step,
chapter 10 through the autograd step.  :class:`CompiledStep` runs a :class:`Step` through
``torch.compile`` (``train(..., compile=True)``) and falls back to it when compiling fails.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from .losses import output_error, per_example_loss, predictions
from .metrics import error_sum
from .models import MLP
from .rules import FeedbackRule
from .targets import Targets


class TrainingDivergedError(RuntimeError):
    """The run produced non-finite outputs, weights or losses (names the epoch and the steps).

    ``history`` holds the :class:`~dfa_lib.history.History` of the epochs completed before the
    run diverged (``None`` where the raiser had none), so a notebook keeps what the run learned::

        try:
            history = train(model, rule, data, lr=1.0)
        except TrainingDivergedError as err:
            history = err.history
    """

    def __init__(self, message: str, history=None):
        super().__init__(message)
        self.history = history


def accumulator_dtype(device) -> torch.dtype:
    """The dtype of an epoch's running sums on ``device``: float64, except float32 on Apple's MPS,
    which has no float64 (a sum of 60 000 float32 losses still keeps about six digits)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


SATURATED_FRACTION = 0.20  # more saturated-and-wrong rows than this in an epoch means the run diverged


class EpochSums:
    """Running sums of one epoch on the device: loss, errors, and the signs of divergence.

    A run has diverged when an output, a weight or the summed loss is NaN or infinite (squared
    error overflows while the outputs are still finite), or when more than ``SATURATED_FRACTION``
    of the epoch's rows so far have predictions stuck at exactly 0 or 1 on the wrong side
    (sigmoid or softmax saturated by huge weights, where -log of the prediction is infinite),
    which the loss, computed from the logits and so finite, would not show.  A healthy network meets that on some
    rows (very confident mistakes): chapter 4's per-class averaged loop, whose step on a class
    mean is the most aggressive in the book, reaches 10.5 % of an epoch's rows (batch 200) while
    it learns.  Diverged runs measured 34 % to 89 % (an MNIST subset on
    ``MLP([784, 128, 128, 10])`` with DFA at ``lr=1e3``: 86 % in its first epoch), so the
    threshold, 20 %, sits between the two with a factor of about 1.7 to 1.9 on either side.

    ``nets=(K,)`` keeps every sum per network, for K networks trained as one (:mod:`dfa_lib.seeds`).
    """

    def __init__(self, device, nets: tuple = ()):
        dtype = accumulator_dtype(device)
        self.loss = torch.zeros(nets, device=device, dtype=dtype)
        self.errors = torch.zeros(nets, device=device, dtype=dtype)
        self.nonfinite = torch.zeros((), device=device, dtype=torch.bool)
        self.saturated = torch.zeros(nets, device=device, dtype=torch.int64)

    def add(self, loss: str, logits: torch.Tensor, out: torch.Tensor, batch: Targets) -> None:
        """Add a batch from its ``logits`` and predictions ``out`` (:func:`dfa_lib.losses.predictions`)."""
        self.add_losses(per_example_loss(loss, logits, batch.values), out, batch, loss)

    def add_losses(self, losses: torch.Tensor, out: torch.Tensor, batch: Targets, loss: str = "mse") -> None:
        """Add a batch's per-example ``losses`` and the errors of its predictions ``out`` (probabilities
        for ``loss`` "bce" and "ce", :func:`dfa_lib.losses.predictions`)."""
        self.loss += losses.sum(-1)
        self.errors += error_sum(out, batch)
        self.nonfinite |= ~torch.isfinite(out.sum())  # NaN or inf anywhere in the outputs
        y = batch.values
        if loss == "bce":  # -log(0): an output at exactly 0 for a target above 0, or at 1 for one below 1
            self.saturated += (((out == 0) & (y > 0)) | ((out == 1) & (y < 1))).any(-1).sum(-1)
        elif loss == "ce":  # -log(0): the softmax gives a target class exactly 0
            self.saturated += ((out == 0) & (y > 0)).any(-1).sum(-1)

    def diverged(self, model: torch.nn.Module, rows: int) -> str | None:
        """Host-side check (two synchronisations) after ``rows`` rows: what went wrong, or None."""
        weights_ok = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
        nonfinite_values, nonfinite_loss = torch.stack([self.nonfinite | ~weights_ok,
                                                        ~torch.isfinite(self.loss).all()]).tolist()
        if nonfinite_values:
            return "outputs or weights became NaN or infinite"
        if nonfinite_loss:
            return "the training loss became infinite or NaN (outputs too large for the loss to be represented)"
        saturated = int(self.saturated.max())
        if saturated > SATURATED_FRACTION * rows:
            which = f" (network {int(self.saturated.argmax())})" if self.saturated.dim() else ""
            return (f"{saturated} of {rows} rows have a prediction saturated at exactly 0 or 1 on the wrong side"
                    f"{which} (the sigmoid or softmax of huge logits)")
        return None


class Step:
    """One configured training step; call it with a mini-batch ``(x, targets)``.

    Args:
        averaging: ``None`` or a transform from :func:`dfa_lib.averaging.make_averaging`.
        update: an updater from :func:`dfa_lib.update.make_updater`.
        reduction: ``"mean"`` scales the update by ``1/rows`` (rows after averaging), ``"sum"`` does not.
        on_step: ``on_step(history, epoch, step, model, cache, e, signals)``, before the weights change.
    """

    def __init__(self, model: MLP, rule: FeedbackRule, loss: str, update: Callable, averaging: Callable | None = None,
                 reduction: str = "mean", on_step: Callable | None = None):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.model, self.rule, self.loss, self.update = model, rule, loss, update
        self.averaging, self.mean, self.on_step = averaging, reduction == "mean", on_step

    def __call__(self, x: torch.Tensor, batch: Targets, sums: EpochSums, callback_args: tuple = ()) -> None:
        model = self.model
        cache = model.forward_cached(x)
        cache.out = predictions(self.loss, cache.logits)
        sums.add(self.loss, cache.logits, cache.out, batch)
        y = batch.values
        if self.averaging is not None:
            cache, y = self.averaging(cache, batch)  # averages y_hat itself, as seed 001 did
        e = output_error(self.loss, cache.logits, y, cache.out)
        signals = self.rule.signals(model, cache, e)
        if self.on_step is not None:
            self.on_step(*callback_args, model, cache, e, signals)
        self.update(model, cache, signals, 1.0 / e.shape[-2] if self.mean else 1.0)


class AutogradStep:
    """One training step of any model through autograd: the rule acts through its hooks.

    ``model(x)`` returns logits (an :class:`~dfa_lib.models.MLP` too); the loss, which applies the
    output function, ``loss.backward()`` and ``optimizer.step()`` are what a plain PyTorch loop
    does, plus ``rule.observe_target`` for DRTP.

    Args:
        frozen: parameters that must not change (their gradients are dropped before the step).
        on_step: ``on_step(history, epoch, step, model, None, None, None)`` after the backward pass.
    """

    def __init__(self, model: torch.nn.Module, rule: FeedbackRule, loss: str, optimizer: torch.optim.Optimizer,
                 reduction: str = "mean", frozen=(), on_step: Callable | None = None):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.model, self.rule, self.loss, self.optimizer = model, rule, loss, optimizer
        self.mean, self.frozen, self.on_step = reduction == "mean", list(frozen), on_step

    def __call__(self, x: torch.Tensor, batch: Targets, sums: EpochSums, callback_args: tuple = ()) -> None:
        scale = 1.0 / len(x) if self.mean else 1.0
        self.rule.observe_target(batch.values, scale)
        out = self.model(x)
        losses = per_example_loss(self.loss, out, batch.values)
        self.optimizer.zero_grad(set_to_none=True)
        (losses.sum() * scale).backward()
        for p in self.frozen:
            p.grad = None
        if self.on_step is not None:
            self.on_step(*callback_args, self.model, None, None, None)
        self.optimizer.step()
        out = out.detach()
        sums.add_losses(losses.detach(), predictions(self.loss, out), batch, self.loss)


class CompiledStep:
    """A :class:`Step` run through ``torch.compile`` as one graph; eager again if compiling fails.

    ``fullgraph=True`` makes dynamo trace the whole step (forward, error, signals, update, epoch
    sums) before any of it runs, so a step that cannot be compiled (no C++ compiler, an ``on_step``
    callback that reads a value back to Python, ...) has changed nothing when the error comes: it
    warns once and the run continues with the eager step.  ``dynamic=False`` compiles one graph per
    batch shape (the full batches and the last, shorter one).  The compiled graph computes the same
    step with fused loops, so weights agree with the eager path to float rounding
    (``tests/test_compile.py``); ``benchmarks/epoch_speed.py --compile`` says what it saves.

    Args:
        step: the eager :class:`Step`.
        mode: ``torch.compile``'s mode (``None`` for its default; ``"reduce-overhead"`` adds CUDA graphs on a GPU).
    """

    def __init__(self, step: Step, mode: str | None = None):
        self.eager = step
        self.compiled = torch.compile(step.__call__, fullgraph=True, dynamic=False, mode=mode)

    def __call__(self, x: torch.Tensor, batch: Targets, sums: EpochSums, callback_args: tuple = ()) -> None:
        if self.compiled is not None:
            try:
                return self.compiled(x, batch, sums, callback_args)
            except torch._dynamo.exc.TorchDynamoException as err:  # raised while compiling, before the step ran
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
                warnings.warn(f"torch.compile could not compile the training step ({type(err).__name__}: "
                              f"{first_line}); training continues without it", RuntimeWarning, stacklevel=2)
                self.compiled = None
        return self.eager(x, batch, sums, callback_args)
