"""The interface every FA-family rule implements, and the ``f'`` step they share.

A rule is an ``nn.Module`` (so feedback matrices are buffers that follow ``.to(device)``
and ``state_dict``) with one method, ``signals(model, cache, e)``.  Introduced in chapter 1.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..models import MLP, ForwardCache


def times_derivative(model: MLP, cache: ForwardCache, l: int, p: torch.Tensor) -> torch.Tensor:
    """``p * f'(a_l)`` for hidden layer ``l``: the last step of every rule's signal.

    For tanh with a consistent cache this is one fused kernel, ``p * (1 - h_l**2)``, the one
    autograd uses for tanh (3x fewer passes over the (N, n_l) tensor than the three-op form).
    """
    if cache.consistent and model.activation.name == "tanh":
        return torch.ops.aten.tanh_backward(p, cache.inputs[l])
    return p * model.hidden_derivative(cache, l)


class FeedbackRule(nn.Module):
    """Base class: a rule maps (model, forward cache, output error) to one signal per layer."""

    name = "rule"

    def signals(self, model: MLP, cache: ForwardCache, e: torch.Tensor) -> list:
        """``[delta_1, ..., delta_L]``, ``None`` where a layer gets no teaching signal."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.name
