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
        return wrong_count(out, targets).item() / len(out)
    return normalized_squared_error(out, targets.values)


def wrong_count(out: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Number of wrong rows as a 0-dim tensor (no host sync), for classification and binary tasks."""
    if targets.kind == "classification":
        return (out.argmax(1) != targets.labels).sum()
    t = targets.threshold
    return ((out > t) != (targets.values > t)).any(1).sum()


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
