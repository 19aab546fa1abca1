"""Losses on logits, and the output error ``e`` that every feedback rule starts from.

Every model returns logits, the output layer's pre-activation ``a_L`` (an
:class:`~dfa_lib.models.MLP` as much as any ``nn.Module``); the loss name says which output
function turns them into predictions ``y_hat`` before they meet the target, as in PyTorch's
``BCEWithLogitsLoss`` and ``CrossEntropyLoss``::

    "bce"   sigmoid  + binary cross-entropy   (summed over output units)
    "ce"    softmax  + cross-entropy
    "mse"   identity + squared error (1/2, summed over output units)

Each is a sum over output units for one example, averaged (or summed) over the batch:
``L = (1/N) sum_n l(a_L,n, y_n)``.  The output error is ``dl/da_L``, and for all three pairs
it is the same simple expression, the reason the papers use them::

    e = y_hat - y

Introduced in chapter 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "ce", "mse")


def check_loss(name: str) -> str:
    """Check a loss name (one of :data:`LOSSES`)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES} (sigmoid + binary cross-entropy, "
                         f"softmax + cross-entropy, squared error)")
    return name


def per_example_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """l(a_L,n, y_n) for every row n, from the logits: summed over output units, shape (N,) (or (K, N)
    for K networks trained together, :mod:`dfa_lib.seeds`).

    ``"bce"`` and ``"ce"`` apply the sigmoid and the softmax inside the loss (numerically stable, no
    clamping: a confident mistake costs what it costs); ``"mse"`` compares the logits themselves.
    """
    if name == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
    if name == "ce":
        return -(target * F.log_softmax(logits, dim=-1)).sum(-1)
    if name == "mse":
        return 0.5 * ((logits - target) ** 2).sum(-1)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def predictions(name: str, logits: torch.Tensor) -> torch.Tensor:
    """``y_hat``: the logits mapped by the loss's output function to what the loss compares with the
    targets (sigmoid for ``"bce"``, softmax for ``"ce"``, the logits themselves for ``"mse"``).
    ``predictions("bce", model(x))`` gives the probabilities that ``MLP(..., output="sigmoid")`` used to
    return."""
    if name == "bce":
        return torch.sigmoid(logits)
    if name == "ce":
        return F.softmax(logits, dim=-1)
    if name == "mse":
        return logits
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def output_error(loss: str, logits: torch.Tensor, target: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """dl_n/da_L for every row n (shape (N, n_out)): the error the rules send back, ``y_hat - y``.

    ``out`` is ``y_hat`` when the caller has it already (the training step does, and seed 001's
    averaged loops average ``y_hat`` itself, chapter 4); otherwise ``predictions(loss, logits)``.
    """
    return (predictions(loss, logits) if out is None else out) - target
