"""Sign symmetry: the feedback knows the signs of the forward weights, not their magnitudes.

Liao, Leibo & Poggio 2016 ("How important is weight symmetry in backpropagation?") and
Moskovitz, Litwin-Kumar & Abbott 2018, with BioTorch's three variants (Sanfiz & Akrout 2021).
Every learning layer after the first sends the signal down through a backward weight of its
weight's shape, recomputed from the current W at every step::

    uSF    B = sign(W)                     uniform magnitudes
    frSF   B = |R| * sign(W)               R fixed and random
    brSF   B = |R_t| * sign(W)             R redrawn for every mini-batch

The rest is FA's chain: ``delta_l = (delta_{l+1} @ B_{l+1}) * f'(a_l)``.  There is no MLP fast
path: these rules always train through autograd (:mod:`.graph`).  Compared in chapters 10 and 11.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import FeedbackRule
from .graph import input_gradient, learning_layers


class SignSymmetry(FeedbackRule):
    """Shared machinery: the backward weight of layer k is ``magnitude_k * sign(W_k)``."""

    magnitudes = "uniform"  # "uniform" (uSF), "fixed" (frSF) or "batch" (brSF)

    def __init__(self, model: nn.Module, generator: torch.Generator | None = None):
        super().__init__()
        self.generator = generator
        layers = learning_layers(model)
        self.layers = layers  # plain references to the model's layers (a list: not submodules of the rule)
        if self.magnitudes != "uniform":
            for k, layer in enumerate(layers[1:], start=1):
                self.register_buffer(f"R{k}", self._draw(layer.weight))
        self.attach(model)

    def _draw(self, w: torch.Tensor) -> torch.Tensor:
        r = torch.randn(w.shape, generator=self.generator, dtype=w.dtype)
        return r.abs().to(w.device)

    def start_forward(self, graph):
        if self.magnitudes == "batch":
            for k, layer in enumerate(self.layers[1:], start=1):
                getattr(self, f"R{k}").copy_(self._draw(layer.weight))

    def backward_weight(self, k: int) -> torch.Tensor:
        sign = self.layers[k].weight.detach().sign()
        return sign if self.magnitudes == "uniform" else getattr(self, f"R{k}") * sign

    def feedback_weights(self) -> list:
        return [self.backward_weight(k) for k in range(1, len(self.layers))]

    def tap(self, k, graph):
        if k == 0:
            return None, ()
        layer, x, B = graph.layers[k], graph.inputs[k], self.backward_weight(k)
        return (lambda g: (input_gradient(layer, B, g, x.shape),)), (x,)


class USF(SignSymmetry):
    """Uniform sign-concordant feedback: ``B = sign(W)`` (Liao et al. 2016)."""

    name = "uSF"
    magnitudes = "uniform"


class FRSF(SignSymmetry):
    """Fixed random-magnitude sign-concordant feedback: ``B = |R| * sign(W)``, R drawn once (Moskovitz et al. 2018)."""

    name = "frSF"
    magnitudes = "fixed"


class BRSF(SignSymmetry):
    """Batch random-magnitude sign-concordant feedback: ``B = |R_t| * sign(W)``, R redrawn every mini-batch."""

    name = "brSF"
    magnitudes = "batch"
