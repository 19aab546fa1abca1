"""Feedback points: where DFA's and DRTP's projected signal enters a model, and how far back it travels.

DFA and DRTP send one random projection of the output error (DFA) or of the target (DRTP)
to every *block*.  On a chain of ``nn.Linear``/``nn.Conv2d`` layers the blocks are known (one per
learning layer, :mod:`.graph`); on a residual network or a transformer they are the reader's
choice.  TinyDFA (Launay, Poli, Boniface & Krzakala 2020, ``lightonai/dfa-scales-to-modern-deep-learning``)
lets the user place a ``DFALayer`` after each block; :class:`FeedbackPoint` is that module here,
named for what it is to both rules that use it.

What a point means, in the backward pass of a model with points and DFA or DRTP attached:

- the gradient arriving at point ``k`` from the rest of the network is *discarded* and replaced by
  ``B_k e`` (DFA, ``e`` the gradient of the loss at the model's output) or ``B_k y*`` (DRTP), one
  row of ``B`` per entry of the point's input (each example's whole block output, tokens included);
- from there, plain backprop runs back through the block, up to the previous point (or to the
  model's input): every parameter in between (the learning layers, the attention's products,
  layer norm, an embedding before the first point) is trained by the true derivative of that
  signal;
- parameters after the last point (the output head, a final layer norm) get the loss's exact gradient.

A point cuts the graph: nothing flows back across it.  On a residual stream this means each block
hears *only its own* signal, not the later blocks' signals carried back by the skip path: TinyDFA's
``DFALayer`` detaches its input in the same way ("Cut the computation graph so that gradients don't
flow back beyond DFALayer"), and Launay et al.'s transformer places one after each encoder layer,
on the stream after the second layer norm.  Place a point on the stream itself, so that no skip
connection bypasses it; a skip that does bypass every point carries true gradients.

Other rules ignore points (the module is the identity): BP, FA, sign symmetry and Kolen-Pollack
follow the model's own graph, and shallow learning trains only the output layer.  Chapter 12.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class FeedbackPoint(nn.Module):
    """The identity, marking where a block ends: DFA and DRTP send their signal here (module docstring).

    Place one after each block of a model, e.g. ``x = self.point(x + self.block(x))``, build the
    rule with ``example_input=x[:1]`` (the points' shapes fix the feedback matrix) and train as
    usual.  Each point must run once per forward pass, in the order the points are registered.
    The points are TinyDFA's ``DFALayer`` (Launay et al. 2020); see :mod:`dfa_lib.rules.points`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def feedback_points(model: nn.Module) -> list:
    """The :class:`FeedbackPoint` modules of ``model``, in registration order."""
    return [m for m in model.modules() if isinstance(m, FeedbackPoint)]


class WithFeedbackPoint(nn.Module):
    """``module`` followed by a :class:`FeedbackPoint`: ``point(module(*args, **kwargs))``.

    For blocks whose forward you do not write, such as the layers of ``nn.TransformerEncoder``:
    :func:`add_feedback_points` puts one after each.  Attributes the wrapped module has (an encoder
    layer's ``self_attn``, ``norm1`` ...) are read through, so code that inspects the layers still works.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.point = FeedbackPoint()

    def forward(self, *args, **kwargs):
        return self.point(self.module(*args, **kwargs))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


def add_feedback_points(layers: nn.ModuleList) -> nn.ModuleList:
    """Put a :class:`FeedbackPoint` after every module of ``layers`` (in place) and return ``layers``.

    ``add_feedback_points(model.encoder.layers)`` marks each layer of an ``nn.TransformerEncoder``
    as one DFA/DRTP block, the point on the residual stream after the layer's last layer norm: the
    placement of Launay et al.'s transformer (module docstring).  Chapter 12.
    """
    if not isinstance(layers, (nn.ModuleList, nn.Sequential)):
        raise TypeError(f"add_feedback_points takes an nn.ModuleList or nn.Sequential of blocks (e.g. "
                        f"model.encoder.layers), got {type(layers).__name__}")
    for i, layer in enumerate(layers):
        if not isinstance(layer, WithFeedbackPoint):
            layers[i] = WithFeedbackPoint(layer)
    return layers
