"""Backpropagation and shallow learning: the two rules without feedback weights.

Introduced in chapter 1 (``book/01_linear_fa.ipynb``): BP is the reference every other
rule is measured against, shallow learning the baseline that trains the output layer only.
"""
from __future__ import annotations

from .base import FeedbackRule, times_derivative


class BP(FeedbackRule):
    """Backpropagation: the error travels back through the transposed forward weights.

    ``delta_L = e``, ``delta_l = (delta_{l+1} @ W_{l+1}) * f'(a_l)``.  On any other model BP is
    plain autograd: the rule puts no hooks on it (``BP(model, path="autograd")`` attaches hooks that
    change nothing, which is how the tests check the autograd machinery against autograd itself).
    """

    name = "BP"
    has_fast_path = True

    def __init__(self, model=None, path: str = "auto"):
        super().__init__()
        if path == "autograd":
            self.attach(model)

    def cuts(self, k, n_layers):
        return False

    def signals(self, model, cache, e):
        deltas = [e]
        for l in range(model.n_hidden, 0, -1):  # hidden layers L-1 ... 1
            back = deltas[0] @ model.layers[l].weight
            deltas.insert(0, times_derivative(model, cache, l, back))
        return deltas


class Shallow(FeedbackRule):
    """Shallow learning: only the output layer learns (Lillicrap et al.'s baseline).

    On any model the graph is cut at every learning layer's input and nothing is sent back,
    so only the last learning layer gets a gradient.
    """

    name = "shallow"
    has_fast_path = True

    def __init__(self, model=None, path: str = "auto"):
        super().__init__()
        if model is not None:
            self._choose_path(model, path)

    def signals(self, model, cache, e):
        return [None] * model.n_hidden + [e]
