"""Many seeds of one network trained as ONE batched model: error bars for the price of a few runs.

A number that rests on one seed may be a lucky draw, so the book reports the mean and the
range [min, max] over several seeds.  Training K copies of an MLP one after another costs K
loops; here they train together:

* every layer's weight is a stack of shape (K, n_out, n_in) (:class:`SeedLinear`), and the
  forward pass is one batched product per layer (``torch.baddbmm``);
* every network keeps its own initial weights, its own feedback matrices and its own
  shuffling (one ``torch.Generator`` each), so network k sees exactly the mini-batches it
  would see trained alone;
* the rules of :mod:`dfa_lib.rules` (BP, FA, DFA, shallow) and the update of
  :mod:`dfa_lib.update` run unchanged: their products broadcast over the leading network
  dimension (``delta @ W``, ``e @ B.mT``, ``delta.mT @ h``).  Any optimizer works, because
  every entry of a stacked weight belongs to exactly one network; frozen layers too.

:func:`dfa_lib.train` trains a :class:`SeedBatch` as it trains one network and returns one
:class:`~dfa_lib.history.History` per network; network k's weights are those it reaches when
trained alone by :func:`dfa_lib.train` from the same start with the same generator, up to float
rounding (``tests/test_seeds.py``).  Unlike chapter 2's block-diagonal :mod:`dfa_lib.stack`, whose dense
products cost K^2, the cost grows as K.  It pays where one network's step is too small to keep
the CPU busy (chapter 6's 784-50-50-50-10, whose six DFA continuations train as one batch);
for chapters 3, 4, 5 and 7's wider networks a batched step costs about as much as K separate ones
on two cores, so those chapters train their seeds one after another with :func:`dfa_lib.train`.
Any device: the models, rules and data may live on a GPU (or Apple's MPS, whose epoch sums are
float32, :func:`dfa_lib.step.accumulator_dtype`), and each generator draws its network's order where
it lives, as :func:`dfa_lib.train` does.  Introduced in chapter 6.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .models import MLP, caches_forward
from .rules import FeedbackRule


class SeedLinear(nn.Module):
    """K linear layers of one shape: ``weight`` (K, n_out, n_in), ``bias`` (K, n_out) or None.

    Maps (K, N, n_in) to (K, N, n_out); an input (N, n_in) is shared by all K networks.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)
        self.n_nets, self.out_features, self.in_features = weight.shape

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.dim() == 2:
            h = h.expand(self.n_nets, *h.shape)
        if self.bias is None:
            return torch.bmm(h, self.weight.mT)
        return torch.baddbmm(self.bias.unsqueeze(-2), h, self.weight.mT)

    def extra_repr(self) -> str:
        return f"{self.n_nets} x ({self.in_features} -> {self.out_features})"


class SeedBatch(MLP):
    """K MLPs of the same sizes, activation and biases, as one network (it returns logits, (K, N, n_out)).

    ``SeedBatch(models)`` copies the models' weights into stacked :class:`SeedLinear` layers;
    :meth:`unbatch` gives the K networks back as ordinary MLPs.  It is an :class:`MLP`, so the
    rules' fast path and :mod:`dfa_lib.update` take it as it is; inputs are (K, N, n_in), or
    (N, n_in) for the same rows through every network, and outputs (K, N, n_out).
    """

    def __init__(self, models: Sequence[MLP]):
        models = list(models)
        if not models or not all(_is_single_mlp(m) for m in models):
            raise ValueError("SeedBatch needs a non-empty list of dfa_lib.MLP networks")
        first = models[0]
        for m in models[1:]:
            if (m.sizes, m.activation.name) != (first.sizes, first.activation.name) \
                    or (m.layers[0].bias is None) != (first.layers[0].bias is None):
                raise ValueError("all networks of a SeedBatch must have the same sizes, activation and biases; "
                                 f"got sizes {first.sizes} and {m.sizes}")
        nn.Module.__init__(self)
        self.sizes, self.activation = list(first.sizes), first.activation
        self.n_nets = len(models)
        with torch.no_grad():
            self.layers = nn.ModuleList(
                SeedLinear(torch.stack([m.layers[l].weight for m in models]).clone(),
                           None if layer.bias is None else torch.stack([m.layers[l].bias for m in models]).clone())
                for l, layer in enumerate(first.layers))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shapes unless ``x`` is (batch, n_in) or (K, batch, n_in)."""
        if x.dim() not in (2, 3) or x.shape[-1] != self.sizes[0] or (x.dim() == 3 and len(x) != self.n_nets):
            raise ValueError(f"input must have shape (batch, {self.sizes[0]}) or ({self.n_nets}, batch, "
                             f"{self.sizes[0]}) for {self.n_nets} networks of sizes {self.sizes}; got {tuple(x.shape)}")

    def unbatch(self) -> list:
        """The K networks as separate :class:`MLP` copies, in order."""
        nets = []
        for k in range(self.n_nets):
            m = MLP(self.sizes, hidden=self.activation.name, bias=self.layers[0].bias is not None)
            m = m.to(dtype=self.layers[0].weight.dtype, device=self.layers[0].weight.device)
            with torch.no_grad():
                for small, big in zip(m.layers, self.layers):
                    small.weight.copy_(big.weight[k])
                    if small.bias is not None:
                        small.bias.copy_(big.bias[k])
            nets.append(m)
        return nets

    def extra_repr(self) -> str:
        return f"{self.n_nets} networks, " + super().extra_repr()


def _is_single_mlp(model) -> bool:
    """A network SeedBatch can stack: one cached-forward network (an MLP) whose layers are all ``nn.Linear``."""
    return (caches_forward(model) and not hasattr(model, "n_nets") and hasattr(model, "activation")
            and all(type(layer) is nn.Linear for layer in model.layers))


def batch_rules(rules: Sequence[FeedbackRule]) -> FeedbackRule:
    """One rule for a :class:`SeedBatch` from the K networks' own rules (same kind, same sizes):
    FA's and DFA's feedback matrices are stacked along a leading network dimension."""
    rules = list(rules)
    kind = type(rules[0])
    if not rules or any(type(r) is not kind for r in rules):
        raise ValueError("batch_rules needs one rule per network, all of the same kind")
    return kind.batched(rules)  # the rule class knows how its matrices batch (FeedbackRule.batched)
