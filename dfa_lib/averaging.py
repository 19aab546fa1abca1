"""Seed 001's averaged loops as one transform of a mini-batch: ``(cache, targets) -> (cache, targets)``.

The seed's "master error" loop (report sections 3.3.2 and 3.3.3) replaces every a, h and
y_hat of a mini-batch by its mean before the error is formed; its per-class loop by the
mean over the rows of each class present in the batch.  Either way the rule then sees one
row per group, with ``h != f(a)`` row by row, so the cache is marked inconsistent and the
rules take ``f'`` from ``a`` (:meth:`dfa_lib.models.MLP.hidden_derivative`).

Explained in chapter 4 (``book/04_averaged_loops.ipynb``).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F

from .models import ForwardCache
from .targets import Targets

AVERAGING = ("none", "batch", "class")


def group_mean_fn(groups: torch.Tensor, n_groups: int | None = None) -> Callable:
    """A function that maps an (N, d) tensor to the (G, d) means of its non-empty row groups."""
    n_groups = int(groups.max()) + 1 if n_groups is None else n_groups
    one_hot = F.one_hot(groups, n_groups).to(torch.get_default_dtype())
    counts = one_hot.sum(0)
    present = counts > 0
    weights = (one_hot / counts.clamp(min=1))[:, present]  # (N, G): column g averages group g

    def mean(t: torch.Tensor) -> torch.Tensor:
        return weights.to(t.dtype).T @ t

    return mean


def batch_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean row of an (N, d) tensor, kept as a (1, d) tensor; of each network's rows for the
    (K, N, d) tensors of a :class:`~dfa_lib.seeds.SeedBatch`."""
    return t.mean(-2, keepdim=True)


def average_cache(cache: ForwardCache, mean: Callable) -> ForwardCache:
    """The cache with every tensor (inputs, pre-activations, predictions ``y_hat``) replaced by ``mean`` of its
    rows: the error is then ``mean(y_hat) - mean(y)``, seed 001's, not the output function of ``mean(a_L)``."""
    return replace(cache, inputs=[mean(t) for t in cache.inputs], pre=[mean(t) for t in cache.pre],
                   out=None if cache.out is None else mean(cache.out), consistent=False)


def class_groups(targets: Targets) -> torch.Tensor:
    """The group of every row: its class label, or for binary targets which side of the threshold it is on."""
    if targets.kind == "classification":
        return targets.labels
    if targets.kind == "binary":
        return (targets.values[:, 0] > targets.threshold).long()
    raise ValueError("averaging='class' needs class labels, but the targets are real-valued (regression)")


def make_averaging(kind: str, train_targets: Targets) -> Callable | None:
    """The averaging transform ``(cache, values) -> (cache, values)`` of a batch, or None for ``"none"``.

    ``kind="batch"`` averages all rows; ``kind="class"`` averages the rows of each class (the
    number of classes comes from the whole training set, once).
    """
    if kind not in AVERAGING:
        raise ValueError(f"averaging must be one of {AVERAGING}, got {kind!r}")
    if kind == "none":
        return None
    if kind == "batch":
        return lambda cache, batch: (average_cache(cache, batch_mean), batch_mean(batch.values))
    n_groups = int(class_groups(train_targets).max()) + 1  # once, not per step

    def per_class(cache: ForwardCache, batch: Targets):
        mean = group_mean_fn(class_groups(batch), n_groups)
        return average_cache(cache, mean), mean(batch.values)

    return per_class
