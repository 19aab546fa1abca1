"""Losses and the output error ``e`` that every feedback rule starts from.

Each loss is a sum over output units for one example, averaged (or summed) over the
batch: ``L = (1/N) sum_n l(y_hat_n, y_n)``.  The output error is the derivative of
``l`` with respect to the output layer's pre-activation ``a_L``.  For the three matched
pairs it is the same simple expression (the reason the papers use them)::

    sigmoid + binary cross-entropy   e = y_hat - y
    softmax + cross-entropy          e = y_hat - y
    identity + squared error (1/2)   e = y_hat - y

Any other pair (e.g. seed 000's tanh output with squared error) gets ``e`` from autograd
on the output layer alone, so it is still exact.  Introduced in chapter 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("bce", "ce", "mse")
_MATCHED = {("sigmoid", "bce"), ("softmax", "ce"), ("identity", "mse")}


# The outputs each loss can take.  BCE needs every output in (0, 1); CE needs a probability
# distribution over the outputs.  Another output would be clamped into range by
# per_example_loss and its error zeroed there, so the network would silently learn nothing.
# Squared error takes any output (seed 000 pairs it with tanh).
OUTPUTS_FOR_LOSS = {"bce": ("sigmoid", "softmax"), "ce": ("softmax",)}
_OUTPUT_RANGE = {"identity": "any real number", "tanh": "(-1, 1)", "sigmoid": "(0, 1) per unit"}


def check_loss(name: str, output: str | None = None) -> str:
    """Check a loss name and, given the model's output function, that the loss can take that output."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
    allowed = OUTPUTS_FOR_LOSS.get(name)
    if output is not None and allowed is not None and output not in allowed:
        need = "every output in (0, 1)" if name == "bce" else "outputs that form a probability distribution"
        raise ValueError(
            f"loss={name!r} needs {need}, but output={output!r} gives {_OUTPUT_RANGE.get(output, 'other values')}: "
            f"out-of-range outputs would be clamped and their error set to zero, so the network would not learn. "
            f"Use a matched pair (MLP's output= and train's loss=): output='sigmoid' with loss='bce', "
            f"output='softmax' with loss='ce', or output='identity' with loss='mse' (loss='mse' takes any output)"
        )
    return name


def per_example_loss(name: str, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """l(y_hat_n, y_n) for every row n: summed over output units, shape (N,) (or (K, N) for K networks
    trained together, :mod:`dfa_lib.seeds`)."""
    if name == "bce":
        eps = torch.finfo(out.dtype).eps
        # NaN outputs of a diverged run read as 0.5 here (torch's BCE would raise a range error);
        # the training loop reports the divergence itself (dfa_lib.step.EpochSums)
        return F.binary_cross_entropy(out.clamp(eps, 1 - eps).nan_to_num(0.5), target, reduction="none").sum(-1)
    if name == "ce":
        eps = torch.finfo(out.dtype).tiny
        return -(target * torch.log(out.clamp_min(eps))).sum(-1)
    if name == "mse":
        return 0.5 * ((out - target) ** 2).sum(-1)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def output_error(loss: str, output: str, a_out: torch.Tensor, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """dl_n/da_L for every row n (shape (N, n_out)): the error the rules send back."""
    if (output, loss) in _MATCHED:
        return out - target
    from .models import OUTPUT_FUNCTIONS

    with torch.enable_grad():
        a = a_out.detach().requires_grad_(True)
        value = per_example_loss(loss, OUTPUT_FUNCTIONS[output](a), target).sum()
        (e,) = torch.autograd.grad(value, a)
    return e


def per_example_loss_of_scores(name: str, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The same losses for a model that returns scores (logits), as any ``nn.Module`` trained by
    :func:`dfa_lib.train` is taken to do: ``"ce"`` applies the softmax, ``"bce"`` the sigmoid, inside
    the loss (numerically stable, differentiable); ``"mse"`` compares the scores themselves."""
    if name == "ce":
        return -(target * F.log_softmax(scores, dim=1)).sum(1)
    if name == "bce":
        return F.binary_cross_entropy_with_logits(scores, target, reduction="none").sum(1)
    if name == "mse":
        return 0.5 * ((scores - target) ** 2).sum(1)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def predictions_of_scores(name: str, scores: torch.Tensor) -> torch.Tensor:
    """Scores mapped to what the loss compares with the targets (softmax, sigmoid or the scores)."""
    if name == "ce":
        return F.softmax(scores, dim=1)
    if name == "bce":
        return torch.sigmoid(scores)
    return scores
