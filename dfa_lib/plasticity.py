"""Learned plasticity rules: a small network, shared by every synapse, that *is* the learning rule.

Seed 004 sketches this idea with a per-synapse Python double loop (``arbitrary_forward``)
and an LSTM it never connects to a network.  Here a rule maps the local quantities of every
synapse of a whole population at once,

.. math:: \\Delta w_{ij} = f_\\theta\\big(\\text{pre}_j,\\ \\text{post}_i,\\ w_{ij},\\ m_i\\big),

where ``m_i`` is the one modulatory signal neuron ``i`` can see:

- ``"error"``:    the output error :math:`e = t - \\hat y`, one scalar broadcast to every neuron;
- ``"reward"``:   a scalar reward :math:`r = -e^2` (how wrong, but not in which direction);
- ``"feedback"``: a per-neuron signal, :math:`m = e` at the output and :math:`m = B_l e` in
  hidden layer ``l``, through a fixed random matrix :math:`B_l` (as in direct feedback
  alignment, chapter 2).

Two rule families: :class:`MLPRule` (memoryless) and :class:`LSTMRule` (one LSTM state per
synapse, so the rule can remember).  The rule parameters :math:`\\theta` are meta-trained by
backpropagating through whole unrolled learning episodes of many random networks
(:func:`meta_train`), or with evolution strategies (:func:`es_meta_train`).

The networks are those of chapter 8 (``dfa_lib.local``): bias-free, ReLU hidden units, tanh
output, a population stored as ``(n_nets, n_out, n_in)`` tensors.

Introduced in chapter 9 (``book/09_learned_rules.ipynb``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from . import local, rules

__all__ = [
    "SIGNALS",
    "FEATURES",
    "local_features",
    "init_feedback",
    "modulatory_signals",
    "MLPRule",
    "LSTMRule",
    "DeltaRule",
    "run_episode",
    "episode_loss",
    "meta_train",
    "es_meta_train",
    "evaluate",
    "rule_response",
    "reference_rules",
]

SIGNALS = ("error", "reward", "feedback")
FEATURES = {"raw": 4, "products": 8}


# --------------------------------------------------------------------------- local quantities
def local_features(pre: torch.Tensor, post: torch.Tensor, w: torch.Tensor, m: torch.Tensor, kind: str = "products") -> torch.Tensor:
    """Stack the local quantities of every synapse into a feature vector.

    ``pre`` (n, 1, in), ``post`` (n, out, 1), ``w`` (n, out, in), ``m`` (n, out, 1) are
    broadcast to (n, out, in).  ``kind="raw"`` gives ``[pre, post, w, m]``;
    ``kind="products"`` adds ``[pre*post, pre*m, post*m, pre*post*m]``, so that Hebb
    (pre·post), the delta rule (pre·m) and three-factor rules (pre·post·m) are each one
    linear layer away.  Returns (n, out, in, F).

    Introduced in chapter 9 (``book/09_learned_rules.ipynb``).
    """
    if kind not in FEATURES:
        raise ValueError(f"unknown feature set {kind!r}; choose one of {sorted(FEATURES)}")
    shape = torch.broadcast_shapes(pre.shape, post.shape, w.shape, m.shape)
    pre, post, w, m = (t.expand(shape) for t in (pre, post, w, m))
    feats = [pre, post, w, m]
    if kind == "products":
        feats += [pre * post, pre * m, post * m, pre * post * m]
    return torch.stack(feats, dim=-1)


def init_feedback(n_nets: int, sizes: Sequence[int], generator=None, dtype=torch.float32) -> list[torch.Tensor]:
    """Fixed random feedback matrices ``B_l`` of shape (n_nets, sizes[l], n_out), l = hidden layers.

    Entries are U[-1, 1], one independent draw per network (the rule has to work for any).
    """
    n_out = sizes[-1]
    return [rules.init_feedback((n_nets, s, n_out), "uniform", 1.0, generator, dtype) for s in sizes[1:-1]]


def modulatory_signals(signal: str, e: torch.Tensor, sizes: Sequence[int], feedback=None) -> list[torch.Tensor]:
    """The signal ``m`` each layer's post-synaptic neurons see, one (n, out_l, 1) tensor per layer.

    ``e`` is the output error (n, n_out).  ``"error"``: :math:`m = \\bar e` (mean over outputs)
    for every neuron; ``"reward"``: :math:`m = -\\overline{e^2}` for every neuron;
    ``"feedback"``: :math:`m = e` at the output, :math:`m = B_l e` in hidden layer ``l``.
    """
    n = e.shape[0]
    if signal == "error":
        g = e.mean(dim=1)
    elif signal == "reward":
        g = -(e**2).mean(dim=1)
    elif signal == "feedback":
        if feedback is None or len(feedback) != len(sizes) - 2:
            raise ValueError(f"signal 'feedback' needs one feedback matrix per hidden layer ({len(sizes) - 2})")
        hidden = [torch.einsum("nio,no->ni", B, e).unsqueeze(2) for B in feedback]
        return hidden + [e.unsqueeze(2)]
    else:
        raise ValueError(f"unknown modulatory signal {signal!r}; choose one of {SIGNALS}")
    return [g.view(n, 1, 1).expand(n, s, 1) for s in sizes[1:]]


def _flat_features(hs, weights, ms, kind):
    """Features of all synapses of all layers, flattened to one (n_synapses, F) batch."""
    phis = [local_features(a.unsqueeze(1), b.unsqueeze(2), w, m, kind)
            for a, b, w, m in zip(hs[:-1], hs[1:], weights, ms)]
    return torch.cat([p.reshape(-1, p.shape[-1]) for p in phis]), [p.shape[:-1] for p in phis]


def _unflatten(dw_flat, shapes):
    dws, start = [], 0
    for shape in shapes:
        k = math.prod(shape)
        dws.append(dw_flat[start:start + k].reshape(shape))
        start += k
    return dws


# --------------------------------------------------------------------------- rules
class MLPRule(nn.Module):
    """A memoryless learned rule: :math:`\\Delta w = \\eta_{\\max} \\tanh(\\mathrm{MLP}_\\theta(\\phi))`.

    :math:`\\phi` are the synapse's local features (:func:`local_features`); one small MLP
    (``n_features -> hidden -> 1``, tanh) is shared by every synapse of every layer and
    every network and is applied to whole weight matrices at once.  ``max_step`` bounds a
    single change.  The last layer starts at zero, so the untrained rule changes nothing.

    Introduced in chapter 9 (``book/09_learned_rules.ipynb``).
    """

    def __init__(self, hidden: int = 16, features: str = "products", max_step: float = 0.2):
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"unknown feature set {features!r}; choose one of {sorted(FEATURES)}")
        self.features, self.max_step = features, max_step
        self.net = nn.Sequential(nn.Linear(FEATURES[features], hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def init_state(self, weights):
        return None

    def forward(self, pre, post, w, m, state=None):
        """``dw`` (n, out, in) for one layer, and the (unchanged, ``None``) state."""
        phi = local_features(pre, post, w, m, self.features)
        return self.max_step * torch.tanh(self.net(phi).squeeze(-1)), state

    def step_all(self, hs, weights, ms, state):
        """Weight changes of every layer at once (one MLP call on all synapses)."""
        flat, shapes = _flat_features(hs, weights, ms, self.features)
        return _unflatten(self.max_step * torch.tanh(self.net(flat).squeeze(-1)), shapes), state


class LSTMRule(nn.Module):
    """A learned rule with memory: one LSTM state :math:`(s_{ij}, c_{ij})` per synapse.

    .. math::

        (s_{ij}, c_{ij}) \\leftarrow \\mathrm{LSTMCell}_\\theta\\big(\\phi_{ij}, (s_{ij}, c_{ij})\\big),
        \\qquad \\Delta w_{ij} = \\eta_{\\max} \\tanh(u_\\theta^\\top s_{ij}),

    with the same LSTM weights for every synapse (seed 004's ``weightUpdater`` idea).  All
    synapses of all layers of all networks go through one ``LSTMCell`` call per step.

    Introduced in chapter 9 (``book/09_learned_rules.ipynb``).
    """

    def __init__(self, hidden: int = 8, features: str = "products", max_step: float = 0.2):
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"unknown feature set {features!r}; choose one of {sorted(FEATURES)}")
        self.features, self.max_step, self.hidden = features, max_step, hidden
        self.cell = nn.LSTMCell(FEATURES[features], hidden)
        self.readout = nn.Linear(hidden, 1)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)

    def init_state(self, weights):
        n_syn = sum(w.numel() for w in weights)
        z = weights[0].new_zeros(n_syn, self.hidden)
        return (z, z.clone())

    def forward(self, pre, post, w, m, state=None):
        """``dw`` for one layer (state over its synapses, zero if ``None``), and the new state."""
        phi = local_features(pre, post, w, m, self.features)
        flat = phi.reshape(-1, phi.shape[-1])
        if state is None:
            z = flat.new_zeros(flat.shape[0], self.hidden)
            state = (z, z.clone())
        s, c = self.cell(flat, state)
        dw = self.max_step * torch.tanh(self.readout(s)).reshape(phi.shape[:-1])
        return dw, (s, c)

    def step_all(self, hs, weights, ms, state):
        flat, shapes = _flat_features(hs, weights, ms, self.features)
        s, c = self.cell(flat, state)
        return _unflatten(self.max_step * torch.tanh(self.readout(s)).squeeze(-1), shapes), (s, c)


class DeltaRule(nn.Module):
    r"""A hand-written rule in the same interface, for comparison: :math:`\Delta w_{ij} = \eta\, m_i\, \text{pre}_j`.

    With ``signal="feedback"`` this is the delta rule at the output and, in the hidden layers,
    direct feedback alignment's update :math:`\eta\, (B e)_i\, f'(a_i)\, \text{pre}_j` with the
    ReLU derivative :math:`f'(a_i) = [\text{post}_i > 0]` (``gate=True``, the default;
    ``gate=False`` drops it).  With ``signal="error"`` every neuron gets the same :math:`e`.

    Introduced in chapter 9 (``book/09_learned_rules.ipynb``).
    """

    def __init__(self, lr: float = 0.1, gate: bool = True):
        super().__init__()
        self.lr, self.gate = lr, gate

    def init_state(self, weights):
        return None

    def step_all(self, hs, weights, ms, state):
        dws = []
        for l, (pre, post, m) in enumerate(zip(hs[:-1], hs[1:], ms)):
            if self.gate and l < len(ms) - 1:
                m = m * (post > 0).unsqueeze(2).to(m.dtype)
            dws.append(self.lr * m * pre.unsqueeze(1))
        return dws, state


# --------------------------------------------------------------------------- episodes
def run_episode(
    rule: nn.Module,
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    n_steps: int,
    signal: str = "feedback",
    feedback=None,
    indices: torch.Tensor | None = None,
    generator=None,
    return_trace: bool = False,
):
    """Let ``rule`` train every network of a population for ``n_steps`` online steps.

    At step :math:`k` network :math:`n` sees pattern ``indices[k, n]``; with the activities
    :math:`h_0 = x, h_1, \\dots, \\hat y` of that pattern, the error :math:`e = t - \\hat y` and
    the layers' modulatory signals :math:`m_l`, every weight of every layer changes by

    .. math:: W^{(l)}_{ij} \\leftarrow W^{(l)}_{ij} + f_\\theta\\big(h_{l-1,j},\\ h_{l,i},\\ W^{(l)}_{ij},\\ m_{l,i}\\big).

    Differentiable in the rule's parameters (meta-training backpropagates through it).
    Returns the final weights (and, with ``return_trace``, the loss on all patterns after
    every step).
    """
    if signal not in SIGNALS:
        raise ValueError(f"unknown modulatory signal {signal!r}; choose one of {SIGNALS}")
    n_nets = local._check_weights(weights)
    sizes = [weights[0].shape[2]] + [w.shape[1] for w in weights]
    if indices is None:
        indices = local.sample_indices(n_steps, n_nets, x.shape[0], generator)
    if indices.shape != (n_steps, n_nets):
        raise ValueError(f"indices has shape {tuple(indices.shape)}; expected ({n_steps}, {n_nets})")
    if y.dim() == 3 and y.shape[0] != n_nets:
        raise ValueError(f"per-network targets y have shape {tuple(y.shape)}; expected ({n_nets}, {x.shape[0]}, n_out)")
    rows = torch.arange(n_nets)
    w = list(weights)
    state = rule.init_state(w)
    trace = []
    for k in range(n_steps):
        xb = x[indices[k]].unsqueeze(1)
        tb = y[rows, indices[k]] if y.dim() == 3 else y[indices[k]]
        hs = _forward_one(w, xb[:, 0, :])  # each (n, units)
        e = tb - hs[-1]
        ms = modulatory_signals(signal, e, sizes, feedback)
        dws, state = rule.step_all(hs, w, ms, state)
        w = [wl + dw for wl, dw in zip(w, dws)]
        if return_trace:
            trace.append(episode_loss(w, x, y).detach())
    return (w, torch.stack(trace)) if return_trace else w


def _forward_one(weights, x):
    """Activities for one input per network, x (n, n_in): ReLU hidden units, tanh output."""
    hs = [x]
    for l, w in enumerate(weights):
        a = torch.bmm(w, hs[-1].unsqueeze(2)).squeeze(2)
        hs.append(torch.tanh(a) if l == len(weights) - 1 else torch.relu(a))
    return hs


def episode_loss(weights, x, y) -> torch.Tensor:
    """Meta-loss: mean squared error of every network on all patterns, :math:`\\langle (t - \\hat y)^2 \\rangle`.

    ``y`` is (n_patterns, n_out), or (n_nets, n_patterns, n_out) for one task per network.
    """
    out = local.forward(weights, x)[-1]
    return ((out - (y if y.dim() == 3 else y.unsqueeze(0))) ** 2).mean()


def _sample_task(task, sizes, n_nets, generator, n_steps):
    from .data import logic_gate

    tasks = [task] if isinstance(task, str) else list(task)
    x, _ = logic_gate(tasks[0], coding="pm1")  # the four input patterns are the same for every gate
    if len(tasks) == 1:
        y = logic_gate(tasks[0], coding="pm1")[1]
    else:  # each network gets its own task: (n_nets, 4, 1) targets
        table = torch.stack([logic_gate(t, coding="pm1")[1] for t in tasks])
        y = table[torch.randint(len(tasks), (n_nets,), generator=generator)]
    w0 = local.init_population(n_nets, sizes, generator=generator)
    fb = init_feedback(n_nets, sizes, generator=generator)
    idx = local.sample_indices(n_steps, n_nets, x.shape[0], generator)
    return x, y, w0, fb, idx


def meta_train(
    rule: nn.Module,
    task="xor",
    hidden: Sequence[int] = (10,),
    n_meta_steps: int = 200,
    n_nets: int = 64,
    n_steps: int = 50,
    signal: str = "feedback",
    lr: float = 1e-2,
    generator=None,
    clip_grad: float = 1.0,
    cosine_decay: bool = True,
) -> list[float]:
    """Meta-train ``rule`` by backpropagation through unrolled learning episodes.

    Each meta-step draws ``n_nets`` fresh random networks (and feedback matrices and pattern
    orders), runs :func:`run_episode` for ``n_steps``, and takes one Adam step on
    :math:`\\nabla_\\theta\\, \\langle (t - \\hat y_{\\text{final}})^2 \\rangle`, the loss of the
    trained networks on all patterns.  ``task`` is a gate name or a list of names (then each
    network of a meta-step gets one of them at random, so every step sees every task).  With ``cosine_decay`` the meta learning rate falls from ``lr`` to
    0 along a cosine, which makes the final rule less dependent on the last few noisy
    batches.  Returns the meta-loss history.

    Introduced in chapter 9 (``book/09_learned_rules.ipynb``).
    """
    sizes = [2, *hidden, 1]
    opt = torch.optim.Adam(rule.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_meta_steps) if cosine_decay else None
    history = []
    for _ in range(n_meta_steps):
        x, y, w0, fb, idx = _sample_task(task, sizes, n_nets, generator, n_steps)
        w = run_episode(rule, w0, x, y, n_steps, signal, fb, idx)
        loss = episode_loss(w, x, y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(rule.parameters(), clip_grad)
        opt.step()
        if sched is not None:
            sched.step()
        history.append(loss.item())
    return history


def es_meta_train(
    rule: nn.Module,
    task="xor",
    hidden: Sequence[int] = (10,),
    n_meta_steps: int = 100,
    n_nets: int = 64,
    n_steps: int = 50,
    signal: str = "feedback",
    population: int = 16,
    sigma: float = 0.05,
    lr: float = 0.03,
    generator=None,
) -> list[float]:
    """Meta-train ``rule`` with antithetic evolution strategies (no backpropagation).

    Per meta-step, for ``population/2`` random directions :math:`\\epsilon_k \\sim N(0, I)` of
    the flattened rule parameters, the episode loss is measured at
    :math:`\\theta \\pm \\sigma\\epsilon_k` on the same networks, and

    .. math:: \\theta \\leftarrow \\theta - \\alpha\\, \\frac{1}{2\\sigma K}\\sum_k \\big(L(\\theta + \\sigma\\epsilon_k) - L(\\theta - \\sigma\\epsilon_k)\\big)\\,\\epsilon_k

    (through Adam with step size ``lr``).  Returns the loss history at :math:`\\theta`.
    """
    if population < 2 or population % 2:
        raise ValueError(f"population must be a positive even number, got {population}")
    sizes = [2, *hidden, 1]
    params = [p for p in rule.parameters()]
    theta = nn.utils.parameters_to_vector(params).detach()
    opt = torch.optim.Adam([theta.requires_grad_()], lr=lr)
    history = []

    def loss_at(vec, x, y, w0, fb, idx):
        nn.utils.vector_to_parameters(vec, params)
        with torch.no_grad():
            return episode_loss(run_episode(rule, w0, x, y, n_steps, signal, fb, idx), x, y).item()

    for _ in range(n_meta_steps):
        x, y, w0, fb, idx = _sample_task(task, sizes, n_nets, generator, n_steps)
        eps = torch.randn(population // 2, theta.numel(), generator=generator)
        diffs = torch.tensor([loss_at(theta.detach() + sigma * e, x, y, w0, fb, idx)
                              - loss_at(theta.detach() - sigma * e, x, y, w0, fb, idx) for e in eps])
        grad = (diffs[:, None] * eps).sum(0) / (2 * sigma * len(eps))
        opt.zero_grad()
        theta.grad = grad
        opt.step()
        history.append(loss_at(theta.detach(), x, y, w0, fb, idx))
    nn.utils.vector_to_parameters(theta.detach(), params)
    return history


@torch.no_grad()
def evaluate(
    rule: nn.Module,
    task: str = "xor",
    hidden: Sequence[int] = (10,),
    n_nets: int = 100,
    n_steps: int = 50,
    signal: str = "feedback",
    generator=None,
) -> int:
    """Number of ``n_nets`` fresh (held-out) networks the rule trains to get all patterns right.

    Uses chapter 8's metric (:func:`dfa_lib.local.success`).  Pass a generator seeded apart
    from the one used for meta-training so the initialisations are held out.
    """
    sizes = [2, *hidden, 1]
    x, y, w0, fb, idx = _sample_task(task, sizes, n_nets, generator, n_steps)
    w = run_episode(rule, w0, x, y, n_steps, signal, fb, idx)
    return int(local.success(w, x, y).sum())


# --------------------------------------------------------------------------- looking inside
@torch.no_grad()
def rule_response(rule: nn.Module, pre: torch.Tensor, post: torch.Tensor, w: float = 0.0, m: float = 0.0) -> torch.Tensor:
    """The rule's :math:`\\Delta w` on a grid: ``pre`` (P,), ``post`` (Q,) -> (Q, P).

    For an LSTM rule this is its response on the first step of an episode (zero memory).
    """
    P, Q = pre.numel(), post.numel()
    pre_t = pre.view(1, 1, P)
    post_t = post.view(1, Q, 1)
    w_t = torch.full((1, Q, P), float(w))
    m_t = torch.full((1, Q, 1), float(m))
    return rule(pre_t, post_t, w_t, m_t)[0][0]


def reference_rules(pre: torch.Tensor, post: torch.Tensor, w: float = 0.0, m: float = 0.0) -> dict[str, torch.Tensor]:
    """Classic rules on the same grid as :func:`rule_response`, each (Q, P), unscaled:

    - Hebb: :math:`\\Delta w = \\text{pre}\\cdot\\text{post}`
    - Oja: :math:`\\Delta w = \\text{post}\\,(\\text{pre} - \\text{post}\\cdot w)`
    - delta (error-modulated): :math:`\\Delta w = m\\cdot\\text{pre}`
    - three-factor: :math:`\\Delta w = m\\cdot\\text{pre}\\cdot\\text{post}`
    """
    P, Q = pre.numel(), post.numel()
    pre_g, post_g = pre.view(1, P).expand(Q, P), post.view(Q, 1).expand(Q, P)
    return {
        "Hebb": pre_g * post_g,
        "Oja": post_g * (pre_g - post_g * w),
        "delta": m * pre_g,
        "three-factor": m * pre_g * post_g,
    }
