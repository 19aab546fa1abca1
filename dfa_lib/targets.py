"""Checking labels and turning them into training targets.

A classification set's labels may be class indices ``(N,)`` or one-hot rows ``(N, C)``;
a regression set's targets are real rows ``(N, n_out)``; a one-output network takes a
binary target per example (e.g. XOR in 0/1 or -1/+1 coding).  Labels may be tensors or
numpy arrays, and class indices of any integer dtype, whole-number floats, or a column
``(N, 1)``: they are converted.  Anything else is rejected with a message that names the
problem.  Used by :func:`dfa_lib.train.train`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
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
        """The targets of rows ``idx``: a mini-batch (N,), gathered with ``index_select``, or one
        mini-batch per network (K, N) for seeds trained together (:mod:`dfa_lib.seeds`)."""
        labels = None if self.labels is None else gather_rows(self.labels, idx)
        return Targets(gather_rows(self.values, idx), self.kind, labels, self.threshold)


def gather_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` for a 1-D or 2-D ``idx`` of row numbers, through ``index_select`` (the same values,
    about 2-3x faster than advanced indexing for a row gather on the CPU)."""
    return t.index_select(0, idx.reshape(-1)).view(*idx.shape, *t.shape[1:])


KINDS = ("classification", "binary", "regression")


def prepare_targets(y, n_out: int, loss: str, n_rows: int, dtype=torch.float32, kind: str | None = None) -> Targets:
    """Validate ``y`` against a network with ``n_out`` outputs and return :class:`Targets`.

    ``y`` may be a tensor or a numpy array.  Class indices may have any integer dtype (or be
    whole-number floats) and shape (N,) or (N, 1).  ``kind`` forces how targets are read:
    ``"regression"``, ``"binary"`` (one two-valued target per output unit) or
    ``"classification"`` (float rows such as -1/+1 codes count as the class of their
    largest entry); when None it is inferred, with a warning where a float target looks
    like a class code but is read as regression.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None (inferred from the targets), got {kind!r}")
    y = labels_as_tensor(y)
    if y.dim() == 0 or y.shape[0] != n_rows:
        got = "a single number" if y.dim() == 0 else f"{y.shape[0]} labels"
        raise ValueError(f"inputs and labels disagree on the number of examples: {n_rows} inputs, {got}")
    if n_rows == 0:
        raise ValueError("there are no examples: the inputs and labels have 0 rows")
    if n_out > 1 and y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]  # a column of class indices
    if n_out > 1 and y.dim() == 1 and y.is_floating_point():
        y = _whole_number_indices(y, n_out)
    if y.dim() == 1 and not y.is_floating_point():
        if n_out == 1:
            y = y.unsqueeze(1)
        else:
            y = y.long()  # one_hot and indexing need int64; int32, uint8, bool... are converted
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
        if kind is None:
            _warn_if_class_coded(values)
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
        if kind == "classification":
            return _classes_from_rows(values, loss)
        raise ValueError(
            "labels must be class indices (integer tensor of shape (N,)) or one-hot rows (exactly one 1 and "
            f"zeros elsewhere); got a float tensor of shape {tuple(values.shape)} that is not one-hot. "
            "Pass kind='classification' to read each row's largest entry as its class, or kind='regression'"
        )
    return Targets(values, "classification", labels=values.argmax(1))


def labels_as_tensor(y) -> torch.Tensor:
    """Labels or targets as a tensor: a tensor as is, a numpy array copied; anything else is refused by name."""
    if torch.is_tensor(y):
        return y
    if isinstance(y, np.ndarray):
        return torch.from_numpy(np.array(y, copy=True))  # a copy: read-only arrays (np.frombuffer) work too
    raise TypeError(f"labels must be a torch.Tensor or a numpy array, got {type(y).__name__}")


def _whole_number_indices(y: torch.Tensor, n_out: int) -> torch.Tensor:
    """Float labels of shape (N,) for a multi-output network: class indices stored as floats."""
    if not torch.isfinite(y).all():
        raise ValueError("labels contain NaN or infinite values")
    fractional = y != y.round()
    if fractional.any():
        example = y[fractional][0].item()
        raise ValueError(
            f"one label per example (shape (N,) or (N, 1)) for a network with {n_out} outputs must be a class "
            f"index, but these are floats "
            f"that are not whole numbers (e.g. {example}); pass class indices (an integer tensor, e.g. y.long()) or "
            f"target rows of shape (N, {n_out})"
        )
    return y.long()


def _warn_if_class_coded(values: torch.Tensor) -> None:
    """Warn when float targets inferred as regression look like a class coding."""
    if len(torch.unique(values)) <= 2:
        why = "they take only two values, like -1/+1 or smoothed one-hot codes"
    elif bool((values >= 0).all()) and torch.allclose(values.sum(1), values.new_ones(())):
        why = "each row is non-negative and sums to 1, like class probabilities"
    else:
        return
    warnings.warn(
        "loss='mse' with float targets that are not one-hot: train() reads them as regression, so the reported "
        "error is the normalised squared error ||y_hat - y||^2 / ||y||^2, not a misclassification rate. "
        f"But {why}. Pass kind='classification' to count misclassifications (a row's class is its largest entry), "
        "kind='binary' for independent two-valued outputs, or kind='regression' to keep regression and silence "
        "this warning (history.target_kind says which kind a run used).",
        UserWarning,
        stacklevel=4,
    )


def _classes_from_rows(values: torch.Tensor, loss: str) -> Targets:
    """kind='classification' with float rows that are not one-hot: a row's class is its largest entry."""
    ties = (values == values.max(1, keepdim=True).values).sum(1) > 1
    if ties.any():
        i = int(ties.nonzero()[0, 0])
        raise ValueError(
            f"kind='classification' reads a row's largest entry as its class, but {int(ties.sum())} rows have no "
            f"single largest entry (e.g. row {i}: {values[i].tolist()})"
        )
    if loss == "bce" and not ((values >= 0) & (values <= 1)).all():
        raise ValueError("binary cross-entropy needs targets in [0, 1]; recode -1/+1 targets or use loss='mse'")
    return Targets(values, "classification", labels=values.argmax(1))


def _is_one_hot(values: torch.Tensor) -> bool:
    return bool((((values == 0) | (values == 1)).all() and (values.sum(1) == 1).all()).item())
