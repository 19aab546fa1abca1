"""Error rates, confusion matrices and alignment angles.

Introduced in chapter 1 (normalised error, angles) and chapter 3 (confusion matrix);
the layer-by-layer alignment study is chapter 7.
"""
from __future__ import annotations

import math

import torch

from .models import MLP, ForwardCache
from .rules import BP, FeedbackRule
from .targets import Targets


def error_rate(out: torch.Tensor, targets: Targets) -> float:
    """The task's error: misclassified fraction, wrong-side fraction, or normalised squared error."""
    if targets.kind in ("classification", "binary"):
        return error_sum(out, targets).item() / len(out)
    return (error_sum(out, targets) / (targets.values**2).sum()).item()


def error_sum(out: torch.Tensor, targets: Targets) -> torch.Tensor:
    """The task's error summed over rows, as a 0-dim tensor (no host sync).

    Wrong rows for classification and binary targets, squared error for regression.  The
    training loop adds these up over an epoch; :func:`error_rate` normalises one set's.
    For K networks trained together (``out`` of shape (K, N, n_out), :mod:`dfa_lib.seeds`)
    the sums are per network, shape (K,).
    """
    if targets.kind == "regression":
        return ((out - targets.values) ** 2).sum((-2, -1))
    return wrong_count(out, targets)


def wrong_count(out: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Number of wrong rows as a 0-dim tensor (no host sync), for classification and binary tasks."""
    if targets.kind == "classification":
        return (out.argmax(-1) != targets.labels).sum(-1)
    t = targets.threshold
    return ((out > t) != (targets.values > t)).any(-1).sum(-1)


def accuracy(out: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose argmax equals the class index in ``labels``."""
    return (out.argmax(1) == labels).float().mean().item()


def normalized_squared_error(out: torch.Tensor, target: torch.Tensor) -> float:
    """``||y_hat - y||^2 / ||y||^2`` over the whole set (chapter 1's held-out error)."""
    return (((out - target) ** 2).sum() / (target**2).sum()).item()


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Counts ``C[i, j]`` of examples of class i predicted as j (rows: truth)."""
    idx = labels.long() * n_classes + pred.long()
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def angle_degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle between two tensors seen as flat vectors, in degrees (90 for a zero tensor)."""
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    denom = a.norm() * b.norm()
    if denom == 0:
        return 90.0
    cos = (a @ b / denom).clamp(-1, 1).item()
    return math.degrees(math.acos(cos))


def alignment_from_cache(model: MLP, cache: ForwardCache, e: torch.Tensor, signals: list) -> dict:
    """Angles between a rule's ``signals`` and BP's, computed on the same forward ``cache``.

    Returns ``{"signal": [...], "update": [...]}`` with one angle (degrees) per hidden
    layer: between the teaching signals ``delta_l`` (N x n_l, as flat vectors) and between
    the weight updates ``delta_l^T h_{l-1}``.  No model copy, no second forward pass:
    BP is just one more rule applied to the same cache.  Explained in chapter 7.
    """
    bp = BP().signals(model, cache, e)
    out = {"signal": [], "update": []}
    for l in range(model.n_hidden):
        if signals[l] is None:
            out["signal"].append(90.0)
            out["update"].append(90.0)
            continue
        h_in = cache.inputs[l]
        out["signal"].append(angle_degrees(signals[l], bp[l]))
        out["update"].append(angle_degrees(signals[l].T @ h_in, bp[l].T @ h_in))
    return out


def alignment_angles(model: MLP, rule: FeedbackRule, x: torch.Tensor, y: torch.Tensor, loss: str = "bce") -> dict:
    """Angles between ``rule``'s hidden signals/updates and BP's on a batch ``(x, y)``.

    ``y`` may be class indices, one-hot rows or real targets, as for training.  As
    :func:`dfa_lib.train` does, ``x`` and the rule's matrices are converted to the model's
    dtype and device.
    """
    from .losses import check_loss, output_error
    from .targets import _as_tensor, prepare_targets

    check_loss(loss, model.output_name)
    param = next(model.parameters())
    x = x.to(param.device, param.dtype)  # no copy when they match already
    rule.to(device=param.device, dtype=param.dtype)
    y = _as_tensor(y).to(param.device)
    t = prepare_targets(y, model.sizes[-1], loss, len(x), dtype=x.dtype)
    cache = model.forward_cached(x)
    e = output_error(loss, model.output_name, cache.pre[-1], cache.out, t.values)
    return alignment_from_cache(model, cache, e, rule.signals(model, cache, e))


def alignment(model: torch.nn.Module, rule: FeedbackRule, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> dict:
    """Angles between ``rule`` and BP on any model, for one batch ``(x, y)`` (chapters 10 and 11).

    Returns a dict of lists, one angle (degrees) per hidden block:

    - ``"signal"``: between the gradients each rule sends to a block's output;
    - ``"update"``: between the weight updates of the block's learning layer;
    - ``"weight"``: between the forward weight and the backward weight that replaces it
      (BioTorch's "layer alignment"), for learning layers 2..L; None where a rule has no
      backward weight (DFA, DRTP, shallow, BP).

    The rule's hooks must be on ``model`` (any rule built for a model that is not an MLP, or
    with ``path="autograd"``).  Both gradients come from the same weights and batch: one pass
    with the rule's hooks on, one with them off (plain autograd, i.e. BP).  Nothing is written
    to ``.grad``.  An :class:`~dfa_lib.models.MLP` on a fast path uses :func:`alignment_angles`.
    """
    from .losses import per_example_loss, per_example_loss_of_scores
    from .targets import prepare_targets

    graph = rule.graph
    if graph is None:
        raise ValueError(f"{rule.name} has no hooks on this model; build it with path='autograd' (or use "
                         "alignment_angles for an MLP)")
    params = [layer.weight for layer in graph.layers[:-1]]

    def gradients(active: bool):
        graph.active = active
        try:
            out = model(x)
            t = prepare_targets(y, out.shape[1], loss, len(x), dtype=out.dtype)
            rule.observe_target(t.values)
            losses = per_example_loss(loss, out, t.values) if isinstance(model, MLP) else \
                per_example_loss_of_scores(loss, out, t.values)
            kept = graph.inputs[1:]
            grads = torch.autograd.grad(losses.mean(), kept + params, allow_unused=True)
        finally:
            graph.active = True
        return grads[: len(kept)], grads[len(kept):]

    with torch.enable_grad():
        bp_signals, bp_updates = gradients(False)
        signals, updates = gradients(True)

    def angle(a, b):
        return 90.0 if a is None or b is None else angle_degrees(a, b)

    weights = rule.feedback_weights() or [None] * (len(graph.layers) - 1)
    return {
        "signal": [angle(s, b) for s, b in zip(signals, bp_signals)],
        "update": [angle(u, b) for u, b in zip(updates, bp_updates)],
        "weight": [None if B is None else angle_degrees(B, layer.weight.detach())
                   for B, layer in zip(weights, graph.layers[1:])],
    }


def record_alignment(rule: FeedbackRule, x: torch.Tensor, y: torch.Tensor, loss: str = "ce", key: str = "alignment"):
    """An ``on_epoch`` callback for :func:`dfa_lib.train` that appends :func:`alignment` on ``(x, y)``
    to ``history.records[key]`` after every epoch (chapter 10)."""

    def on_epoch(history, epoch, model):
        history.record(key, alignment(model, rule, x, y, loss))

    return on_epoch
