"""Many small networks trained as one: a block-diagonal stack of MLPs.

Success rates over 100 random seeds (chapter 2) would take 100 Python training loops.
Instead, ``stack(models, rules)`` builds ONE wide MLP that contains every network:

* layer 1 stacks the networks' first layers row-wise (every hidden unit sees the same
  input, through its own weights), so it is exact as it is;
* every later layer is block-diagonal: network p's units only connect to network p's;
* DFA's and FA's feedback matrices are block-diagonal the same way, so each hidden unit
  hears only its own network's output error.

The loss sums over all outputs, so each block's gradient is exactly its own network's
gradient; :class:`MaskedSGD` zeroes the off-block gradients so the blocks stay apart
(it needs ``.grad``, so :func:`dfa_lib.train` gives it the gradient path, never the fused
plain-SGD one: see :class:`dfa_lib.update.FusedSGD`).
``unstack`` reads the networks back out.  Tested against separate runs in
``tests/test_stack.py``.  Introduced in chapter 2 (``book/02_xor_dfa.ipynb``).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .models import MLP
from .rules import FeedbackRule


def _block_diag(mats: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.block_diag(*mats)


def stack(models: Sequence[MLP], rules: Sequence[FeedbackRule] | None = None):
    """Stack same-shaped MLPs (and their rules) into one network.

    Returns ``(model, rule, masks)``: the wide MLP, the matching rule (or None) and a
    list with one 0/1 mask per layer (None for the first layer, which needs none).
    """
    models = list(models)
    if not models:
        raise ValueError("stack needs at least one model")
    first = models[0]
    for m in models[1:]:
        if m.sizes != first.sizes or m.activation.name != first.activation.name:
            raise ValueError("all stacked models must have the same sizes and activation")
    P = len(models)
    sizes = [first.sizes[0]] + [P * s for s in first.sizes[1:]]
    has_bias = first.layers[0].bias is not None
    big = MLP(sizes, hidden=first.activation.name, bias=has_bias, init="zeros")
    big = big.to(dtype=first.layers[0].weight.dtype, device=first.layers[0].weight.device)
    masks = [None]
    with torch.no_grad():
        for l, layer in enumerate(big.layers):
            weights = [m.layers[l].weight for m in models]
            if l == 0:
                layer.weight.copy_(torch.cat(weights, 0))
            else:
                layer.weight.copy_(_block_diag(weights))
                masks.append(_block_diag([torch.ones_like(w) for w in weights]))
            if has_bias:
                layer.bias.copy_(torch.cat([m.layers[l].bias for m in models]))
    rule = None if rules is None else _stack_rules(big, list(rules))
    return big, rule, masks


def _stack_rules(big: MLP, rules: list) -> FeedbackRule:
    kind = type(rules[0])
    if any(type(r) is not kind for r in rules):
        raise ValueError("all stacked rules must be of the same kind")
    return kind.stacked(big, rules)  # the rule class knows how its matrices stack (FeedbackRule.stacked)


def unstack(big: MLP, n_models: int) -> list:
    """The networks inside a stacked MLP, as separate MLPs (copies)."""
    sizes = [big.sizes[0]] + [s // n_models for s in big.sizes[1:]]
    out = []
    for p in range(n_models):
        m = MLP(sizes, hidden=big.activation.name, bias=big.layers[0].bias is not None)
        m = m.to(dtype=big.layers[0].weight.dtype)
        with torch.no_grad():
            for l, (small, layer) in enumerate(zip(m.layers, big.layers)):
                rows = slice(p * small.out_features, (p + 1) * small.out_features)
                cols = slice(None) if l == 0 else slice(p * small.in_features, (p + 1) * small.in_features)
                small.weight.copy_(layer.weight[rows, cols])
                if small.bias is not None:
                    small.bias.copy_(layer.bias[rows])
        out.append(m)
    return out


def per_model_outputs(out: torch.Tensor, n_models: int) -> torch.Tensor:
    """Split a stacked network's output (N, P * n_out) into (P, N, n_out)."""
    n, width = out.shape
    return out.reshape(n, n_models, width // n_models).permute(1, 0, 2)


class MaskedSGD(torch.optim.SGD):
    """Plain SGD that first multiplies each layer's weight gradient by its block mask.

    A subclass of SGD on purpose: :func:`dfa_lib.train` takes the fused in-place SGD path only
    for ``torch.optim.SGD`` itself, so this optimizer always sees ``.grad`` and can mask it.
    """

    def __init__(self, model: MLP, masks: Sequence, lr: float):
        super().__init__(model.parameters(), lr=lr)
        self._pairs = [(layer.weight, m) for layer, m in zip(model.layers, masks) if m is not None]

    @torch.no_grad()
    def step(self, closure=None):
        for weight, mask in self._pairs:
            if weight.grad is not None:
                weight.grad.mul_(mask)
        return super().step(closure)
