"""From teaching signals to new weights: the same for every rule.

Once a rule has given layer ``l`` its signal ``delta_l`` (:mod:`dfa_lib.rules`), the weight
gradient is ``dW_l = delta_l^T h_{l-1}`` and ``db_l = sum_n delta_l`` (times ``1/N`` for a
mean loss).  Two ways to apply it, chosen ONCE before the training loop by
:func:`make_updater`:

- :class:`FusedSGD` for plain SGD (the default): ``W_l -= lr * delta_l^T h_{l-1}`` as one
  fused ``addmm_`` per layer, straight into the weights, no ``.grad`` allocated;
- :class:`OptimizerStep` for any other optimizer (momentum, RMSprop, Adam, ...): the
  gradients go into ``.grad`` (:func:`write_grads`) and the optimizer takes its own step.

Both give the same weights for plain SGD (``tests/test_speed_paths.py``).  Chapter 3
explains the update, chapter 5 uses RMSprop through :class:`OptimizerStep`.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

from .models import MLP, ForwardCache
from .rules import FeedbackRule


def write_grads(model: MLP, cache: ForwardCache, deltas: list, scale: float = 1.0, frozen=()) -> None:
    """Set ``.grad`` of every layer: ``dW_l = scale * delta_l^T h_{l-1}``, ``db_l = scale * sum delta_l``.

    Layers with no signal, or listed in ``frozen`` (1-based layer indices), get ``grad = None``
    so optimizers leave them untouched.
    """
    for l, (layer, delta, h_in) in enumerate(zip(model.layers, deltas, cache.inputs), start=1):
        if delta is None or l in frozen:
            layer.weight.grad = None
            if layer.bias is not None:
                layer.bias.grad = None
            continue
        rest = scale  # the factor still to apply after the matmul
        if scale != 1.0 and delta.shape[-2] <= h_in.shape[-1]:
            delta, rest = delta * scale, 1.0  # cheaper to scale the (N, n_l) signal than the (n_l, n_{l-1}) gradient
        grad = delta.mT @ h_in  # (K, n_l, n_{l-1}) for K networks at once (dfa_lib.seeds)
        layer.weight.grad = grad.mul_(rest) if rest != 1.0 else grad
        if layer.bias is not None:
            layer.bias.grad = delta.sum(-2).mul_(rest) if rest != 1.0 else delta.sum(-2)


@torch.no_grad()
def sgd_update(model: MLP, cache: ForwardCache, deltas: list, lrs: Sequence, scale: float = 1.0, frozen=()) -> None:
    """Plain SGD straight into the weights: ``W_l -= lr * scale * delta_l^T h_{l-1}``.

    The same step as :func:`write_grads` followed by ``torch.optim.SGD.step()`` (no momentum,
    no weight decay), but the gradient is never materialised: one fused ``addmm_`` per layer
    reads and writes each weight matrix once, instead of allocating ``.grad``, filling it and
    passing over both again in the optimizer.  ``lrs`` holds one ``(weight lr, bias lr)``
    pair per layer; a pair of ``None`` leaves that layer alone.
    """
    for l, (layer, delta, h_in, (lr_w, lr_b)) in enumerate(zip(model.layers, deltas, cache.inputs, lrs), start=1):
        if delta is None or l in frozen:
            continue
        if lr_w:
            if delta.dim() == 3:  # K networks at once (dfa_lib.seeds): one batched product
                layer.weight.baddbmm_(delta.mT, h_in, alpha=-lr_w * scale)
            else:
                layer.weight.addmm_(delta.T, h_in, alpha=-lr_w * scale)
        if layer.bias is not None and lr_b:
            layer.bias.add_(delta.sum(-2), alpha=-lr_b * scale)


def compute_grads(model: MLP, rule: FeedbackRule, cache: ForwardCache, e: torch.Tensor, scale: float = 1.0, frozen=()):
    """Run ``rule`` on a cache and write the gradients; returns the signals for inspection."""
    deltas = rule.signals(model, cache, e)
    write_grads(model, cache, deltas, scale, frozen)
    return deltas


class FusedSGD:
    """Plain SGD applied with :func:`sgd_update`; the learning rates live in the optimizer's groups.

    Made from ``torch.optim.SGD`` itself (not a subclass: a subclass such as
    :class:`dfa_lib.stack.MaskedSGD` may change the gradient in ``step`` and must see ``.grad``)
    with no momentum, weight decay, Nesterov or ``maximize``: then a step is exactly
    ``p -= lr * p.grad``.  Each layer keeps a reference to the group holding its weight and
    bias, so learning-rate schedulers that change ``group["lr"]`` keep working.
    """

    def __init__(self, model: MLP, optimizer: torch.optim.SGD, frozen=()):
        group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}

        def group(p):
            return None if p is None or not p.requires_grad else group_of.get(id(p))

        self.groups = [(group(layer.weight), group(layer.bias)) for layer in model.layers]
        self.frozen = set(frozen)
        optimizer.zero_grad(set_to_none=True)  # no stale .grad: this path never writes one
        optimizer.step()  # a no-op without gradients; tells lr schedulers that the optimizer has stepped

    @staticmethod
    def accepts(optimizer: torch.optim.Optimizer) -> bool:
        """True for plain ``torch.optim.SGD`` (see the class docstring)."""
        if type(optimizer) is not torch.optim.SGD:
            return False
        return not any(g.get("momentum", 0) or g.get("weight_decay", 0) or g.get("nesterov") or g.get("maximize")
                       for g in optimizer.param_groups)

    def __call__(self, model: MLP, cache: ForwardCache, deltas: list, scale: float) -> None:
        lrs = [(None if gw is None else float(gw["lr"]), None if gb is None else float(gb["lr"])) for gw, gb in self.groups]
        sgd_update(model, cache, deltas, lrs, scale, self.frozen)


class OptimizerStep:
    """Gradients into ``.grad`` (:func:`write_grads`), then ``optimizer.step()``."""

    def __init__(self, optimizer: torch.optim.Optimizer, frozen=()):
        self.optimizer, self.frozen = optimizer, set(frozen)

    def __call__(self, model: MLP, cache: ForwardCache, deltas: list, scale: float) -> None:
        write_grads(model, cache, deltas, scale, self.frozen)
        self.optimizer.step()


def check_lr(lr) -> None:
    """A learning rate must be a finite number >= 0."""
    if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")


def make_updater(model: MLP, optimizer: torch.optim.Optimizer | None = None, lr: float = 0.01, frozen=()):
    """The update path of a run: :class:`FusedSGD` for plain SGD (also plain SGD with ``lr``
    when no optimizer is given), :class:`OptimizerStep` for anything else."""
    if optimizer is None:
        check_lr(lr)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    if FusedSGD.accepts(optimizer):
        return FusedSGD(model, optimizer, frozen)
    return OptimizerStep(optimizer, frozen)
