"""Random feedback: feedback alignment (FA) and direct feedback alignment (DFA).

Both replace the transposed forward weights of backpropagation by fixed random matrices,
kept as module buffers (so ``state_dict``, ``.to(device)`` and seeding just work)::

    FA    delta_l = (delta_{l+1} @ B_l^T) * f'(a_l)    B_l: (n_l, n_{l+1}), the shape of W_{l+1}^T
    DFA   delta_l = (e @ B_l^T)           * f'(a_l)    B_l: (n_l, n_out)

DFA forms all hidden signals with ONE matrix product ``e @ [B_1; ...; B_{L-1}]^T`` and never
runs the backward chain.  FA is introduced in chapter 1, DFA in chapter 2, the feedback
scales of the seeds and of Nøkland 2016 in chapters 3 and 5.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import torch

from ..models import MLP
from .base import FeedbackRule, times_derivative

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


class RandomFeedback(FeedbackRule):
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


class FA(RandomFeedback):
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


class DFA(RandomFeedback):
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
