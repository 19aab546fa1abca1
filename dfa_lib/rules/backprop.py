"""Backpropagation and shallow learning: the two rules without feedback weights.

Introduced in chapter 1 (``book/01_linear_fa.ipynb``): BP is the reference every other
rule is measured against, shallow learning the baseline that trains the output layer only.
"""
from __future__ import annotations

from .base import FeedbackRule, check_common_arguments, refuse_a_second_rule, times_derivative


class _DrawsNothing:
    """For rules with no feedback of their own: one new instance serves every network of a
    :class:`~dfa_lib.seeds.SeedBatch` or of a block-diagonal stack (chapter 2)."""

    @classmethod
    def batched(cls, rules):
        return cls()

    @classmethod
    def stacked(cls, big, rules):
        return cls()


class BP(_DrawsNothing, FeedbackRule):
    """Backpropagation: the error travels back through the transposed forward weights.

    ``delta_L = e``, ``delta_l = (delta_{l+1} @ W_{l+1}) * f'(a_l)``.  On any model BP is plain
    autograd: the rule puts no hooks on it (``BP(model, path="autograd")`` attaches hooks that
    change nothing, which is how the tests check the autograd machinery against autograd itself).
    ``BP(model)`` refuses a model that carries another rule's hooks, which would train it instead
    (take them off with :func:`dfa_lib.detach`; chapter 10).  ``generator`` and ``example_input``
    are checked and unused (BP draws nothing), so every rule can be built the same way.
    """

    name = "BP"
    has_fast_path = True
    needs_hooks = False

    def __init__(self, model=None, path: str = "auto", generator=None, example_input=None):
        super().__init__()
        check_common_arguments(generator, example_input, path)
        if path == "autograd":
            self.forced_autograd = True
            self.attach(model)
        elif model is not None:
            refuse_a_second_rule(model, self.name)

    def cuts(self, k, n_layers):
        return False

    def signals(self, model, cache, e):
        deltas = [e]
        for l in range(model.n_hidden, 0, -1):  # hidden layers L-1 ... 1
            back = deltas[0] @ model.layers[l].weight
            deltas.insert(0, times_derivative(model, cache, l, back))
        return deltas


class Shallow(_DrawsNothing, FeedbackRule):
    """Shallow learning: only the output layer learns (Lillicrap et al.'s baseline).

    On any model, an MLP included, the graph is cut at every learning layer's input and nothing
    is sent back, so only the last learning layer gets a gradient.  ``Shallow()`` without a model
    is for :func:`dfa_lib.train` on an MLP (its fast path needs no hooks).  ``generator`` and
    ``example_input`` are checked and unused (shallow learning draws nothing).
    """

    name = "shallow"
    has_fast_path = True

    def __init__(self, model=None, path: str = "auto", generator=None, example_input=None):
        super().__init__()
        check_common_arguments(generator, example_input, path)
        if model is not None:
            self._choose_path(model, path)

    def signals(self, model, cache, e):
        return [None] * model.n_hidden + [e]
