"""The training loop: batches, epochs, evaluation, history and callbacks.

Everything a single mini-batch goes through (forward, error, signals, update) is
:class:`dfa_lib.step.Step` for an :class:`~dfa_lib.models.MLP` on a rule's fast path (any model
with a cached forward pass, :func:`dfa_lib.models.caches_forward`) and
:class:`dfa_lib.step.AutogradStep` for any other ``nn.Module`` of ``nn.Linear``/``nn.Conv2d``
layers (chapters 10, 11); this module only prepares the run and loops.  The options cover
what the seeds did with separate copies of the loop: seed 001's averaged loops
(:mod:`dfa_lib.averaging`), frozen layers (seed 003), early stopping on a tolerance (seed 001).
The same loop trains a :class:`~dfa_lib.seeds.SeedBatch`, K networks as one model (chapter 6),
and keeps one history per network.

Introduced in chapter 1 (``book/01_linear_fa.ipynb``); averaging in chapter 4, frozen
layers in chapter 6.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Callable, Sequence

import torch

from .averaging import make_averaging
from .checks import check_epochs, check_inputs
from .data import Data
from .history import History
from .losses import check_loss, per_example_loss, predictions
from .metrics import error_rate, error_sum
from .models import caches_forward
from .parallel import wants_progress
from .rules import FeedbackRule, learning_layers
from .seeds import SeedBatch
from .step import AutogradStep, CompiledStep, EpochSums, Step, TrainingDivergedError, accumulator_dtype
from .targets import Targets, gather_rows, prepare_targets
from .train_checks import (BatchNormInputs, check_data, check_model_carries, check_optimizer, check_rule, check_same_features,
                           check_scores, check_seed_batch, check_single_row_batches)
from .update import check_lr, make_updater
from .utils import flush_denormal

DIVERGENCE_CHECK_STEPS = 200  # read the on-device divergence flag this often (and at every epoch's end)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, targets: Targets, loss: str, batch_size: int = 10000):
    """Mean loss and error of ``model`` on a whole set, in chunks of ``batch_size``, in eval mode.

    Every model returns logits, which the loss turns into predictions itself (:mod:`dfa_lib.losses`);
    the error is counted on the predictions.  A :class:`~dfa_lib.seeds.SeedBatch` gives a list of K
    ``(loss, error)`` pairs, one per network.
    """
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, SeedBatch):
            losses, errors = _network_sums(model, x, targets, loss, batch_size)
            norm = (targets.values**2).sum() if targets.kind == "regression" else len(x)
            return list(zip((losses / len(x)).tolist(), (errors / norm).tolist()))
        out = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    return per_example_loss(loss, out, targets.values).mean().item(), error_rate(predictions(loss, out), targets)


def _network_sums(model: SeedBatch, x: torch.Tensor, targets: Targets, loss: str, batch_size: int) -> tuple:
    """Per-network sums of the loss and the error over ``x``: two (K,) tensors on ``x``'s device, in
    :func:`~dfa_lib.step.accumulator_dtype` (float32 on Apple's MPS, which has no float64)."""
    dtype = accumulator_dtype(x.device)
    losses = torch.zeros(model.n_nets, dtype=dtype, device=x.device)
    errors = torch.zeros(model.n_nets, dtype=dtype, device=x.device)
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size])  # (K, rows, n_out): the same rows through every network
        part = Targets(targets.values[i : i + batch_size].expand_as(out), targets.kind,
                       None if targets.labels is None else targets.labels[i : i + batch_size], targets.threshold)
        losses += per_example_loss(loss, out, part.values).sum(-1)
        errors += error_sum(predictions(loss, out), part)
    return losses, errors


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
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    eval_initial: bool = True,
    kind: str | None = None,
    on_step: Callable | None = None,
    on_epoch: Callable | None = None,
    progress: bool | None = None,
    compile: bool | str = False,
) -> History | list[History]:
    """Train ``model`` with ``rule`` on ``data`` and return its :class:`History`.

    ``model`` is a :class:`~dfa_lib.models.MLP` or any ``nn.Module`` made of ``nn.Linear`` and
    ``nn.Conv2d`` layers (with activations, pooling, flatten, dropout, batch norm between them);
    every model returns logits, and ``loss`` applies the output function: ``"bce"`` sigmoid + binary
    cross-entropy (the default), ``"ce"`` softmax + cross-entropy, ``"mse"`` squared error on the
    logits (:mod:`dfa_lib.losses`); see :mod:`dfa_lib.rules.graph` for other models.

    A :class:`~dfa_lib.seeds.SeedBatch` of K networks (chapter 6) trains as one model and gives a
    list of K histories, one per network; ``rule`` is then one for all of them
    (:func:`~dfa_lib.seeds.batch_rules`).  Every option means what it means for one network, per
    network, with these differences: ``generator`` may be a sequence of K generators, one per
    network (network k's batches are then exactly those ``train(network_k, ..., generator=
    generators[k])`` draws), or one generator whose order every network shares (the default: K fresh
    generators, one order each); callbacks receive the list of histories, and ``on_step``'s tensors
    carry a leading network dimension; ``tol`` stops the batch when every network's training error
    changed by at most ``tol`` (a network that settles earlier trains on with the others);
    ``averaging="class"`` is refused (each network's batch would have its own classes), and so is
    a rule without a fast path.  Each history's ``seconds`` is its share of the joint run.

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
        generator: random stream for shuffling (default: a fresh one from torch's global RNG); a
            :class:`~dfa_lib.seeds.SeedBatch` also takes one per network (see above).
        kind: force the target kind: ``"classification"``, ``"binary"`` or ``"regression"``; inferred
            when None (``history.target_kind`` records it).  Float targets that look like class codes
            but are read as regression under ``loss="mse"`` give a warning.
        on_step: ``on_step(history, epoch, step, model, cache, e, signals)`` after every step's
            signals, before the weights change (e.g. to record alignment, chapter 1); on the
            autograd path ``cache``, ``e`` and ``signals`` are None.
        on_epoch: ``on_epoch(history, epoch, model)`` after every epoch's evaluation.
        progress: show a tqdm progress bar that moves with every step (all epochs' steps in one bar), with
            the epoch and its test error; it disappears when the run ends.  Default None: only where someone
            watches (a terminal, a notebook you run yourself), never in a notebook executed by Jupyter Book,
            nbconvert or nbval, whose saved outputs would keep the bar (:func:`dfa_lib.parallel.someone_is_watching`).
        compile: run each step through ``torch.compile`` (:class:`dfa_lib.step.CompiledStep`): ``True``
            for its default mode, or a mode name such as ``"reduce-overhead"`` (CUDA graphs on a GPU).
            MLP fast path only, without ``on_step``; the first steps pay the compile time (about 20 s
            per batch shape on a 2-core CPU), and a step that cannot be compiled runs eagerly with a warning.

    Stopping a run by hand (Jupyter's stop button, Ctrl-C: a ``KeyboardInterrupt``, also one raised in
    ``on_step`` or ``on_epoch``) keeps what was trained: train returns the history of the epochs completed,
    with ``history.stopped_early`` saying in which epoch it was interrupted (``history.interrupted`` is
    True), and warns.  The model keeps the weights it had at that moment.  A loop of runs goes on with its
    next run, so a loop that should stop too checks ``if history.interrupted: break``.

    Raises:
        TrainingDivergedError: outputs, weights or a loss became NaN or infinite, or outputs saturated
            (names the epoch and steps); its ``history`` holds the epochs completed before (a
            SeedBatch's: the list of every network's history).
        TypeError: a rule class or name in place of a rule (``DFA``, ``"dfa"``: pass ``DFA(model)``), data
            that is not a :class:`~dfa_lib.data.Data` (a ``DataLoader``, a tuple), a model that returns a tuple.
        ValueError: a bad argument or input (each message names the problem: an optimizer built for another
            model or lacking the rule's own weights, a final softmax under ``loss="ce"``, batch norm meeting
            a batch of one row, test examples of another shape, ...); see the README's "When something goes
            wrong".
    """
    n_nets = model.n_nets if isinstance(model, SeedBatch) else None
    check_rule(rule)
    check_model_carries(model, rule)
    check_data(data)
    check_loss(loss)
    if n_nets is not None:
        check_seed_batch(model, rule, averaging)
    layers = model.layers if caches_forward(model) else learning_layers(model)
    bad = [l for l in frozen if not 1 <= l <= len(layers)]
    if bad:
        raise ValueError(f"frozen layers must be 1-based indices in 1..{len(layers)}; got {bad}")
    epochs = check_epochs(epochs)  # any integral type, not bool
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    rule.to(device=device, dtype=dtype)
    x_train, x_test = data.x_train.to(device, dtype), data.x_test.to(device, dtype)
    check_inputs(x_train, x_test)  # empty sets, NaN/inf rows (once, not per step)
    check_same_features(x_train, x_test)
    n_out, batch_norm_values = _probe(model, x_train, loss)
    t_train = prepare_targets(data.y_train.to(device), n_out, loss, len(x_train), dtype, kind)
    t_test = prepare_targets(data.y_test.to(device), n_out, loss, len(x_test), dtype, t_train.kind)
    n = len(x_train)
    bs = n if batch_size is None else min(int(batch_size), n)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_single_row_batches(batch_norm_values, n, bs)
    if optimizer is not None:
        check_optimizer(optimizer, model, rule)
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
        if rule.graph is None and rule.needs_hooks:
            rule.attach(model)
        if rule.graph is not None and rule.graph.layers != list(layers):
            raise ValueError(f"{rule.name} is attached to another model: build the rule for the model you train")
        if optimizer is None:
            check_lr(lr)
            optimizer = torch.optim.SGD(list(model.parameters()) + list(rule.parameters()), lr=lr)
        frozen_params = [p for l in frozen for p in layers[l - 1].parameters()]
        step = AutogradStep(model, rule, loss, optimizer, reduction, frozen_params, on_step)
    generators = _generators(generator, n_nets)  # here, after the step is built, as ever: the same random draws
    name = getattr(rule, "name", type(rule).__name__)
    histories = [History(rule=name, target_kind=t_train.kind) for _ in range(n_nets or 1)]
    result = histories if n_nets else histories[0]  # what train returns, callbacks and errors carry
    run_name = f"{name} ({n_nets} seeds)" if n_nets else name
    error_norm = (t_train.values**2).sum().item() if t_train.kind == "regression" else n

    def per_network(evaluated) -> list:
        """evaluate()'s pairs as a list of one (loss, error) pair per network."""
        return evaluated if n_nets else [evaluated]

    def log(ep: int, train_pairs: list) -> None:
        for h, on_train, on_test in zip(histories, train_pairs, per_network(evaluate(model, x_test, t_test, loss))):
            h.log(ep, on_train, on_test)

    def diverged(message: str) -> TrainingDivergedError:
        for h in histories:
            h.stopped_early = f"diverged: {message}"
        held = "each network's history of the epochs" if n_nets else "the epochs"
        return TrainingDivergedError(f"{run_name}: {message}; lower the learning rate or the feedback scale "
                                     f"(err.history holds {held} completed before)", result)

    def check(sums: EpochSums, ep: int, first: int, last: int) -> None:
        problem = sums.diverged(model, min(last * bs, n))
        if problem:
            raise diverged(f"{problem} at epoch {ep}, between steps {first} and {last}")

    steps_per_epoch = math.ceil(n / bs)
    ep = 0
    # Zero-initialised DFA nets produce subnormal floats that are ~10x slower on CPUs;
    # flushing them to zero changes no result that matters and keeps epochs fast.
    with flush_denormal():
        start = time.perf_counter()
        progress_bar = _ProgressBar(run_name, epochs, steps_per_epoch, wants_progress(progress))
        tick, tick_every = progress_bar.tick, progress_bar.every
        try:
            if eval_initial:
                log(0, per_network(evaluate(model, x_train, t_train, loss)))
            for ep in range(1, epochs + 1):
                order = _epoch_order(n, generators, n_nets, shuffle, device)
                sums, checked = EpochSums(device, nets=(n_nets,) if n_nets else ()), 0
                model.train()
                for k, i in enumerate(range(0, n, bs), start=1):
                    idx = order[..., i : i + bs]
                    step(gather_rows(x_train, idx), t_train.rows(idx), sums, (result, ep, k))
                    if k % tick_every == 0:
                        tick(tick_every)
                    if k % DIVERGENCE_CHECK_STEPS == 0:
                        check(sums, ep, checked + 1, k)
                        checked = k
                check(sums, ep, checked + 1, k)
                if n_nets:
                    log(ep, list(zip((sums.loss / n).tolist(), (sums.errors / error_norm).tolist())))
                else:
                    log(ep, [(sums.loss.item() / n, sums.errors.item() / error_norm)])
                infinite = [j for j, h in enumerate(histories) if not math.isfinite(h.test_loss[-1])]
                if infinite:
                    which = f" (network {infinite[0]})" if n_nets else ""
                    raise diverged(f"the test loss became infinite or NaN{which} at epoch {ep}, after its last step, "
                                   f"{k} (the outputs grew too large for the loss to be represented)")
                if on_epoch is not None:
                    on_epoch(result, ep, model)
                test_errors = [h.test_error[-1] for h in histories]
                progress_bar.epoch_done(ep, epochs, sum(test_errors) / len(test_errors))
                if tol is not None and ep >= 2 and len(histories[0].train_error) >= 2:
                    changes = [abs(h.train_error[-1] - h.train_error[-2]) for h in histories]
                    if max(changes) <= tol:
                        every = " (every network of the batch changed by at most tol)" if n_nets else ""
                        for h, change in zip(histories, changes):
                            h.stopped_early = f"epoch {ep}: training error changed by {change:.3g} <= tol {tol}{every}"
                        break
        except KeyboardInterrupt:
            _note_interruption(histories, run_name, ep, epochs)
        finally:
            progress_bar.close()
            seconds = time.perf_counter() - start
            for h in histories:
                h.seconds = seconds / len(histories)  # a batched network's share of the joint run
    return result


def _generators(generator, n_nets: int | None) -> list:
    """The shuffling streams of a run: one for one network; for a SeedBatch of ``n_nets`` networks, one
    per network, or a single one whose order they share.  None draws fresh ones from torch's global RNG."""
    if generator is None:
        return [torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item())) for _ in range(n_nets or 1)]
    if isinstance(generator, torch.Generator):
        return [generator]
    if not isinstance(generator, Sequence) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"generator must be a torch.Generator (or, for a SeedBatch, a list of them), "
                        f"got {type(generator).__name__}")
    if n_nets is None:
        raise ValueError(f"generator: one network shuffles with one torch.Generator, got a sequence of "
                         f"{len(generator)}; a sequence of generators (one per network) is for a SeedBatch")
    if len(generator) != n_nets:
        raise ValueError(f"generator: a SeedBatch of {n_nets} networks needs one generator per network "
                         f"({n_nets}) or a single one they share, got {len(generator)}")
    return list(generator)


def _epoch_order(n: int, generators: list, n_nets: int | None, shuffle: bool, device: torch.device) -> torch.Tensor:
    """The rows of one epoch in training order: (n,) for one network, (K, n) for a SeedBatch (a shared
    order, unshuffled or from a single generator, is the same row of K)."""
    if not shuffle:
        order = torch.arange(n, device=device)
        return order if n_nets is None else order.expand(n_nets, n)
    if n_nets is None:
        return _shuffled_rows(n, generators[0], device)
    if len(generators) == 1:
        return _shuffled_rows(n, generators[0], device).expand(n_nets, n)
    return _shuffled_orders(generators, n, device)


def _shuffled_rows(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A random order of the ``n`` training rows, drawn where ``generator`` lives (a CUDA generator draws
    on the GPU, a CPU one on the CPU: the same numbers as ever), then moved to the model's device."""
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def _shuffled_orders(generators: Sequence[torch.Generator], n: int, device: torch.device) -> torch.Tensor:
    """(K, n): each network's random order of the ``n`` training rows, drawn by its own generator where
    that generator lives (the order ``train`` draws with it for that network alone), then moved to ``device``."""
    return torch.stack([_shuffled_rows(n, g, device) for g in generators])


def _note_interruption(histories: list, name: str, ep: int, epochs: int) -> None:
    """Stopped by the reader (KeyboardInterrupt): keep the histories of the epochs completed, and say so."""
    done = histories[0].epoch[-1] if histories[0].epoch else 0
    where = "before the first epoch" if ep == 0 else f"in epoch {ep} of {epochs}"
    for h in histories:
        h.stopped_early = (f"interrupted {where} (KeyboardInterrupt): the history holds the epochs up to {done}; "
                           "the model keeps the weights it had when stopped")
    warnings.warn(f"{name}: training {histories[0].stopped_early}. train() returns this partial history; in a "
                  "loop of runs the loop goes on with its next run (stop it with `if history.interrupted: break`, "
                  "or press stop again)", UserWarning, stacklevel=3)


def _probe(model: torch.nn.Module, x: torch.Tensor, loss: str) -> tuple[int, dict]:
    """The number of outputs, from an MLP's sizes or one forward pass of two rows in eval mode (with clear
    errors for inputs the model cannot take and outputs train cannot use), and how many values per channel each
    batch-norm layer sees for one example (:func:`dfa_lib.train_checks.check_single_row_batches`)."""
    if caches_forward(model):  # an MLP (or SeedBatch): its sizes say it, and check_input names a bad shape
        model.check_input(x)
        return model.sizes[-1], {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), BatchNormInputs(model) as batch_norm:
            out = model(x[:2])
    except RuntimeError as err:
        raise ValueError(f"the model cannot take inputs of shape {tuple(x.shape[1:])} (one example): {err}") from err
    finally:
        model.train(was_training)
    check_scores(out, loss)
    return out.shape[1], batch_norm.per_row


class _ProgressBar:
    """train()'s tqdm bar over all the run's steps: it moves during an epoch (``every`` steps, about 100
    times an epoch: a tick costs microseconds, a step far more), shows the epoch and its test error after
    each epoch, and disappears when the run ends (``leave=False``).  Without ``show``, nothing ticks."""

    TICKS_PER_EPOCH = 100

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, show: bool):
        self.bar, self.steps_per_epoch = None, steps_per_epoch
        self.tick, self.every = _nothing, steps_per_epoch + 1  # never reached without a bar
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs * steps_per_epoch, desc=name, unit="step", leave=False)
            self.tick, self.every = self.bar.update, max(1, steps_per_epoch // self.TICKS_PER_EPOCH)

    def epoch_done(self, epoch: int, epochs: int, test_error: float) -> None:
        if self.bar is not None:
            self.bar.update(epoch * self.steps_per_epoch - self.bar.n)  # the steps since the last tick
            self.bar.set_postfix(epoch=f"{epoch}/{epochs}", test_error=f"{test_error:.4g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _nothing(steps: int = 1) -> None:
    pass
