"""Batched networks: many small bias-free networks as one tensor per layer.

Seed 004 trains one tiny network at a time (``nn.Linear`` layers without bias) and repeats
the run 100 times to estimate how often a rule solves AND or XOR.  Here the networks are
one batched computation: layer ``l`` of all ``n_nets`` networks is a single tensor of shape
``(n_nets, n_out, n_in)``, activities are ``(n_nets, batch, n_units)`` with ``h[0]`` the
input and ``h[-1]`` the output, and :func:`forward` is the ONE forward pass every local rule
(Hebbian, chapter 8; learned, chapter 9) uses.

Introduced in chapter 8 (``book/08_hebbian.ipynb``).
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from ..models import get_activation


def check_nets(weights: Sequence[torch.Tensor]) -> int:
    """Check a list of batched weight tensors (one per layer) and return ``n_nets``."""
    if len(weights) == 0:
        raise ValueError("weights is empty: expected one (n_nets, n_out, n_in) tensor per layer")
    for l, w in enumerate(weights):
        if w.dim() != 3:
            raise ValueError(f"weights[{l}] has shape {tuple(w.shape)}; expected (n_nets, n_out, n_in)")
        if w.shape[0] != weights[0].shape[0]:
            raise ValueError(f"weights[{l}] holds {w.shape[0]} networks but weights[0] holds {weights[0].shape[0]}")
        if l > 0 and w.shape[2] != weights[l - 1].shape[1]:
            raise ValueError(
                f"weights[{l}] expects {w.shape[2]} inputs but weights[{l - 1}] has {weights[l - 1].shape[1]} outputs"
            )
    return weights[0].shape[0]


def as_batch(x: torch.Tensor, n_nets: int, n_in: int, name: str = "x") -> torch.Tensor:
    """(batch, n_in) shared by all networks, or (n_nets, batch, n_in) -> (n_nets, batch, n_in)."""
    if x.dim() == 2:
        x = x.unsqueeze(0).expand(n_nets, *x.shape)
    if x.dim() != 3 or x.shape[0] != n_nets or x.shape[2] != n_in:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}; expected (batch, {n_in}) or ({n_nets}, batch, {n_in})"
        )
    return x


def outer(post: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of post ⊗ pre: (n, b, i), (n, b, j) -> (n, i, j)."""
    return torch.einsum("nbi,nbj->nij", post, pre)


def clip_weights(w: torch.Tensor, clip: float | None) -> torch.Tensor:
    """``w`` clamped to [-clip, clip], or unchanged when ``clip`` is None."""
    return w if clip is None else w.clamp(-clip, clip)


def init_nets(
    n_nets: int,
    sizes: Sequence[int],
    generator: torch.Generator | None = None,
    dtype=torch.float32,
    device=None,
) -> list[torch.Tensor]:
    """Weights of ``n_nets`` bias-free networks with layer sizes ``sizes = [n_in, *hidden, n_out]``.

    Each entry is drawn as ``nn.Linear``'s default initialisation draws it (the seed builds
    its networks from ``nn.Linear(..., bias=False)``):

    .. math:: W^{(l)}_{ij} \\sim U\\left[-1/\\sqrt{n_{l-1}},\\; 1/\\sqrt{n_{l-1}}\\right]

    Returns a list of tensors of shape ``(n_nets, sizes[l+1], sizes[l])``.

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    if n_nets < 1:
        raise ValueError(f"n_nets must be at least 1, got {n_nets}")
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"sizes must list at least two positive layer sizes [n_in, ..., n_out], got {list(sizes)}")
    weights = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(n_in)
        u = torch.rand(n_nets, n_out, n_in, generator=generator, dtype=dtype)
        weights.append(((2 * u - 1) * bound).to(device))
    return weights


def forward(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    hidden: str = "relu",
    output: str = "tanh",
) -> list[torch.Tensor]:
    """All activities of every network: ``[h0 = x, h1, ..., hL]``, each ``(n_nets, batch, n)``.

    .. math:: h_l = f_l(W^{(l)} h_{l-1}),\\quad f_l = \\text{hidden for } l < L,\\ \\text{output for } l = L

    ``x`` is ``(batch, n_in)`` (the same inputs for every network) or ``(n_nets, batch, n_in)``.

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    n_nets = check_nets(weights)
    f_hidden, f_out = get_activation(hidden).fn, get_activation(output).fn
    h = [as_batch(x, n_nets, weights[0].shape[2])]
    for l, w in enumerate(weights):
        a = torch.einsum("nij,nbj->nbi", w, h[-1])
        h.append(f_out(a) if l == len(weights) - 1 else f_hidden(a))
    return h


def predict(weights, x, hidden="relu", output="tanh") -> torch.Tensor:
    """Binary decision of every network on every input: output above 0 (0.5 for a sigmoid output).

    Returns a bool tensor ``(n_nets, batch, n_out)``.  Seed 004 reads its tanh networks as
    ``model.forward(input) > 0``.
    """
    threshold = 0.5 if output == "sigmoid" else 0.0
    return forward(weights, x, hidden, output)[-1] > threshold


def success(weights, x, y, hidden="relu", output="tanh") -> torch.Tensor:
    """Per network: True when *all* patterns are right, i.e. ``predict == (y > 0)`` everywhere.

    ``y`` holds the targets in the -1/+1 (or 0/1) coding; a pattern counts as positive when
    its target is above 0.

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    if y.dim() != 2 or y.shape[0] != x.shape[-2]:
        raise ValueError(f"y has shape {tuple(y.shape)}; expected ({x.shape[-2]}, n_out) to match x")
    target = y > 0
    pred = predict(weights, x, hidden, output)
    return (pred == target.unsqueeze(0)).flatten(1).all(dim=1)


def success_rate(weights, x, y, hidden="relu", output="tanh") -> float:
    """Fraction of the networks with all patterns right (seed 004's "success rate")."""
    return success(weights, x, y, hidden, output).float().mean().item()


def sample_patterns(n_steps: int, n_nets: int, n_patterns: int = 4, generator=None, device=None) -> torch.Tensor:
    """Which pattern each network sees at each step: ``(n_steps, n_nets)`` uniform integers.

    Seed 004 draws ``np.random.randint(0, 4)`` once per iteration for its single network; here
    every network gets its own independent draw.
    """
    return torch.randint(0, n_patterns, (n_steps, n_nets), generator=generator).to(device)


def one_pattern_per_step(x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor) -> Iterator[tuple]:
    """The online loop of every local rule: at step ``k`` network ``n`` sees pattern ``indices[k, n]``.

    Yields ``(k, x_k, t_k)`` with ``x_k`` (n_nets, n_in) and ``t_k`` (n_nets, n_out).  ``y`` is
    (n_patterns, n_out), the same task for every network, or (n_nets, n_patterns, n_out).
    """
    rows = torch.arange(indices.shape[1], device=indices.device)
    for k in range(indices.shape[0]):
        yield k, x[indices[k]], (y[rows, indices[k]] if y.dim() == 3 else y[indices[k]])
