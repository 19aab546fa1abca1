"""Direct random target projection (DRTP): hidden layers learn from the target alone.

Frenkel, Lefebvre & Bol 2021 ("Learning without feedback: fixed random learning signals allow
for feedforward training of deep neural networks").  DFA with the error replaced by the one-hot
target: block ``l`` receives ``y* @ B_l^T`` (the sign and layout of the authors' code,
``ChFrenkel/DirectRandomTargetProjection``, ``function.py``: ``labels.mm(fixed_fb_weights)``),
divided by the batch size as a mean loss divides the error.  The output layer still learns from
its own error.  No error reaches a hidden layer, so a hidden layer can update as soon as the
forward pass reaches it.  Compared in chapter 10.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import check_path
from .random_feedback import DFA, Scale


class DRTP(DFA):
    """DRTP: DFA's one matrix product applied to the target instead of the error.

    Call ``rule.observe_target(y)`` with the batch's one-hot (or class-index) targets before
    ``loss.backward()`` (:func:`dfa_lib.train` does it for you).  There is no MLP fast path.

    Defaults: U[-1, 1] feedback, whatever the model (BioTorch has no DRTP).  The signal is
    the target itself, not an error that shrinks as the network learns, so its size is set by
    this scale and the learning rate alone.

    Args:
        model: the network: any ``nn.Module`` whose learning layers are ``nn.Linear``/``nn.Conv2d``
            (at least two of them), an :class:`~dfa_lib.models.MLP` included.
        dist: ``"uniform"`` (default) for U[-scale, scale] or ``"normal"`` for N(0, scale^2).
        scale: the range (uniform) or standard deviation (normal), a number or a function of the
            (n_l, n_out) matrix's shape; default 1.0.
        generator: a ``torch.Generator`` that makes the draw reproducible (on the CPU or on the
            model's device); default None: torch's global random stream of the model's device.
        example_input: one input row (``x[:1]``), needed when the model has conv layers; default None.
        path: ``"auto"`` or ``"autograd"``, the same here: DRTP always trains through autograd.
    """

    name = "DRTP"
    has_fast_path = False

    def __init__(self, model: nn.Module, dist: str = "uniform", scale: Scale = 1.0,
                 generator: torch.Generator | None = None, example_input: torch.Tensor | None = None,
                 path: str = "auto"):
        """Draw DRTP's feedback matrix for ``model`` and attach the rule (see the class docstring)."""
        check_path(path)
        super().__init__(model, dist, scale, generator, "autograd", example_input)
        self._target = None

    def observe_target(self, y: torch.Tensor, scale: float | None = None) -> None:
        """Keep the batch's targets for the next backward pass, as ``y* / batch size`` (or ``y* * scale``).

        Args:
            y: one-hot targets of shape (N, n_out), or integer class indices in ``0..n_out-1`` of shape (N,).
            scale: the factor applied to the targets; default ``1 / N``, as a mean loss divides the error.
        """
        self._target = _one_hot_targets(y, self.B.shape[1]).to(self.B.dtype) * (1.0 / len(y) if scale is None else scale)

    def tap(self, k, graph):
        if k != graph.n_layers - 1:
            return None, ()
        kept = graph.inputs[1:]

        def handler(g):
            if self._target is None or len(self._target) != len(g):
                raise RuntimeError("DRTP needs the batch's targets: call rule.observe_target(y) before loss.backward()")
            target, self._target = self._target, None
            return self.direct_signals(target, kept)

        return handler, tuple(kept)


def _one_hot_targets(y, n_out: int) -> torch.Tensor:
    """``y`` as (N, n_out) one-hot rows, after checking it is what DRTP can project.

    Class indices are checked against the network's outputs here, where the mistake can be
    named, instead of failing inside ``one_hot`` (negative or too large) or being read as
    something else (float codes, a column of indices).
    """
    expected = f"one-hot targets of shape (N, {n_out}) or integer class indices 0..{n_out - 1} of shape (N,)"
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"DRTP needs {expected} as a torch.Tensor; got {type(y).__name__}")
    if len(y.shape) == 0 or len(y) == 0:
        raise ValueError(f"DRTP needs {expected}; got an empty batch of shape {tuple(y.shape)}")
    if y.dim() == 2 and y.shape[1] == 1 and y.shape[1] != n_out:
        raise ValueError(f"DRTP needs {expected}; got a column of shape {tuple(y.shape)}: "
                         "pass y.squeeze(1) if it holds class indices")
    if y.dim() == 1:
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"DRTP needs {expected}; got {y.dtype} values of shape {tuple(y.shape)}: class "
                             "indices must be integers (y.long() if they are whole numbers)")
        low, high = (int(v) for v in torch.aminmax(y))
        if low < 0 or high >= n_out:
            raise ValueError(f"DRTP: class indices must lie in 0..{n_out - 1} (the network has {n_out} outputs); "
                             f"got values from {low} to {high}")
        return torch.nn.functional.one_hot(y.long(), n_out)
    if y.dim() != 2 or y.shape[1] != n_out:
        raise ValueError(f"DRTP needs {expected}; got shape {tuple(y.shape)}")
    return y
