"""Hebbian learning rules for batched networks (:mod:`dfa_lib.local.nets`).

Every rule is a step function with one signature, ``step(weights, x, t, lr, **options)``,
that returns *new* weight tensors (nothing is changed in place, so the same code also runs
inside autograd, as chapter 9 needs); the rules that use no target ignore ``t``.

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

from typing import Callable, Sequence

import torch

from ..data import logic_gate
from .nets import as_batch, check_nets, clip_weights, forward, init_nets, one_pattern_per_step, outer, sample_patterns, success

# The network each rule is used with in seed 004: (hidden activation, output activation).
# The supervised / unsupervised / semi-supervised rules live on ``ToyNetwork`` (ReLU hidden
# units, tanh output); the soft-bounded rule on ``FeedForwardNetwork`` (sigmoid everywhere).
STEP_ACTIVATIONS: dict[str, tuple[str, str]] = {
    "supervised": ("relu", "tanh"),
    "unsupervised": ("relu", "tanh"),
    "semisupervised": ("relu", "tanh"),
    "soft_bounded": ("sigmoid", "sigmoid"),
}


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
    n_nets = check_nets(weights)
    h = forward(weights, x, hidden=hidden, output="identity")
    t = as_batch(t, n_nets, weights[-1].shape[1], name="t")
    if t.shape[1] != h[0].shape[1]:
        raise ValueError(f"t holds {t.shape[1]} targets per network but x holds {h[0].shape[1]} inputs")
    new = list(weights)
    post = t
    for l in range(len(weights) - 1, 0, -1):
        new[l] = clip_weights(weights[l] + lr * outer(post, h[l]), clip)
        post = h[l]
    return new


def unsupervised_hebbian_step(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor | None = None,
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

    for :math:`l = 1, \\dots, L` (the input layer learns too).  No target is used (``t`` is ignored).

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    n_nets = check_nets(weights)
    x_l = as_batch(x, n_nets, weights[0].shape[2])
    new = []
    for w in weights:
        y = torch.einsum("nij,nbj->nbi", w, x_l)
        w_new = clip_weights(w + lr * outer(y, x_l), clip)
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
    n_nets = check_nets(weights)
    x_l = as_batch(x, n_nets, weights[0].shape[2])
    t = as_batch(t, n_nets, weights[-1].shape[1], name="t")
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
        new.append(clip_weights(w + lr * outer(g * y, x_l), clip))
        x_l = y
    return new


def soft_bounded_hebbian_step(
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor | None = None,
    lr: float = 0.01,
    w_max: float = 1.0,
) -> list[torch.Tensor]:
    """Seed 004's ``hebbian_forward``: Hebb with a soft bound, sigmoid activities, forward.

    .. math::

        y_l = \\sigma(W^{(l)} x_{l-1}), \\qquad
        W^{(l)} \\leftarrow W^{(l)} + \\eta\\, (y_l x_{l-1}^\\top) \\odot (w_{\\max} - |W^{(l)}|), \\qquad
        x_l = y_l,

    for every layer.  The factor :math:`w_{\\max} - |w|` slows a weight down as it nears
    :math:`\\pm w_{\\max}` instead of clipping it.  No target is used (``t`` is ignored); with the sigmoid's
    positive activities every hidden weight only grows.

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    n_nets = check_nets(weights)
    x_l = as_batch(x, n_nets, weights[0].shape[2])
    new = []
    for w in weights:
        y = torch.sigmoid(torch.einsum("nij,nbj->nbi", w, x_l))
        new.append(w + lr * outer(y, x_l) * (w_max - w.abs()))
        x_l = y
    return new


STEPS: dict[str, Callable] = {
    "supervised": supervised_hebbian_step,
    "unsupervised": unsupervised_hebbian_step,
    "semisupervised": semisupervised_hebbian_step,
    "soft_bounded": soft_bounded_hebbian_step,
}


def train_nets(
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
    """Train batched networks online with a Hebbian rule, one random pattern per network per step.

    At iteration :math:`k` network :math:`n` is shown pattern ``indices[k, n]`` (drawn with
    :func:`~dfa_lib.local.nets.sample_patterns` if not given) and updated with ``STEPS[rule]``.
    All networks are one batched tensor computation per iteration.

    Returns the new weights.  Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    if rule not in STEPS:
        raise ValueError(f"unknown rule {rule!r}; choose one of {sorted(STEPS)}")
    n_nets = check_nets(weights)
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must be (n_patterns, n_in) and (n_patterns, n_out); got {tuple(x.shape)}, {tuple(y.shape)}")
    if x.shape[1] != weights[0].shape[2] or y.shape[1] != weights[-1].shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} inputs and y {y.shape[1]} outputs; the networks take "
            f"{weights[0].shape[2]} inputs and give {weights[-1].shape[1]} outputs"
        )
    if indices is None:
        indices = sample_patterns(n_iters, n_nets, x.shape[0], generator, device=x.device)
    if indices.shape != (n_iters, n_nets):
        raise ValueError(f"indices has shape {tuple(indices.shape)}; expected ({n_iters}, {n_nets})")
    step = STEPS[rule]
    w = list(weights)
    for _, xb, tb in one_pattern_per_step(x, y, indices):
        w = step(w, xb.unsqueeze(1), tb.unsqueeze(1), lr=lr, **rule_kwargs)  # (n_nets, 1, n) batches
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
    device=None,
    **rule_kwargs,
):
    """One of seed 004's experiments: ``n_nets`` fresh networks, train, count the successes.

    ``task`` is ``"and"``, ``"xor"`` or ``"or"`` in the -1/+1 coding; the networks have 2
    inputs, the ``hidden`` layer sizes and one output.  Returns the number of networks with
    all four patterns right (and the trained weights if ``return_weights``).  The networks
    train on ``device``; their random draws are made on the CPU, so a seed gives the same
    networks everywhere.

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    x, y = logic_gate(task, coding="pm1", device=device)
    sizes = [x.shape[1], *hidden, y.shape[1]]
    w0 = init_nets(n_nets, sizes, generator=generator, device=device)
    w = train_nets(w0, x, y, rule=rule, n_iters=n_iters, lr=lr, generator=generator, **rule_kwargs)
    hid, out = STEP_ACTIVATIONS[rule]
    k = int(success(w, x, y, hid, out).sum())
    return (k, w) if return_weights else k
