"""Sign symmetry: the feedback knows the signs of the forward weights, not their magnitudes.

Liao, Leibo & Poggio 2016 ("How important is weight symmetry in backpropagation?") and
Moskovitz, Litwin-Kumar & Abbott 2018, with BioTorch's three variants (Sanfiz & Akrout 2021).
Every learning layer after the first sends the signal down through a backward weight of its
weight's shape, recomputed from the current W at every step::

    uSF    B = (b / sqrt(3)) * sign(W)     one magnitude per layer: the std of U[-b, b]
    frSF   B = |R| * sign(W)               R ~ U[-b, b], drawn once
    brSF   B = |R_t| * sign(W)             R_t ~ U[-b, b], redrawn for every mini-batch

with ``b = sqrt(6 / (fan_in + fan_out))`` of the layer's weight by default: BioTorch's scaling
(its default ``"init": "xavier"``), which keeps the signal at the size of a freshly initialised
layer's.  Unscaled, ``sign(W)`` would multiply the signal by ``sqrt((fan_in + fan_out) / 2)`` at
every layer it passes (the gradient of LeNet's first conv about 2 * 10^4 times BioTorch's).

The rest is FA's chain: ``delta_l = (delta_{l+1} @ B_{l+1}) * f'(a_l)``.  There is no MLP fast
path: these rules always train through autograd (:mod:`.graph`).  Compared in chapters 10 and 11.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable, Union

import torch
import torch.nn as nn

from .base import FeedbackRule, check_common_arguments
from .graph import input_gradient, learning_layers
from .random_feedback import random_tensor, xavier_bound

Bound = Union[float, Callable[[tuple], float]]


class SignSymmetry(FeedbackRule):
    """Shared machinery: the backward weight of layer k is ``magnitude_k * sign(W_k)``.

    ``rule.feedback`` lists them in every rule's common layout (:mod:`dfa_lib.rules`),
    ``(magnitude_k * sign(W_k)).transpose(0, 1)``, recomputed from the current W at each call.
    """

    magnitudes = "uniform"  # "uniform" (uSF), "fixed" (frSF) or "batch" (brSF)
    feedback_stands_for_weights = True

    def __init__(self, model: nn.Module, generator: torch.Generator | None = None, scale: Bound | None = None,
                 example_input: torch.Tensor | None = None, path: str = "auto"):
        """Attach the rule to ``model`` (see the class docstring for the arguments)."""
        super().__init__()
        check_common_arguments(generator, example_input, path)
        self.generator = generator
        layers = learning_layers(model)
        self.layers = layers  # plain references to the model's layers (a list: not submodules of the rule)
        bound = xavier_bound if scale is None else scale
        self.bounds = [None] + [_checked_bound(bound, tuple(layer.weight.shape)) for layer in layers[1:]]
        if self.magnitudes != "uniform":
            for k, layer in enumerate(layers[1:], start=1):
                w = layer.weight
                self.register_buffer(f"R{k}", self._random_magnitudes(k, w.dtype, w.device))
        self.attach(model)

    def _random_magnitudes(self, k: int, dtype, device) -> torch.Tensor:
        """|U[-b, b]| = b * U[0, 1] for layer k, in W's dtype on W's device."""
        shape = tuple(self.layers[k].weight.shape)
        return random_tensor(shape, "uniform", self.generator, dtype, device).abs_().mul_(self.bounds[k])

    def start_forward(self, graph):
        if self.magnitudes == "batch":
            for k, layer in enumerate(self.layers[1:], start=1):
                self._redraw(k, layer.weight)

    def _redraw(self, k: int, w: torch.Tensor) -> None:
        """brSF's new magnitudes, drawn in place on W's device (no copy from the CPU each batch)."""
        R = getattr(self, f"R{k}")
        if R.device != w.device or R.dtype != w.dtype:  # the model moved since the rule was built
            self.register_buffer(f"R{k}", self._random_magnitudes(k, w.dtype, w.device))
        elif self.generator is None or self.generator.device == R.device:
            R.uniform_(0.0, self.bounds[k], generator=self.generator)
        else:  # a generator on another device: draw there, then copy
            R.copy_(self._random_magnitudes(k, R.dtype, R.device))

    def _backward_weight(self, k: int) -> torch.Tensor:
        """Learning layer k's backward weight in W's own layout, which the layer's backward takes."""
        sign = self.layers[k].weight.detach().sign()
        if self.magnitudes == "uniform":
            return sign * (self.bounds[k] / math.sqrt(3.0))
        return getattr(self, f"R{k}") * sign

    @property
    def feedback(self) -> list:
        return [self._backward_weight(k).transpose(0, 1) for k in range(1, len(self.layers))]

    def tap(self, k, graph):
        if k == 0:
            return None, ()
        layer, x, B = graph.layers[k], graph.inputs[k], self._backward_weight(k)
        return (lambda g: (input_gradient(layer, B, g, x.shape),)), (x,)


_ARGS = """
Args:
    model: any ``nn.Module`` whose learning layers are ``nn.Linear``/``nn.Conv2d``.
    generator: a ``torch.Generator`` for the random magnitudes of frSF and brSF (uSF draws
        nothing).  It may live on the CPU or on the model's device; brSF draws on the
        generator's device, so a generator on the model's device saves a copy every batch.
        Default None: torch's global random stream of the model's device.
    scale: the range ``b`` of the magnitudes U[-b, b] (see the module docstring): a number,
        or a function of the weight's shape returning one.  Default None:
        :func:`~dfa_lib.rules.random_feedback.xavier_bound`, BioTorch's default.  uSF with
        ``scale=math.sqrt(3)`` gives the unscaled ``B = sign(W)`` of Liao et al.'s equations;
        ``scale=fan_in_scale`` the range of PyTorch's own initialisation (BioTorch's ``"init": "kaiming"``).
    example_input: not needed (checked and ignored, so every rule can be built the same way).
    path: ``"auto"`` or ``"autograd"``, the same here: sign symmetry always trains through autograd.
"""


def _checked_bound(bound: Bound, shape: tuple) -> float:
    b = float(bound(shape) if callable(bound) else bound)
    if not math.isfinite(b) or b < 0:
        raise ValueError(f"sign-symmetry scale must be a finite number >= 0, got {b}")
    return b


class USF(SignSymmetry):
    """Uniform sign-concordant feedback: ``B = (b / sqrt(3)) * sign(W)`` (Liao et al. 2016).

    Default ``b = sqrt(6 / (fan_in + fan_out))`` of each layer's weight, so ``B`` has the standard
    deviation of Xavier's initialisation, exactly as BioTorch's uSF (default ``"init": "xavier"``).
    uSF draws nothing: ``generator`` is checked and unused, so every rule is built the same way.
    """

    name = "uSF"
    magnitudes = "uniform"


class FRSF(SignSymmetry):
    """Fixed random-magnitude sign-concordant feedback: ``B = |R| * sign(W)``, R drawn once (Moskovitz et al. 2018).

    Default ``R ~ U[-b, b]`` with ``b = sqrt(6 / (fan_in + fan_out))`` of each layer's weight:
    BioTorch's frSF (its default ``"init": "xavier"``).
    """

    name = "frSF"
    magnitudes = "fixed"


class BRSF(SignSymmetry):
    """Batch random-magnitude sign-concordant feedback: ``B = |R_t| * sign(W)``, R redrawn every mini-batch.

    Default ``R_t ~ U[-b, b]`` with ``b = sqrt(6 / (fan_in + fan_out))`` of each layer's weight:
    BioTorch's brSF (its default ``"init": "xavier"``), drawn on the weight's device at the start
    of every forward pass with gradients.
    """

    name = "brSF"
    magnitudes = "batch"


for _variant in (SignSymmetry, USF, FRSF, BRSF):  # one Args section, shown by help() and the API page for each
    _variant.__doc__ = inspect.cleandoc(_variant.__doc__) + "\n" + _ARGS
