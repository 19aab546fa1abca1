"""Local (Hebbian) learning rules for small feed-forward networks, trained as a population.

Seed 004 trains one tiny network at a time, with ``nn.Linear`` layers without bias, and
repeats the run 100 times to estimate how often a rule solves AND or XOR.  Here the 100
networks are one batched computation: layer ``l`` of the whole population is a single
tensor of shape ``(n_nets, n_out, n_in)`` and every update is an ``einsum`` over it.

Conventions (all functions):

- ``weights`` is a list with one tensor per layer, shape ``(n_nets, n_out, n_in)``;
- activities are ``(n_nets, batch, n_units)``; ``h[0]`` is the input, ``h[-1]`` the output;
- a rule step takes the weights and returns *new* tensors (nothing is changed in place), so
  the same code also runs inside autograd (chapter 9 backpropagates through it).

Rules (written out in each docstring):

- :func:`supervised_hebbian_step`      target clamped at the output, applied layer by layer
  backwards, weights clipped to [-1, 1], input layer left as initialised (the seed's rule);
- :func:`unsupervised_hebbian_step`    plain forward Hebb on linear activities (seed, commented out);
- :func:`semisupervised_hebbian_step`  forward Hebb gated by a global correct/incorrect signal
  (seed, commented out);
- :func:`soft_bounded_hebbian_step`    forward Hebb with the soft bound ``(w_max - |w|)`` on
  sigmoid activities (the seed's ``hebbian_forward``).

Introduced in chapter 8 (``book/08_hebbian.ipynb``).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

__all__ = [
    "ACTIVATIONS",
    "RULES",
    "init_population",
    "forward",
    "predict",
    "success",
    "success_rate",
    "supervised_hebbian_step",
    "unsupervised_hebbian_step",
    "semisupervised_hebbian_step",
    "soft_bounded_hebbian_step",
    "sample_indices",
    "train_population",
    "run_setting",
    "wilson_interval",
    "intervals_overlap",
]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "linear": lambda a: a,
}

# The network each rule is used with in seed 004: (hidden activation, output activation).
# The supervised / unsupervised / semi-supervised rules live on ``ToyNetwork`` (ReLU hidden
# units, tanh output); the soft-bounded rule on ``FeedForwardNetwork`` (sigmoid everywhere).
RULE_ACTIVATIONS: dict[str, tuple[str, str]] = {
    "supervised": ("relu", "tanh"),
    "unsupervised": ("relu", "tanh"),
    "semisupervised": ("relu", "tanh"),
    "soft_bounded": ("sigmoid", "sigmoid"),
}


# --------------------------------------------------------------------------- checks
def _act(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _check_weights(weights: Sequence[torch.Tensor]) -> int:
    """Check a population's weight list and return ``n_nets``."""
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


def _as_batch(x: torch.Tensor, n_nets: int, n_in: int, name: str = "x") -> torch.Tensor:
    """(batch, n_in) shared by all networks, or (n_nets, batch, n_in) -> (n_nets, batch, n_in)."""
    if x.dim() == 2:
        x = x.unsqueeze(0).expand(n_nets, *x.shape)
    if x.dim() != 3 or x.shape[0] != n_nets or x.shape[2] != n_in:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}; expected (batch, {n_in}) or ({n_nets}, batch, {n_in})"
        )
    return x


def _outer(post: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of post ⊗ pre: (n, b, i), (n, b, j) -> (n, i, j)."""
    return torch.einsum("nbi,nbj->nij", post, pre)


def _clip(w: torch.Tensor, clip: float | None) -> torch.Tensor:
    return w if clip is None else w.clamp(-clip, clip)


# --------------------------------------------------------------------------- networks
def init_population(
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
    n_nets = _check_weights(weights)
    f_hidden, f_out = _act(hidden), _act(output)
    h = [_as_batch(x, n_nets, weights[0].shape[2])]
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
    """Fraction of the population with all patterns right (seed 004's "success rate")."""
    return success(weights, x, y, hidden, output).float().mean().item()


# --------------------------------------------------------------------------- rules
def supervised_hebbian_step(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    lr: float = 0.01,
    clip: float | None = 1.0,
    hidden: str = "relu",
) -> list[torch.Tensor]:
    """Seed 004's supervised Hebbian rule: target clamped at the output, applied backwards.

    With ReLU activities from one forward pass, :math:`h_0 = x`,
    :math:`h_l = \\mathrm{relu}(W^{(l)} h_{l-1})`, and the target :math:`t` *clamped* in
    place of the output activity, the layers are updated from the top down:

    .. math::

        \\Delta W^{(L)} = \\eta\\, t\\, h_{L-1}^\\top, \\qquad
        \\Delta W^{(l)} = \\eta\\, h_l\\, h_{l-1}^\\top \\quad (l = L-1, \\dots, 2),

        W^{(l)} \\leftarrow \\mathrm{clip}\\big(W^{(l)} + \\Delta W^{(l)}, -1, 1\\big).

    The first layer :math:`W^{(1)}` (input to first hidden layer) is never changed: the seed's
    loop ``for layer_no in range(len(layers) - 1, 0, -1)`` stops before layer 0.  All
    activities are those *before* this step's updates: going down, the seed recomputes
    :math:`h_{l-1}` only through layers it has not touched yet, so one forward pass gives the
    same numbers.  Over a batch the outer products are summed.  The output is not used: the
    rule never sees the network's own answer, only the target.

    Args:
        x: ``(batch, n_in)`` or ``(n_nets, batch, n_in)``; t: matching ``(..., batch, n_out)``.
        clip: bound of the weights after each step (None: no clipping).

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    n_nets = _check_weights(weights)
    h = forward(weights, x, hidden=hidden, output="linear")
    t = _as_batch(t, n_nets, weights[-1].shape[1], name="t")
    if t.shape[1] != h[0].shape[1]:
        raise ValueError(f"t holds {t.shape[1]} targets per network but x holds {h[0].shape[1]} inputs")
    new = list(weights)
    post = t
    for l in range(len(weights) - 1, 0, -1):
        new[l] = _clip(weights[l] + lr * _outer(post, h[l]), clip)
        post = h[l]
    return new


def unsupervised_hebbian_step(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    lr: float = 0.01,
    clip: float | None = 1.0,
) -> list[torch.Tensor]:
    """Seed 004's (commented-out) unsupervised Hebbian rule, forward through every layer.

    Activities are *linear* (the seed writes ``y = layer(x)``, no ReLU), and each layer's
    output is recomputed with its freshly updated weights before it feeds the next layer:

    .. math::

        y_l = W^{(l)} x_{l-1}, \\qquad
        W^{(l)} \\leftarrow \\mathrm{clip}\\big(W^{(l)} + \\eta\\, y_l\\, x_{l-1}^\\top, -1, 1\\big), \\qquad
        x_l = W^{(l)}_{\\text{new}}\\, x_{l-1},

    for :math:`l = 1, \\dots, L` (the input layer learns too).  No target is used.

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    n_nets = _check_weights(weights)
    x_l = _as_batch(x, n_nets, weights[0].shape[2])
    new = []
    for w in weights:
        y = torch.einsum("nij,nbj->nbi", w, x_l)
        w_new = _clip(w + lr * _outer(y, x_l), clip)
        new.append(w_new)
        x_l = torch.einsum("nij,nbj->nbi", w_new, x_l)
    return new


def semisupervised_hebbian_step(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    lr: float = 0.01,
    clip: float | None = 1.0,
    modulation: str = "reward",
) -> list[torch.Tensor]:
    """Seed 004's (commented-out) semi-supervised rule: forward Hebb times a global signal.

    The network's answer :math:`p = [\\tanh(\\dots) > 0]` (ReLU/tanh forward pass) is compared
    with the target; the reward is :math:`r = +1` if it is right and :math:`-1` if wrong.
    Then, forward through every layer with *linear* activities as in the unsupervised rule,

    .. math::

        y_l = W^{(l)} x_{l-1}, \\qquad
        W^{(l)} \\leftarrow \\mathrm{clip}\\big(W^{(l)} + \\eta\\, g\\, y_l\\, x_{l-1}^\\top, -1, 1\\big), \\qquad
        x_l = y_l .

    ``modulation="reward"``: :math:`g = r` (reinforce the current answer when right, push
    it the other way when wrong).  ``modulation="seed"``: the seed's extra factor,
    :math:`g = -(2p - 1)\\, r`, which flips the sign whenever the network answers "positive":
    a right positive answer is then weakened and a wrong one strengthened (the seed's comment
    describes the intended signs, the code does not produce them).  Per example of a batch
    the signal is computed separately (the seed only ever used a batch of one).

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    if modulation not in ("reward", "seed"):
        raise ValueError(f"modulation must be 'reward' or 'seed', got {modulation!r}")
    n_nets = _check_weights(weights)
    x_l = _as_batch(x, n_nets, weights[0].shape[2])
    t = _as_batch(t, n_nets, weights[-1].shape[1], name="t")
    pred = (forward(weights, x_l, "relu", "tanh")[-1] > 0).to(x_l.dtype)  # (n, b, n_out)
    wrong = ((pred - (t > 0).to(x_l.dtype)) ** 2).mean(dim=2, keepdim=True)  # (n, b, 1): 0 right, 1 wrong
    g = 1 - 2 * wrong
    if modulation == "seed":
        if pred.shape[2] != 1:
            raise ValueError("modulation='seed' is defined for one output unit only")
        g = -(2 * pred - 1) * g
    new = []
    for w in weights:
        y = torch.einsum("nij,nbj->nbi", w, x_l)
        new.append(_clip(w + lr * _outer(g * y, x_l), clip))
        x_l = y
    return new


def soft_bounded_hebbian_step(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    lr: float = 0.01,
    w_max: float = 1.0,
) -> list[torch.Tensor]:
    """Seed 004's ``hebbian_forward``: Hebb with a soft bound, sigmoid activities, forward.

    .. math::

        y_l = \\sigma(W^{(l)} x_{l-1}), \\qquad
        W^{(l)} \\leftarrow W^{(l)} + \\eta\\, (y_l x_{l-1}^\\top) \\odot (w_{\\max} - |W^{(l)}|), \\qquad
        x_l = y_l,

    for every layer.  The factor :math:`w_{\\max} - |w|` slows a weight down as it nears
    :math:`\\pm w_{\\max}` instead of clipping it.  No target is used; with the sigmoid's
    positive activities every hidden weight only grows.

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    n_nets = _check_weights(weights)
    x_l = _as_batch(x, n_nets, weights[0].shape[2])
    new = []
    for w in weights:
        y = torch.sigmoid(torch.einsum("nij,nbj->nbi", w, x_l))
        new.append(w + lr * _outer(y, x_l) * (w_max - w.abs()))
        x_l = y
    return new


RULES: dict[str, Callable] = {
    "supervised": supervised_hebbian_step,
    "unsupervised": unsupervised_hebbian_step,
    "semisupervised": semisupervised_hebbian_step,
    "soft_bounded": soft_bounded_hebbian_step,
}
_NEEDS_TARGET = {"supervised", "semisupervised"}


# --------------------------------------------------------------------------- training
def sample_indices(n_iters: int, n_nets: int, n_patterns: int = 4, generator=None, device=None) -> torch.Tensor:
    """Which pattern each network sees at each iteration: ``(n_iters, n_nets)`` uniform integers.

    Seed 004 draws ``np.random.randint(0, 4)`` once per iteration for its single network; here
    every network of the population gets its own independent draw.
    """
    return torch.randint(0, n_patterns, (n_iters, n_nets), generator=generator).to(device)


def train_population(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    rule: str = "supervised",
    n_iters: int = 400,
    lr: float = 0.01,
    generator: torch.Generator | None = None,
    indices: torch.Tensor | None = None,
    **rule_kwargs,
) -> list[torch.Tensor]:
    """Train every network of a population online, one random pattern per network per step.

    At iteration :math:`k` network :math:`n` is shown pattern ``indices[k, n]`` (drawn with
    :func:`sample_indices` if not given) and updated with ``RULES[rule]``.  The whole
    population is one batched tensor computation per iteration.

    Returns the new weights.  Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {sorted(RULES)}")
    n_nets = _check_weights(weights)
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must be (n_patterns, n_in) and (n_patterns, n_out); got {tuple(x.shape)}, {tuple(y.shape)}")
    if x.shape[1] != weights[0].shape[2] or y.shape[1] != weights[-1].shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} inputs and y {y.shape[1]} outputs; the networks take "
            f"{weights[0].shape[2]} inputs and give {weights[-1].shape[1]} outputs"
        )
    if indices is None:
        indices = sample_indices(n_iters, n_nets, x.shape[0], generator, device=x.device)
    if indices.shape != (n_iters, n_nets):
        raise ValueError(f"indices has shape {tuple(indices.shape)}; expected ({n_iters}, {n_nets})")
    step = RULES[rule]
    w = list(weights)
    for k in range(n_iters):
        xb = x[indices[k]].unsqueeze(1)  # (n_nets, 1, n_in)
        if rule in _NEEDS_TARGET:
            w = step(w, xb, y[indices[k]].unsqueeze(1), lr=lr, **rule_kwargs)
        else:
            w = step(w, xb, lr=lr, **rule_kwargs)
    return w


def run_setting(
    task: str,
    hidden: Sequence[int],
    n_iters: int,
    rule: str = "supervised",
    n_nets: int = 100,
    lr: float = 0.01,
    generator: torch.Generator | None = None,
    return_weights: bool = False,
    **rule_kwargs,
):
    """One of seed 004's experiments: ``n_nets`` fresh networks, train, count the successes.

    ``task`` is ``"and"``, ``"xor"`` or ``"or"`` in the -1/+1 coding; the networks have 2
    inputs, the ``hidden`` layer sizes and one output.  Returns the number of networks with
    all four patterns right (and the trained weights if ``return_weights``).

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    from .data import logic_gate

    x, y = logic_gate(task, coding="pm1")
    sizes = [x.shape[1], *hidden, y.shape[1]]
    w0 = init_population(n_nets, sizes, generator=generator)
    w = train_population(w0, x, y, rule=rule, n_iters=n_iters, lr=lr, generator=generator, **rule_kwargs)
    hid, out = RULE_ACTIVATIONS[rule]
    k = int(success(w, x, y, hid, out).sum())
    return (k, w) if return_weights else k


# --------------------------------------------------------------------------- statistics
def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (95 % for the default ``z``).

    .. math::

        \\frac{\\hat p + \\frac{z^2}{2n} \\pm z\\sqrt{\\frac{\\hat p(1-\\hat p)}{n} + \\frac{z^2}{4n^2}}}{1 + \\frac{z^2}{n}}

    Unlike the normal approximation it stays inside [0, 1] and is not empty at ``k = 0``.

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n] = [0, {n}], got {k}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lower = 0.0 if k == 0 else max(0.0, centre - half)
    upper = 1.0 if k == n else min(1.0, centre + half)
    return lower, upper


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when the closed intervals ``a`` and ``b`` share at least one point."""
    return a[0] <= b[1] and b[0] <= a[1]
