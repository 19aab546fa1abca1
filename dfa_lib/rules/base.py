"""The interface every FA-family rule implements, and the ``f'`` step they share.

A rule is an ``nn.Module`` (so feedback matrices are buffers that follow ``.to(device)``
and ``state_dict``).  It reaches a model one of two ways:

- the MLP fast path, ``signals(model, cache, e)``: one teaching signal per layer from a
  :class:`~dfa_lib.models.ForwardCache`, written out by hand (chapters 1-7);
- the autograd path for any model of ``nn.Linear``/``nn.Conv2d`` layers (:mod:`.graph`):
  hooks that decide the gradient each block output receives, so that an ordinary
  ``loss.backward(); optimizer.step()`` applies the rule (chapters 10 and 11).

Both paths compute the same update (``tests/test_any_model.py``).  Introduced in chapter 1.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..models import MLP, ForwardCache
from .graph import RuleGraph


def times_derivative(model: MLP, cache: ForwardCache, l: int, p: torch.Tensor) -> torch.Tensor:
    """``p * f'(a_l)`` for hidden layer ``l``: the last step of every rule's signal.

    For tanh with a consistent cache this is one fused kernel, ``p * (1 - h_l**2)``, the one
    autograd uses for tanh (3x fewer passes over the (N, n_l) tensor than the three-op form).
    """
    if cache.consistent and model.activation.name == "tanh":
        return torch.ops.aten.tanh_backward(p, cache.inputs[l])
    return p * model.hidden_derivative(cache, l)


class FeedbackRule(nn.Module):
    """Base class: a rule maps the output error to a teaching signal for every layer.

    Args of subclasses' constructors: ``path="auto"`` takes the MLP fast path for a
    :class:`~dfa_lib.models.MLP` when the rule has one, the autograd path otherwise;
    ``path="autograd"`` forces the autograd path (hooks on the model's layers).
    """

    name = "rule"
    has_fast_path = False  # True where signals() is implemented

    def __init__(self):
        super().__init__()
        self.graph: RuleGraph | None = None

    # ---------------------------------------------------------------- MLP fast path
    def signals(self, model: MLP, cache: ForwardCache, e: torch.Tensor) -> list:
        """``[delta_1, ..., delta_L]``, ``None`` where a layer gets no teaching signal."""
        raise NotImplementedError(f"{self.name} has no MLP fast path; it trains through autograd (path='autograd')")

    def uses_fast_path(self, model) -> bool:
        """Whether :func:`dfa_lib.train` applies this rule with :meth:`signals` (else through autograd)."""
        return self.graph is None and self.has_fast_path and isinstance(model, MLP)

    # ---------------------------------------------------------------- autograd path
    def attach(self, model: nn.Module) -> "FeedbackRule":
        """Put the rule's hooks on ``model``'s learning layers (done by the constructor)."""
        if self.graph is not None:
            raise RuntimeError(f"{self.name} is already attached to a model; call detach() first")
        self.graph = RuleGraph(self, model)
        return self

    def detach(self) -> None:
        """Take the rule's hooks off its model (the model then trains with plain autograd, i.e. BP)."""
        if self.graph is not None:
            self.graph.remove()
            self.graph = None

    def _choose_path(self, model: nn.Module, path: str) -> None:
        if path not in ("auto", "autograd"):
            raise ValueError(f"path must be 'auto' or 'autograd', got {path!r}")
        if path == "autograd" or not (self.has_fast_path and isinstance(model, MLP)):
            self.attach(model)

    def cuts(self, k: int, n_layers: int) -> bool:
        """Whether learning layer ``k`` (0-based) sees a detached input (no gradient flows past it)."""
        return True

    def tap(self, k: int, graph: RuleGraph) -> tuple:
        """``(handler, kept)`` for layer ``k``'s output: ``handler(g)`` returns the gradients of the
        tensors in ``kept`` given the gradient ``g`` at the layer's output; ``(None, ())`` for none."""
        return None, ()

    def start_forward(self, graph: RuleGraph) -> None:
        """Called at the start of every forward pass with gradients (brSF redraws its magnitudes here)."""

    def observe_target(self, y: torch.Tensor, scale: float | None = None) -> None:
        """Show the rule the batch's targets (only DRTP uses them); ``scale`` defaults to 1/batch."""

    def feedback_weights(self) -> list:
        """The backward weight of every learning layer after the first, in the layer's weight shape
        (``None`` where the rule has none, e.g. DFA): BioTorch's weight-alignment measure compares them with W."""
        return []

    def extra_repr(self) -> str:
        return self.name
