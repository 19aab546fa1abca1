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
The decay is part of the rule (added to both gradients), so any optimizer applies it.
Compared in chapters 10 and 11.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import FeedbackRule
from .graph import input_gradient, learning_layers
from .random_feedback import fan_in_scale, init_feedback


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
        self._grad_hooks = [layer.weight.register_post_accumulate_grad_hook(self._mirror(k))
                            for k, layer in enumerate(self.layers[1:], start=1)]
        if self.layers[0].weight.requires_grad:
            self._grad_hooks.append(self.layers[0].weight.register_post_accumulate_grad_hook(self._decay_only))
        self.attach(model)

    def _decay_only(self, w: torch.Tensor) -> None:
        if self.weight_decay:
            w.grad.add_(w.detach(), alpha=self.weight_decay)

    def _mirror(self, k: int):
        def hook(w: torch.Tensor) -> None:
            B = self.backward[k - 1]
            B.grad = w.grad.detach().clone()
            if self.weight_decay:
                B.grad.add_(B.detach(), alpha=self.weight_decay)
                w.grad.add_(w.detach(), alpha=self.weight_decay)
        return hook

    def feedback_weights(self) -> list:
        return [B.detach() for B in self.backward]

    def tap(self, k, graph):
        if k == 0:
            return None, ()
        layer, x, B = graph.layers[k], graph.inputs[k], self.backward[k - 1].detach()
        return (lambda g: (input_gradient(layer, B, g, x.shape),)), (x,)
