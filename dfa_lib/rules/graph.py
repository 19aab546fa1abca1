"""Any model: how a rule reaches the learning layers of an ordinary ``nn.Module``.

A network is a chain of *learning layers* (``nn.Linear`` and ``nn.Conv2d``) with anything
between them (activations, pooling, ``nn.Flatten``, dropout, batch norm).  A *block* is a
learning layer and everything after it up to the next learning layer; the block's output is
the next learning layer's input.  A rule only decides which gradient each block output gets:

- BP: autograd through the whole chain (nothing to do: no hooks).
- FA, sign symmetry, Kolen-Pollack: the gradient at a layer's input is computed with a
  backward weight ``B`` (shape of ``W``) in place of ``W``.
- DFA, DRTP: the gradient at every block output comes straight from the output error (DFA) or
  the target (DRTP) through one matrix product.
- Shallow: no gradient reaches a hidden block.

The mechanism, for every rule but BP: a forward pre-hook on each learning layer cuts the
graph at its input (the layer sees a detached copy; the attached tensor is kept), and a
forward hook wraps the layer's output in :class:`_Tap`, an identity whose backward receives
the gradient at that output and returns the gradients of the kept block outputs.  One
ordinary ``loss.backward()`` then gives every weight its gradient, conv or not, and no rule
but BP runs the backward chain.  The book explains it in chapter 10; chapter 11 uses it on a
convolutional network.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LEARNING_LAYERS = (nn.Linear, nn.Conv2d)


def learning_layers(model: nn.Module) -> list:
    """The ``nn.Linear`` and ``nn.Conv2d`` modules of ``model``, in registration order."""
    layers = [m for m in model.modules() if isinstance(m, LEARNING_LAYERS)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer for a feedback rule to train")
    return layers


def input_gradient(layer: nn.Module, weight: torch.Tensor, g: torch.Tensor, input_shape) -> torch.Tensor:
    """The gradient at a layer's input for gradient ``g`` at its output, with ``weight`` in place of W.

    With ``weight = layer.weight`` this is exactly what autograd computes (the layer is linear
    in its input); FA-type rules pass their backward weight ``B`` instead.
    """
    if isinstance(layer, nn.Linear):
        return g @ weight
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError(f"{layer}: only padding_mode='zeros' is supported by the feedback rules")
        return torch.nn.grad.conv2d_input(input_shape, weight, g, layer.stride, layer.padding, layer.dilation,
                                          layer.groups)
    raise TypeError(f"no input gradient for {type(layer).__name__}")


def forward_with(layer: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The layer's linear map (no bias) applied with ``weight``: used to check shapes and by tests."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight)
    return F.conv2d(x, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)


class _Tap(torch.autograd.Function):
    """Identity on a layer's output; its backward asks ``handler(g)`` for the kept block outputs' gradients."""

    @staticmethod
    def forward(ctx, handler, out, *kept):
        ctx.handler = handler
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g):
        return (None, g, *ctx.handler(g))


class _PreHook:
    """Cuts the graph at learning layer ``k``'s input and keeps the attached input."""

    def __init__(self, graph: "RuleGraph", k: int):
        self.graph, self.k = graph, k

    def __call__(self, layer, args):
        graph = self.graph
        if not torch.is_grad_enabled():
            return None
        if self.k == 0:
            graph.start_forward()
        x = args[0]
        graph.inputs.append(x)
        if graph.active and graph.rule.cuts(self.k, graph.n_layers):
            return (x.detach(),) + tuple(args[1:])
        return None


class _PostHook:
    """Wraps learning layer ``k``'s output in the rule's tap (if the rule taps that layer)."""

    def __init__(self, graph: "RuleGraph", k: int):
        self.graph, self.k = graph, k

    def __call__(self, layer, args, out):
        graph = self.graph
        if not torch.is_grad_enabled() or len(graph.inputs) != self.k + 1:
            if torch.is_grad_enabled():
                raise RuntimeError(
                    f"learning layer {self.k + 1} ({layer}) ran out of order or twice in one forward pass; "
                    "the feedback rules need each nn.Linear/nn.Conv2d to run once, in registration order")
            return None
        graph.outputs.append(out)
        if not graph.active:
            return None
        handler, kept = graph.rule.tap(self.k, graph)
        if handler is None:
            return None
        return _Tap.apply(handler, out, *kept)


class RuleGraph:
    """A rule's hooks on one model, and what the current forward pass left (chapter 10).

    ``inputs[k]`` is learning layer ``k``'s input as the previous block produced it (attached to
    that block's graph), ``outputs[k]`` the layer's output.  ``active=False`` turns the rule off
    (plain autograd: BP), which :func:`dfa_lib.metrics.alignment` uses for its reference.
    """

    def __init__(self, rule, model: nn.Module):
        self.rule, self.layers = rule, learning_layers(model)
        self.n_layers = len(self.layers)
        self.active = True
        self.inputs, self.outputs = [], []
        self.handles = []
        for k, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_pre_hook(_PreHook(self, k)))
            self.handles.append(layer.register_forward_hook(_PostHook(self, k)))

    def start_forward(self) -> None:
        self.inputs, self.outputs = [], []
        self.rule.start_forward(self)

    def remove(self) -> None:
        """Take the hooks off the model."""
        for h in self.handles:
            h.remove()
        self.handles = []

    def __getstate__(self):  # the hooks hold this object; pickle it without the live tensors
        state = dict(self.__dict__)
        state["inputs"], state["outputs"], state["handles"] = [], [], []
        return state


def layer_io_shapes(model: nn.Module, example_input: torch.Tensor | None = None) -> tuple:
    """Per-example input shape of every learning layer and the last layer's output shape.

    Pure ``nn.Linear`` chains need no example (each input has ``in_features`` entries); a model
    with conv layers is run once, without gradients, on ``example_input`` (one or more rows).
    """
    layers = learning_layers(model)
    if example_input is None:
        if all(isinstance(l, nn.Linear) for l in layers):
            return [(l.in_features,) for l in layers], (layers[-1].out_features,)
        raise ValueError(
            "this model has conv layers, so the shapes of its block outputs are only known after a forward "
            "pass: pass example_input=x[:1] (one input row) when you build the rule")
    shapes, handles = {}, []

    def record(k):
        def hook(module, args, out):
            shapes.setdefault(k, (tuple(args[0].shape[1:]), tuple(out.shape[1:])))
        return hook

    for k, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(record(k)))
    was_training = model.training
    model.eval()  # batch norm cannot take a single row in training mode
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if len(shapes) != len(layers):
        raise ValueError("example_input did not run through every nn.Linear/nn.Conv2d layer of the model")
    return [shapes[k][0] for k in range(len(layers))], shapes[len(layers) - 1][1]
