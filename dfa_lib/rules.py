"""Feedback rules: how the output error reaches each hidden layer.

Every rule in the FA family differs only in the teaching signal ``delta_l`` it gives
hidden layer ``l`` (row-vector convention, one row per example, ``f'`` the hidden
activation's derivative, ``e`` the output error)::

    BP       delta_l = (delta_{l+1} @ W_{l+1})   * f'(a_l)   exact gradient
    FA       delta_l = (delta_{l+1} @ B_l^T)     * f'(a_l)   B_l fixed, random, shape (n_l, n_{l+1})
    DFA      delta_l = (e @ B_l^T)               * f'(a_l)   B_l fixed, random, shape (n_l, n_out)
    shallow  no signal: only the output layer learns

(In column form, as Lillicrap et al. write it: BP sends ``W^T e``, FA sends ``B e``.)
The output layer always gets ``delta_L = e``.  Whatever the rule, the weight gradient
is then the same: ``dW_l = delta_l^T h_{l-1}``, ``db_l = sum_n delta_l`` (divided by the
batch size for a mean loss), written into ``.grad`` so any ``torch.optim`` optimizer
takes the step.  DFA forms all hidden signals with ONE matrix product
``e @ [B_1; ...; B_{L-1}]^T`` and never runs the backward chain.

Introduced in chapter 1 (FA, shallow) and chapter 2 (DFA); alignment in chapter 7.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import torch
import torch.nn as nn

from .checks import FeedbackChecks  # issue 10: checked B assignment, sizes in state_dict
from .models import MLP, ForwardCache

Scale = Union[float, Callable[[tuple], float]]


def init_feedback(
    shape: tuple, dist: str = "uniform", scale: Scale = 0.5, generator: torch.Generator | None = None, dtype=None
) -> torch.Tensor:
    """A random feedback matrix.

    Args:
        dist: ``"uniform"`` for U[-scale, scale] (Lillicrap: 0.5) or ``"normal"`` for
            N(0, scale), scale being the standard deviation (seed 001: 1.9; seed 003: 0.01).
        scale: a number, or a function of the matrix shape returning one, e.g.
            Nøkland's ``lambda shape: 1 / math.sqrt(shape[1])``.
    """
    s = float(scale(tuple(shape)) if callable(scale) else scale)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"feedback scale must be a finite number >= 0, got {s}")
    dtype = dtype or torch.get_default_dtype()
    if dist == "uniform":
        return (torch.rand(*shape, generator=generator, dtype=dtype) * 2 - 1) * s
    if dist == "normal":
        return torch.randn(*shape, generator=generator, dtype=dtype) * s
    raise ValueError(f"unknown feedback distribution {dist!r}; choose 'uniform' or 'normal'")


def nokland_scale(shape: tuple) -> float:
    """1/sqrt(fan-in of the feedback matrix): Nøkland 2016's U[-1/sqrt(n), 1/sqrt(n)]."""
    return 1.0 / math.sqrt(shape[1])


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


class BP(FeedbackRule):
    """Backpropagation: the error travels back through the transposed forward weights."""

    name = "BP"

    def signals(self, model, cache, e):
        deltas = [e]
        for l in range(model.n_hidden, 0, -1):  # hidden layers L-1 ... 1
            back = deltas[0] @ model.layers[l].weight
            deltas.insert(0, times_derivative(model, cache, l, back))
        return deltas


class Shallow(FeedbackRule):
    """Shallow learning: only the output layer learns (Lillicrap et al.'s baseline)."""

    name = "shallow"

    def signals(self, model, cache, e):
        return [None] * model.n_hidden + [e]


class _RandomFeedback(FeedbackChecks, FeedbackRule):  # issue 10: FeedbackChecks
    """Shared machinery of FA and DFA: fixed random matrices kept as module buffers."""

    def __init__(self, model: MLP, dist: str, scale: Scale, generator: torch.Generator | None):
        super().__init__()
        if not isinstance(model, MLP):
            raise TypeError(f"{type(self).__name__} needs a dfa_lib.MLP, got {type(model).__name__}")
        if model.n_hidden == 0:
            raise ValueError(f"{type(self).__name__} needs at least one hidden layer; sizes are {model.sizes}")
        self.sizes = list(model.sizes)
        self.dist, self.scale = dist, scale
        self.reset_feedback(generator)

    def expected_shapes(self) -> list:
        raise NotImplementedError

    def _shape_meaning(self, l: int) -> str:
        raise NotImplementedError

    def reset_feedback(self, generator: torch.Generator | None = None) -> None:
        """Draw new feedback matrices from the rule's distribution."""
        device = next(iter(self.buffers()), torch.empty(0)).device
        mats = [init_feedback(s, self.dist, self.scale, generator) for s in self.expected_shapes()]
        self._store([m.to(device) for m in mats])

    def set_feedback(self, matrices: Sequence[torch.Tensor]) -> None:
        """Replace the feedback matrices, one per hidden layer, after checking their shapes."""
        matrices = list(matrices)
        shapes = self.expected_shapes()
        if len(matrices) != len(shapes):
            raise ValueError(
                f"{self.name} needs one feedback matrix per hidden layer: {len(shapes)} for sizes "
                f"{self.sizes}; got {len(matrices)}"
            )
        for l, (m, s) in enumerate(zip(matrices, shapes), start=1):
            if tuple(m.shape) != tuple(s):
                raise ValueError(
                    f"{self.name} feedback matrix for hidden layer {l} must have shape {tuple(s)} = "
                    f"{self._shape_meaning(l)}; got {tuple(m.shape)}"
                )
        ref = next(iter(self.buffers()))
        self._store([m.detach().to(device=ref.device, dtype=ref.dtype) for m in matrices])

    def _check_model(self, model: MLP) -> None:
        if list(model.sizes) != self.sizes:
            raise ValueError(f"{self.name} was built for sizes {self.sizes}, but the model has sizes {model.sizes}")


class FA(_RandomFeedback):
    """Feedback alignment (Lillicrap et al. 2016): a fixed random B_l replaces W_{l+1}^T.

    ``feedback[l-1]`` has the shape of ``W_{l+1}^T``: (n_l, n_{l+1}).  Setting each to the
    transpose of the next forward weight gives exactly backpropagation.
    """

    name = "FA"

    def __init__(self, model: MLP, dist: str = "uniform", scale: Scale = 0.5, generator=None):
        super().__init__(model, dist, scale, generator)

    def expected_shapes(self):
        return [(self.sizes[l], self.sizes[l + 1]) for l in range(1, len(self.sizes) - 1)]

    def _shape_meaning(self, l):
        return f"(width of layer {l}, width of layer {l + 1}), the shape of W_{l + 1}^T"

    def _store(self, mats):
        for l, m in enumerate(mats, start=1):
            self.register_buffer(f"B{l}", m)

    @property
    def feedback(self) -> list:
        return [getattr(self, f"B{l}") for l in range(1, len(self.sizes) - 1)]

    def signals(self, model, cache, e):
        self._check_model(model)
        deltas = [e]
        for l, B in zip(range(model.n_hidden, 0, -1), reversed(self.feedback)):
            deltas.insert(0, times_derivative(model, cache, l, deltas[0] @ B.T))
        return deltas


class DFA(_RandomFeedback):
    """Direct feedback alignment (Nøkland 2016): the output error goes straight to every layer.

    All hidden layers' matrices are rows of ONE buffer ``B`` of shape (n_1 + ... + n_{L-1}, n_out);
    ``feedback[l-1]`` is the (n_l, n_out) view for hidden layer l.  One matmul ``e @ B^T``
    gives every layer its signal.  With one hidden layer and ``B = W_2^T`` DFA is exactly BP.
    """

    name = "DFA"

    def __init__(self, model: MLP, dist: str = "normal", scale: Scale = 1.9, generator=None):
        super().__init__(model, dist, scale, generator)

    def expected_shapes(self):
        return [(n, self.sizes[-1]) for n in self.sizes[1:-1]]

    def _shape_meaning(self, l):
        return f"(width of hidden layer {l}, width of the output)"

    def _store(self, mats):
        self.register_buffer("B", torch.cat(mats, dim=0))

    @property
    def feedback(self) -> list:
        return list(torch.split(self.B, self.sizes[1:-1], dim=0))

    def signals(self, model, cache, e):
        self._check_model(model)
        projected = torch.split(e @ self.B.T, self.sizes[1:-1], dim=1)  # the one matmul
        hidden = [times_derivative(model, cache, l, p) for l, p in enumerate(projected, start=1)]
        return hidden + [e]


RULES = {"bp": BP, "fa": FA, "dfa": DFA, "shallow": Shallow}


def make_rule(name: str, model: MLP, **kwargs) -> FeedbackRule:
    """Build a rule by name: ``"bp"``, ``"fa"``, ``"dfa"`` or ``"shallow"``."""
    key = name.lower()
    if key not in RULES:
        raise ValueError(f"unknown rule {name!r}; choose one of {sorted(RULES)}")
    cls = RULES[key]
    return cls(model, **kwargs) if issubclass(cls, _RandomFeedback) else cls()


def write_grads(model: MLP, cache: ForwardCache, deltas: list, scale: float = 1.0, frozen=()) -> None:
    """Set ``.grad`` of every layer: ``dW_l = scale * delta_l^T h_{l-1}``, ``db_l = scale * sum delta_l``.

    Layers with no signal, or listed in ``frozen`` (1-based layer indices), get ``grad = None``
    so optimizers leave them untouched.
    """
    for l, (layer, delta, h_in) in enumerate(zip(model.layers, deltas, cache.inputs), start=1):
        if delta is None or l in frozen:
            layer.weight.grad = None
            if layer.bias is not None:
                layer.bias.grad = None
            continue
        rest = scale  # the factor still to apply after the matmul
        if scale != 1.0 and delta.shape[0] <= h_in.shape[1]:
            delta, rest = delta * scale, 1.0  # cheaper to scale the (N, n_l) signal than the (n_l, n_{l-1}) gradient
        grad = delta.T @ h_in
        layer.weight.grad = grad.mul_(rest) if rest != 1.0 else grad
        if layer.bias is not None:
            layer.bias.grad = delta.sum(0).mul_(rest) if rest != 1.0 else delta.sum(0)


@torch.no_grad()
def sgd_update(model: MLP, cache: ForwardCache, deltas: list, lrs: Sequence, scale: float = 1.0, frozen=()) -> None:
    """Plain SGD straight into the weights: ``W_l -= lr * scale * delta_l^T h_{l-1}``.

    The same step as :func:`write_grads` followed by ``torch.optim.SGD.step()`` (no momentum,
    no weight decay), but the gradient is never materialised: one fused ``addmm_`` per layer
    reads and writes each weight matrix once, instead of allocating ``.grad``, filling it and
    passing over both again in the optimizer.  ``lrs`` holds one ``(weight lr, bias lr)``
    pair per layer; a pair of ``None`` leaves that layer alone.  Used by :func:`dfa_lib.train`
    whenever the optimizer is plain SGD (chapter 3 explains the loop).
    """
    for l, (layer, delta, h_in, (lr_w, lr_b)) in enumerate(zip(model.layers, deltas, cache.inputs, lrs), start=1):
        if delta is None or l in frozen:
            continue
        if lr_w:
            layer.weight.addmm_(delta.T, h_in, alpha=-lr_w * scale)
        if layer.bias is not None and lr_b:
            layer.bias.add_(delta.sum(0), alpha=-lr_b * scale)


def compute_grads(model: MLP, rule: FeedbackRule, cache: ForwardCache, e: torch.Tensor, scale: float = 1.0, frozen=()):
    """Run ``rule`` on a cache and write the gradients; returns the signals for inspection."""
    deltas = rule.signals(model, cache, e)
    write_grads(model, cache, deltas, scale, frozen)
    return deltas
