"""Learned plasticity rules: a small network, shared by every synapse, that *is* the learning rule.

Seed 004 sketches this idea with a per-synapse Python double loop (``arbitrary_forward``)
and an LSTM it never connects to a network.  Here a rule maps the local quantities of every
synapse of a whole population at once,

.. math:: \\Delta w_{ij} = f_\\theta\\big(\\text{pre}_j,\\ \\text{post}_i,\\ w_{ij},\\ m_i\\big),

where ``m_i`` is the one modulatory signal neuron ``i`` can see:

- ``"error"``:    the direction the output should move, :math:`-e = t - \\hat y` (the library's
  error is :math:`e = \\hat y - t` everywhere), one scalar broadcast to every neuron;
- ``"reward"``:   a scalar reward :math:`r = -e^2` (how wrong, but not in which direction);
- ``"feedback"``: a per-neuron signal, :math:`m = -e` at the output and :math:`m = -B_l e` in
  hidden layer ``l``, through a fixed random matrix :math:`B_l` (as in direct feedback
  alignment, chapter 2).

Two rule families: :class:`MLPRule` (memoryless) and :class:`LSTMRule` (one LSTM state per
synapse, so the rule can remember).  The rule parameters :math:`\\theta` are meta-trained by
backpropagating through whole unrolled learning episodes of many random networks
(:func:`dfa_lib.local.meta.meta_train`), or with evolution strategies
(:func:`dfa_lib.local.meta.es_meta_train`).  Every rule is a :class:`PlasticityRule`.

The networks are those of chapter 8 (:mod:`dfa_lib.local.nets`): bias-free, ReLU hidden
units, tanh output, stored as ``(n_nets, n_out, n_in)`` tensors.

Introduced in chapter 9 (``book/09_learned_rules.ipynb``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ..rules import init_feedback

MODULATIONS = ("error", "reward", "feedback")
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


def init_net_feedback(n_nets: int, sizes: Sequence[int], generator=None, dtype=torch.float32,
                      device=None) -> list[torch.Tensor]:
    """Fixed random feedback matrices ``B_l`` of shape (n_nets, sizes[l], n_out), l = hidden layers.

    Entries are U[-1, 1], one independent draw per network (the rule has to work for any).
    They are drawn on the CPU (where ``generator`` lives) and moved to ``device``, so one seed
    gives the same matrices on every device, as :func:`~dfa_lib.local.nets.init_nets` does.
    """
    n_out = sizes[-1]
    return [init_feedback((n_nets, s, n_out), "uniform", 1.0, generator, dtype).to(device) for s in sizes[1:-1]]


def modulatory_inputs(modulation: str, e: torch.Tensor, sizes: Sequence[int], feedback=None) -> list[torch.Tensor]:
    """The input ``m`` each layer's post-synaptic neurons see, one (n, out_l, 1) tensor per layer.

    ``e = y_hat - t`` is the output error (n, n_out), as everywhere in dfa_lib; the rules see
    the direction of improvement :math:`d = -e = t - \\hat y`.  ``"error"``: :math:`m = \\bar d`
    (mean over outputs) for every neuron; ``"reward"``: :math:`m = -\\overline{e^2}` for every
    neuron; ``"feedback"``: :math:`m = d` at the output, :math:`m = B_l d` in hidden layer ``l``.
    """
    n = e.shape[0]
    d = -e
    if modulation == "error":
        g = d.mean(dim=1)
    elif modulation == "reward":
        g = -(d**2).mean(dim=1)
    elif modulation == "feedback":
        if feedback is None or len(feedback) != len(sizes) - 2:
            raise ValueError(f"modulation 'feedback' needs one feedback matrix per hidden layer ({len(sizes) - 2})")
        hidden = [torch.einsum("nio,no->ni", B, d).unsqueeze(2) for B in feedback]
        return hidden + [d.unsqueeze(2)]
    else:
        raise ValueError(f"unknown modulation {modulation!r}; choose one of {MODULATIONS}")
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
class PlasticityRule(nn.Module):
    """Base class of the learned (and hand-written) plasticity rules of chapter 9.

    A rule has a state (``None`` for memoryless rules), made by ``init_state(weights)``, and
    two views of the same update:

    - ``step_all(hs, weights, ms, state) -> (dws, state)``: the change of every layer's weights
      from the activities ``hs = [h_0, ..., h_L]`` (each (n, units)) and modulatory inputs
      ``ms`` (one (n, out_l, 1) per layer); used by the episodes of :mod:`dfa_lib.local.meta`;
    - ``forward(pre, post, w, m, state) -> (dw, state)``: the change of one layer's weights,
      e.g. on a grid of inputs (:func:`rule_response`).
    """

    def init_state(self, weights):
        return None

    def step_all(self, hs, weights, ms, state):
        raise NotImplementedError

    def forward(self, pre, post, w, m, state=None):
        raise NotImplementedError


class MLPRule(PlasticityRule):
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

    def forward(self, pre, post, w, m, state=None):
        """``dw`` (n, out, in) for one layer, and the (unchanged, ``None``) state."""
        phi = local_features(pre, post, w, m, self.features)
        return self.max_step * torch.tanh(self.net(phi).squeeze(-1)), state

    def step_all(self, hs, weights, ms, state):
        """Weight changes of every layer at once (one MLP call on all synapses)."""
        flat, shapes = _flat_features(hs, weights, ms, self.features)
        return _unflatten(self.max_step * torch.tanh(self.net(flat).squeeze(-1)), shapes), state


class LSTMRule(PlasticityRule):
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


class DeltaRule(PlasticityRule):
    r"""A hand-written rule in the same interface, for comparison: :math:`\Delta w_{ij} = \eta\, m_i\, \text{pre}_j`.

    With ``modulation="feedback"`` this is the delta rule at the output and, in the hidden layers,
    direct feedback alignment's update :math:`\eta\, (B e)_i\, f'(a_i)\, \text{pre}_j` with the
    ReLU derivative :math:`f'(a_i) = [\text{post}_i > 0]` (``gate=True``, the default;
    ``gate=False`` drops it).  With ``modulation="error"`` every neuron gets the same signal.
    ``forward`` gives one layer's ungated change (the output layer's form).

    Introduced in chapter 9 (``book/09_learned_rules.ipynb``).
    """

    def __init__(self, lr: float = 0.1, gate: bool = True):
        super().__init__()
        self.lr, self.gate = lr, gate

    def forward(self, pre, post, w, m, state=None):
        """``dw = lr * m * pre`` for one layer, broadcast to ``w``'s shape, and the unchanged state."""
        return (self.lr * m * pre).expand(torch.broadcast_shapes(pre.shape, post.shape, w.shape, m.shape)), state

    def step_all(self, hs, weights, ms, state):
        dws = []
        for l, (pre, post, m) in enumerate(zip(hs[:-1], hs[1:], ms)):
            if self.gate and l < len(ms) - 1:
                m = m * (post > 0).unsqueeze(2).to(m.dtype)
            dws.append(self.lr * m * pre.unsqueeze(1))
        return dws, state


# --------------------------------------------------------------------------- looking inside
@torch.no_grad()
def rule_response(rule: PlasticityRule, pre: torch.Tensor, post: torch.Tensor, w: float = 0.0, m: float = 0.0) -> torch.Tensor:
    """The rule's :math:`\\Delta w` on a grid: ``pre`` (P,), ``post`` (Q,) -> (Q, P).

    For an LSTM rule this is its response on the first step of an episode (zero memory).
    The grid's device and dtype are those of ``pre``.
    """
    P, Q = pre.numel(), post.numel()
    pre_t = pre.view(1, 1, P)
    post_t = post.view(1, Q, 1)
    w_t = pre.new_full((1, Q, P), float(w))
    m_t = pre.new_full((1, Q, 1), float(m))
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
