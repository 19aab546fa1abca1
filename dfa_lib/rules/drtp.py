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

from .random_feedback import DFA, Scale


class DRTP(DFA):
    """DRTP: DFA's one matrix product applied to the target instead of the error.

    Call ``rule.observe_target(y)`` with the batch's one-hot (or class-index) targets before
    ``loss.backward()`` (:func:`dfa_lib.train` does it for you).  There is no MLP fast path.
    """

    name = "DRTP"
    has_fast_path = False

    def __init__(self, model: nn.Module, dist: str = "uniform", scale: Scale = 1.0, generator=None,
                 example_input=None):
        super().__init__(model, dist, scale, generator, "autograd", example_input)
        self._target = None

    def observe_target(self, y: torch.Tensor, scale: float | None = None) -> None:
        n_out = self.B.shape[1]
        if y.dim() == 1 and not y.is_floating_point():
            y = torch.nn.functional.one_hot(y.long(), n_out)
        if y.dim() != 2 or y.shape[1] != n_out:
            raise ValueError(f"DRTP needs one-hot targets of shape (N, {n_out}) or class indices of shape (N,); "
                             f"got shape {tuple(y.shape)}")
        self._target = y.to(self.B.dtype) * (1.0 / len(y) if scale is None else scale)

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
