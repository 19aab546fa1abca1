"""Many seeds of one network trained as ONE batched model: error bars for the price of a few runs.

A number that rests on one seed may be a lucky draw, so the book reports the mean and the
range [min, max] over several seeds.  Training K copies of an MLP one after another costs K
loops; here they train together:

* every layer's weight is a stack of shape (K, n_out, n_in) (:class:`SeedLinear`), and the
  forward pass is one batched product per layer (``torch.baddbmm``);
* every network keeps its own initial weights, its own feedback matrices and its own
  shuffling (one ``torch.Generator`` each), so network k sees exactly the mini-batches it
  would see trained alone;
* the rules of :mod:`dfa_lib.rules` (BP, FA, DFA, shallow) and the update of
  :mod:`dfa_lib.update` run unchanged: their products broadcast over the leading network
  dimension (``delta @ W``, ``e @ B.mT``, ``delta.mT @ h``).  Any optimizer works, because
  every entry of a stacked weight belongs to exactly one network; frozen layers too.

Network k's weights after :func:`train_seeds` are those it reaches when trained alone by
:func:`dfa_lib.train` from the same start with the same generator, up to float rounding
(``tests/test_seeds.py``).  Unlike chapter 2's block-diagonal :mod:`dfa_lib.stack`, whose dense
products cost K^2, the cost grows as K.  It pays where one network's step is too small to keep
the CPU busy (chapter 6's 784-50-50-50-10, whose six DFA continuations train as one batch);
for chapters 3, 4, 5 and 7's wider networks a batched step costs about as much as K separate ones
on two cores, so those chapters train their seeds one after another with :func:`dfa_lib.train`.
Any device: the models, rules and data may live on a GPU (or Apple's MPS, whose epoch sums are
float32, :func:`dfa_lib.step.accumulator_dtype`), and each generator draws its network's order where
it lives, as :func:`dfa_lib.train` does.  A progress bar moves with the steps as in
:func:`dfa_lib.train`, shown by default only where someone watches (:func:`dfa_lib.parallel.someone_is_watching`).
Introduced in chapter 6.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from .checks import check_epochs, check_inputs
from .data import Data
from .history import History
from .losses import check_loss, per_example_loss
from .metrics import error_sum
from .models import MLP
from .rules import FeedbackRule
from .parallel import wants_progress
from .step import EpochSums, Step, TrainingDivergedError, accumulator_dtype
from .targets import Targets, gather_rows, prepare_targets
from .train import DIVERGENCE_CHECK_STEPS, _ProgressBar, _shuffled_rows
from .update import make_updater
from .utils import flush_denormal


class SeedLinear(nn.Module):
    """K linear layers of one shape: ``weight`` (K, n_out, n_in), ``bias`` (K, n_out) or None.

    Maps (K, N, n_in) to (K, N, n_out); an input (N, n_in) is shared by all K networks.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.n_nets, self.out_features, self.in_features = weight.shape

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 2:
            h = h.expand(self.n_nets, *h.shape)
        if self.bias is None:
            return torch.bmm(h, self.weight.mT)
        return torch.baddbmm(self.bias.unsqueeze(-2), h, self.weight.mT)

    def extra_repr(self) -> str:
        return f"{self.n_nets} x ({self.in_features} -> {self.out_features})"


class SeedBatch(MLP):
    """K MLPs of the same sizes, activation and output function, as one network.

    ``SeedBatch(models)`` copies the models' weights into stacked :class:`SeedLinear` layers;
    :meth:`unbatch` gives the K networks back as ordinary MLPs.  It is an :class:`MLP`, so the
    rules' fast path and :mod:`dfa_lib.update` take it as it is; inputs are (K, N, n_in), or
    (N, n_in) for the same rows through every network, and outputs (K, N, n_out).
    """

    def __init__(self, models: Sequence[MLP]):
        models = list(models)
        if not models or not all(isinstance(m, MLP) and not isinstance(m, SeedBatch) for m in models):
            raise ValueError("SeedBatch needs a non-empty list of dfa_lib.MLP networks")
        first = models[0]
        for m in models[1:]:
            if (m.sizes, m.activation.name, m.output_name) != (first.sizes, first.activation.name, first.output_name) \
                    or (m.layers[0].bias is None) != (first.layers[0].bias is None):
                raise ValueError("all networks of a SeedBatch must have the same sizes, activation, output "
                                 f"function and biases; got sizes {first.sizes} and {m.sizes}")
        nn.Module.__init__(self)
        self.sizes, self.activation = list(first.sizes), first.activation
        self.output_name, self.output_fn = first.output_name, first.output_fn
        self.n_nets = len(models)
        with torch.no_grad():
            self.layers = nn.ModuleList(
                SeedLinear(torch.stack([m.layers[l].weight for m in models]).clone(),
                           None if layer.bias is None else torch.stack([m.layers[l].bias for m in models]).clone())
                for l, layer in enumerate(first.layers))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3) or x.shape[-1] != self.sizes[0] or (x.dim() == 3 and len(x) != self.n_nets):
            raise ValueError(f"input must have shape (batch, {self.sizes[0]}) or ({self.n_nets}, batch, "
                             f"{self.sizes[0]}) for {self.n_nets} networks of sizes {self.sizes}; got {tuple(x.shape)}")

    def unbatch(self) -> list:
        """The K networks as separate :class:`MLP` copies, in order."""
        nets = []
        for k in range(self.n_nets):
            m = MLP(self.sizes, hidden=self.activation.name, output=self.output_name,
                    bias=self.layers[0].bias is not None)
            m = m.to(dtype=self.layers[0].weight.dtype, device=self.layers[0].weight.device)
            with torch.no_grad():
                for small, big in zip(m.layers, self.layers):
                    small.weight.copy_(big.weight[k])
                    if small.bias is not None:
                        small.bias.copy_(big.bias[k])
            nets.append(m)
        return nets

    def extra_repr(self) -> str:
        return f"{self.n_nets} networks, " + super().extra_repr()


def batch_rules(rules: Sequence[FeedbackRule]) -> FeedbackRule:
    """One rule for a :class:`SeedBatch` from the K networks' own rules (same kind, same sizes):
    FA's and DFA's feedback matrices are stacked along a leading network dimension."""
    rules = list(rules)
    kind = type(rules[0])
    if not rules or any(type(r) is not kind for r in rules):
        raise ValueError("batch_rules needs one rule per network, all of the same kind")
    return kind.batched(rules)  # the rule class knows how its matrices batch (FeedbackRule.batched)


def train_seeds(
    model: SeedBatch,
    rule: FeedbackRule,
    data: Data,
    *,
    generators: Sequence[torch.Generator],
    epochs: int = 10,
    batch_size: int | None = 64,
    lr: float = 0.01,
    optimizer: torch.optim.Optimizer | None = None,
    loss: str = "bce",
    reduction: str = "mean",
    frozen: Sequence[int] = (),
    kind: str | None = None,
    eval_initial: bool = True,
    on_epoch: Callable | None = None,
    progress: bool | None = None,
) -> list:
    """Train the K networks of ``model`` together; one :class:`History` per network.

    The arguments mean what they mean for :func:`dfa_lib.train`; ``generators`` holds one
    shuffling stream per network (network k's batches are those ``train(..., generator=
    generators[k])`` draws).  ``optimizer`` is over ``model.parameters()`` (plain SGD with
    ``lr`` if None).  ``on_epoch(histories, epoch, model)`` runs after each epoch.  ``generators``
    may live on the CPU or on the model's device: each draws where it lives (the same orders as
    ``train`` with that generator).

    ``progress`` shows a tqdm bar over all the steps, with the epoch and the networks' mean test error;
    it disappears when the run ends.  ``None`` (the default) shows it only where someone watches
    (:func:`dfa_lib.parallel.someone_is_watching`), so that an executed notebook saves no bar.

    Raises:
        TrainingDivergedError: names the network (0-based) whose outputs saturated, or says
            that an output or weight of some network became NaN or infinite; its ``history`` is the
            list of the K networks' histories of the epochs completed before.
    """
    if not isinstance(model, SeedBatch):
        raise TypeError("train_seeds trains a SeedBatch; build one with SeedBatch([mlp_1, ..., mlp_K])")
    K = model.n_nets
    if len(generators) != K:
        raise ValueError(f"train_seeds needs one generator per network: {K} networks, {len(generators)} generators")
    check_loss(loss, model.output_name)
    epochs = check_epochs(epochs)
    bad = [l for l in frozen if not 1 <= l <= len(model.layers)]
    if bad:
        raise ValueError(f"frozen layers must be 1-based indices in 1..{len(model.layers)}; got {bad}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    rule.to(device=device, dtype=dtype)
    x_train, x_test = data.x_train.to(device, dtype), data.x_test.to(device, dtype)
    check_inputs(x_train, x_test)
    n_out = model.sizes[-1]
    t_train = prepare_targets(data.y_train.to(device), n_out, loss, len(x_train), dtype, kind)
    t_test = prepare_targets(data.y_test.to(device), n_out, loss, len(x_test), dtype, t_train.kind)
    step = Step(model, rule, loss, make_updater(model, optimizer, lr, frozen), None, reduction)
    n = len(x_train)
    bs = n if batch_size is None else min(int(batch_size), n)
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    name = getattr(rule, "name", type(rule).__name__)
    histories = [History(rule=name, target_kind=t_train.kind) for _ in range(K)]
    error_norm = (t_train.values**2).sum().item() if t_train.kind == "regression" else n

    def check(sums: EpochSums, ep: int, first: int, last: int) -> None:
        problem = sums.diverged(model, min(last * bs, n))
        if problem:
            message = f"{problem} at epoch {ep}, between steps {first} and {last}"
            for h in histories:
                h.stopped_early = f"diverged: {message}"
            raise TrainingDivergedError(f"{name} ({K} seeds): {message}; lower the learning rate or the feedback "
                                        "scale (err.history holds each network's history of the epochs completed "
                                        "before)", histories)

    def log(ep: int, train_sums: tuple) -> None:
        test = evaluate_seeds(model, x_test, t_test, loss)
        for k, h in enumerate(histories):
            h.log(ep, (train_sums[0][k], train_sums[1][k]), (test[0][k], test[1][k]))

    steps_per_epoch = math.ceil(n / bs)
    with flush_denormal():
        start = time.perf_counter()
        progress_bar = _ProgressBar(f"{name} ({K} seeds)", epochs, steps_per_epoch, wants_progress(progress))
        tick, tick_every = progress_bar.tick, progress_bar.every
        try:
            if eval_initial:
                log(0, evaluate_seeds(model, x_train, t_train, loss))
            for ep in range(1, epochs + 1):
                order = _shuffled_orders(generators, n, device)  # (K, n)
                sums, checked = EpochSums(device, nets=(K,)), 0
                for k, i in enumerate(range(0, n, bs), start=1):
                    idx = order[:, i : i + bs]
                    step(gather_rows(x_train, idx), t_train.rows(idx), sums)
                    if k % tick_every == 0:
                        tick(tick_every)
                    if k % DIVERGENCE_CHECK_STEPS == 0:
                        check(sums, ep, checked + 1, k)
                        checked = k
                check(sums, ep, checked + 1, k)
                log(ep, ((sums.loss / n).tolist(), (sums.errors / error_norm).tolist()))
                if on_epoch is not None:
                    on_epoch(histories, ep, model)
                progress_bar.epoch_done(ep, epochs, float(np.mean([h.test_error[-1] for h in histories])))
        finally:
            progress_bar.close()
            seconds = time.perf_counter() - start
            for h in histories:
                h.seconds = seconds / K  # each network's share of the joint run
    return histories


def _shuffled_orders(generators: Sequence[torch.Generator], n: int, device: torch.device) -> torch.Tensor:
    """(K, n): each network's random order of the ``n`` training rows, drawn by its own generator where
    that generator lives (the order ``train`` draws with it), then moved to the model's ``device``."""
    return torch.stack([_shuffled_rows(n, g, device) for g in generators])


@torch.no_grad()
def evaluate_seeds(model: SeedBatch, x: torch.Tensor, targets: Targets, loss: str, batch_size: int = 10000) -> tuple:
    """Per-network mean loss and error on a whole set: two lists of K floats."""
    losses, errors = _summed_losses_and_errors(model, x, targets, loss, batch_size)
    norm = (targets.values**2).sum() if targets.kind == "regression" else len(x)
    return (losses / len(x)).tolist(), (errors / norm).tolist()


@torch.no_grad()
def _summed_losses_and_errors(model: SeedBatch, x: torch.Tensor, targets: Targets, loss: str,
                              batch_size: int) -> tuple:
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
        errors += error_sum(out, part)
    return losses, errors


def spread(values, fmt: str = ".2f") -> str:
    """``"mean [min, max]"`` of several seeds' values (just the value for one seed), for tables and glue."""
    values = np.asarray(values, dtype=float)
    if values.size == 1:
        return format(float(values.reshape(-1)[0]), fmt)
    return f"{values.mean():{fmt}} [{values.min():{fmt}}, {values.max():{fmt}}]"
