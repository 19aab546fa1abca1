"""Kolen-Pollack: the feedback weights learn, with the same update as the forward weights.

Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019 ("Deep learning without weight transport"),
after Kolen & Pollack 1994.  Every learning layer after the first has a backward weight ``B``
of its weight's shape that sends the signal down in place of ``W`` (as in FA).  Both receive the
same update, each with weight decay::

    dW = -eta * (delta^T h) - lambda * W
    dB = -eta * (delta^T h) - lambda * B        (the same gradient: B never sees W itself)

so ``W - B`` shrinks by ``(1 - eta * lambda)`` every step and B converges to W: the transport
problem solved by local information (each synapse of B sees the same pre- and post-synaptic
activity as its W twin).  ``B`` are parameters of the rule; :func:`dfa_lib.train` adds them to
its optimizer, in your own loop pass ``list(model.parameters()) + list(rule.parameters())``.
The decay is part of the rule (added to both gradients), so any optimizer applies it; with plain
SGD the gap then shrinks by ``(1 - lr * weight_decay)`` a step.  An adaptive optimizer (Adam)
scales ``G + lambda W`` and ``G + lambda B`` differently, so the gap no longer just decays: there,
build the rule with ``weight_decay=0`` and decay both the decoupled way
(``torch.optim.AdamW(params, weight_decay=lambda)``): W and B then receive identical Adam steps and
the gap shrinks by ``(1 - lr * lambda)`` every step (chapter 10).  Compared in chapters 10 and 11.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import FeedbackRule
from .graph import input_gradient, learning_layers
from .random_feedback import fan_in_scale, init_feedback


class _MirrorGradient:
    """Gradient hook of layer ``k``'s weight: B_k gets W_k's gradient (k >= 1), both get the decay."""

    def __init__(self, rule: "KolenPollack", k: int):
        self.rule, self.k = rule, k

    def __call__(self, w: torch.Tensor) -> None:
        decay = self.rule.weight_decay
        if self.k > 0:
            B = self.rule.backward[self.k - 1]
            B.grad = w.grad.detach().clone()
            if decay:
                B.grad.add_(B.detach(), alpha=decay)
        if decay:
            w.grad.add_(w.detach(), alpha=decay)


class KolenPollack(FeedbackRule):
    """Kolen-Pollack: ``B`` gets W's gradient, both decay with ``weight_decay`` (Akrout et al. 2019)."""

    name = "KP"

    def __init__(self, model: nn.Module, weight_decay: float = 1e-3, dist: str = "uniform", scale=fan_in_scale,
                 generator: torch.Generator | None = None):
        super().__init__()
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.weight_decay = float(weight_decay)
        self.layers = learning_layers(model)
        # B drawn like FA's, stored in W's shape: a Linear layer's W^T-shaped draw is transposed
        self.backward = nn.ParameterList()
        for layer in self.layers[1:]:
            w = layer.weight
            shape = (w.shape[1], w.shape[0]) if isinstance(layer, nn.Linear) else tuple(w.shape)
            B = init_feedback(shape, dist, scale, generator, dtype=w.dtype)
            B = B.T.contiguous() if isinstance(layer, nn.Linear) else B
            self.backward.append(nn.Parameter(B.to(w.device)))
        self._register_grad_hooks()
        self.attach(model)

    def _register_grad_hooks(self) -> None:
        """After W's gradient is accumulated: B gets a copy, and both get the decay."""
        self._grad_hooks = [layer.weight.register_post_accumulate_grad_hook(_MirrorGradient(self, k))
                            for k, layer in enumerate(self.layers) if layer.weight.requires_grad]

    def __getstate__(self):
        state = super().__getstate__()
        state["_grad_hooks"] = None  # tensor hooks are not saved with the weights: re-made at the next forward
        return state

    def start_forward(self, graph) -> None:
        if self._grad_hooks is None:  # after unpickling
            self._register_grad_hooks()

    def detach(self) -> None:
        """Take the rule's hooks off its model, the gradient hooks on the weights too."""
        super().detach()
        for h in self._grad_hooks or ():
            h.remove()
        self._grad_hooks = []

    def feedback_weights(self) -> list:
        return [B.detach() for B in self.backward]

    def tap(self, k, graph):
        if k == 0:
            return None, ()
        layer, x, B = graph.layers[k], graph.inputs[k], self.backward[k - 1].detach()
        return (lambda g: (input_gradient(layer, B, g, x.shape),)), (x,)
