"""Checking labels and turning them into training targets.

A classification set's labels may be class indices ``(N,)`` or one-hot rows ``(N, C)``;
a regression set's targets are real rows ``(N, n_out)``; a one-output network takes a
binary target per example (e.g. XOR in 0/1 or -1/+1 coding).  Anything else is
rejected with a message that names the problem.  Used by :func:`dfa_lib.train.train`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Targets:
    """Targets ready for the loss, plus what the error metric needs.

    ``kind`` is ``"classification"`` (error = argmax mismatch), ``"binary"`` (a two-valued
    target per output unit; a row is wrong when any output is on the wrong side of the
    midpoint between the two target values) or ``"regression"``
    (error = normalised squared error ``||y_hat - y||^2 / ||y||^2``).
    """

    values: torch.Tensor  # (N, n_out) float
    kind: str
    labels: torch.Tensor | None = None  # class indices, for classification
    threshold: float | None = None  # for binary

    def rows(self, idx: torch.Tensor) -> "Targets":
        """The targets of rows ``idx`` (a mini-batch), gathered with ``index_select``."""
        labels = None if self.labels is None else self.labels.index_select(0, idx)
        return Targets(self.values.index_select(0, idx), self.kind, labels, self.threshold)


def prepare_targets(y: torch.Tensor, n_out: int, loss: str, n_rows: int, dtype=torch.float32, kind: str | None = None) -> Targets:
    """Validate ``y`` against a network with ``n_out`` outputs and return :class:`Targets`."""
    if not torch.is_tensor(y):
        raise TypeError(f"labels must be a torch.Tensor, got {type(y).__name__}")
    if y.shape[0] != n_rows:
        raise ValueError(f"inputs and labels disagree on the number of examples: {n_rows} inputs, {y.shape[0]} labels")
    if y.dim() == 1 and not y.is_floating_point():
        if n_out == 1:
            y = y.unsqueeze(1)
        else:
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= n_out:
                raise ValueError(
                    f"labels must be class indices in [0, {n_out}) for a network with {n_out} outputs; "
                    f"found values from {lo} to {hi}"
                )
            return Targets(F.one_hot(y, n_out).to(dtype), "classification", labels=y)
    if y.dim() == 1:
        y = y.unsqueeze(1)
    if y.dim() != 2 or y.shape[1] != n_out:
        raise ValueError(
            f"labels must be class indices of shape (N,) or rows of shape (N, {n_out}) for a network with "
            f"{n_out} outputs; got shape {tuple(y.shape)}"
        )
    values = y.to(dtype)
    if not torch.isfinite(values).all():
        raise ValueError("labels contain NaN or infinite values")
    if kind == "regression" or (kind is None and loss == "mse" and n_out > 1 and not _is_one_hot(values)):
        return Targets(values, "regression")
    if n_out == 1 or kind == "binary":  # one binary target per output unit
        levels = torch.unique(values)
        if len(levels) > 2:
            raise ValueError(
                f"a one-output network needs binary targets (two values, e.g. 0/1 or -1/+1); found {len(levels)} "
                "distinct values. For regression use loss='mse' with kind='regression'."
            )
        if loss == "bce" and not ((values == 0) | (values == 1)).all():
            raise ValueError("binary cross-entropy needs targets in {0, 1}; recode -1/+1 targets or use loss='mse'")
        threshold = float(levels.mean()) if len(levels) == 2 else (0.5 if loss == "bce" else 0.0)
        return Targets(values, "binary", threshold=threshold)
    if not _is_one_hot(values):
        raise ValueError(
            "labels must be class indices (integer tensor of shape (N,)) or one-hot rows (exactly one 1 and "
            f"zeros elsewhere); got a float tensor of shape {tuple(values.shape)} that is not one-hot"
        )
    return Targets(values, "classification", labels=values.argmax(1))


def _is_one_hot(values: torch.Tensor) -> bool:
    return bool((((values == 0) | (values == 1)).all() and (values.sum(1) == 1).all()).item())
