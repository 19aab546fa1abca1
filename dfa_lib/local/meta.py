"""Learning episodes and meta-training of plasticity rules.

An episode lets a rule (:mod:`dfa_lib.local.plasticity`) train many fresh batched networks
(:mod:`dfa_lib.local.nets`) online for a number of steps; meta-training changes the rule's
parameters so the trained networks do well, by backpropagating through whole episodes
(:func:`meta_train`) or with evolution strategies (:func:`es_meta_train`, whose ``samples``
are perturbations of the rule's parameters).

Introduced in chapter 9 (``book/09_learned_rules.ipynb``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..data import logic_gate
from .nets import check_nets, forward, init_nets, one_pattern_per_step, sample_patterns, success
from .plasticity import MODULATIONS, PlasticityRule, init_net_feedback, modulatory_inputs


def run_episode(
    rule: PlasticityRule,
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    n_steps: int,
    modulation: str = "feedback",
    feedback=None,
    indices: torch.Tensor | None = None,
    generator=None,
    return_trace: bool = False,
):
    """Let ``rule`` train every one of the batched networks for ``n_steps`` online steps.

    At step :math:`k` network :math:`n` sees pattern ``indices[k, n]``; with the activities
    :math:`h_0 = x, h_1, \\dots, \\hat y` of that pattern, the error :math:`e = \\hat y - t` and
    the layers' modulatory inputs :math:`m_l` (:func:`~dfa_lib.local.plasticity.modulatory_inputs`),
    every weight of every layer changes by

    .. math:: W^{(l)}_{ij} \\leftarrow W^{(l)}_{ij} + f_\\theta\\big(h_{l-1,j},\\ h_{l,i},\\ W^{(l)}_{ij},\\ m_{l,i}\\big).

    Differentiable in the rule's parameters (meta-training backpropagates through it).
    Returns the final weights (and, with ``return_trace``, the loss on all patterns after
    every step).
    """
    if modulation not in MODULATIONS:
        raise ValueError(f"unknown modulation {modulation!r}; choose one of {MODULATIONS}")
    n_nets = check_nets(weights)
    sizes = [weights[0].shape[2]] + [w.shape[1] for w in weights]
    if indices is None:
        indices = sample_patterns(n_steps, n_nets, x.shape[0], generator, device=x.device)
    if indices.shape != (n_steps, n_nets):
        raise ValueError(f"indices has shape {tuple(indices.shape)}; expected ({n_steps}, {n_nets})")
    if y.dim() == 3 and y.shape[0] != n_nets:
        raise ValueError(f"per-network targets y have shape {tuple(y.shape)}; expected ({n_nets}, {x.shape[0]}, n_out)")
    w = list(weights)
    state = rule.init_state(w)
    trace = []
    for _, xb, tb in one_pattern_per_step(x, y, indices):
        hs = [h[:, 0, :] for h in forward(w, xb.unsqueeze(1))]  # each (n, units): one pattern per network
        e = hs[-1] - tb
        ms = modulatory_inputs(modulation, e, sizes, feedback)
        dws, state = rule.step_all(hs, w, ms, state)
        w = [wl + dw for wl, dw in zip(w, dws)]
        if return_trace:
            trace.append(episode_loss(w, x, y).detach())
    return (w, torch.stack(trace)) if return_trace else w


def episode_loss(weights, x, y) -> torch.Tensor:
    """Meta-loss: mean squared error of every network on all patterns, :math:`\\langle (t - \\hat y)^2 \\rangle`.

    ``y`` is (n_patterns, n_out), or (n_nets, n_patterns, n_out) for one task per network.
    """
    out = forward(weights, x)[-1]
    return ((out - (y if y.dim() == 3 else y.unsqueeze(0))) ** 2).mean()


def sample_task(task, sizes: Sequence[int], n_nets: int, generator, n_steps: int, device=None,
                dtype=torch.float32) -> tuple:
    """One meta-batch: the four patterns, targets, fresh networks, feedback and pattern order.

    Returns ``(x, y, w0, feedback, indices)`` on ``device`` (floats in ``dtype``); ``task`` is
    a gate name or a list of names (then each network gets one of them at random).  Every
    random draw is made on the CPU, where ``generator`` lives, so a seed gives the same
    meta-batch on every device.
    """
    tasks = [task] if isinstance(task, str) else list(task)
    x, _ = logic_gate(tasks[0], coding="pm1", dtype=dtype, device=device)  # the same four inputs for every gate
    if len(tasks) == 1:
        y = logic_gate(tasks[0], coding="pm1", dtype=dtype, device=device)[1]
    else:  # each network gets its own task: (n_nets, 4, 1) targets
        table = torch.stack([logic_gate(t, coding="pm1", dtype=dtype, device=device)[1] for t in tasks])
        y = table[torch.randint(len(tasks), (n_nets,), generator=generator).to(device)]
    w0 = init_nets(n_nets, sizes, generator=generator, dtype=dtype, device=device)
    fb = init_net_feedback(n_nets, sizes, generator=generator, dtype=dtype, device=device)
    idx = sample_patterns(n_steps, n_nets, x.shape[0], generator, device=device)
    return x, y, w0, fb, idx


def rule_tensor_options(rule: PlasticityRule) -> dict:
    """``device`` and ``dtype`` of the rule's parameters (the CPU and float32 for a rule without any).

    The networks a rule trains are made where the rule lives, so a rule moved with
    ``rule.cuda()`` or ``rule.double()`` meta-trains there.
    """
    p = next(rule.parameters(), None)
    return {"device": None, "dtype": torch.float32} if p is None else {"device": p.device, "dtype": p.dtype}


def fresh_task(rule: PlasticityRule, task, hidden: Sequence[int], n_nets: int, n_steps: int, generator=None):
    """:func:`sample_task` for networks of 2 inputs, ``hidden`` layers and 1 output, made where ``rule`` lives.

    What every meta-step and every evaluation of a rule starts from: ``(x, y, w0, fb, idx)``.
    """
    return sample_task(task, [2, *hidden, 1], n_nets, generator, n_steps, **rule_tensor_options(rule))


def meta_train(
    rule: PlasticityRule,
    task="xor",
    hidden: Sequence[int] = (10,),
    n_meta_steps: int = 200,
    n_nets: int = 64,
    n_steps: int = 50,
    modulation: str = "feedback",
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
    batches.  The networks are made where the rule's parameters live, in their dtype
    (``rule.cuda()`` meta-trains on the GPU; the random draws stay on the CPU generator, so a
    seed gives the same networks everywhere).  Returns the meta-loss history.

    Introduced in chapter 9 (``book/09_learned_rules.ipynb``).
    """
    opt = torch.optim.Adam(rule.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_meta_steps) if cosine_decay else None
    history = []
    for _ in range(n_meta_steps):
        x, y, w0, fb, idx = fresh_task(rule, task, hidden, n_nets, n_steps, generator)
        w = run_episode(rule, w0, x, y, n_steps, modulation, fb, idx)
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
    rule: PlasticityRule,
    task="xor",
    hidden: Sequence[int] = (10,),
    n_meta_steps: int = 100,
    n_nets: int = 64,
    n_steps: int = 50,
    modulation: str = "feedback",
    samples: int = 16,
    sigma: float = 0.05,
    lr: float = 0.03,
    generator=None,
) -> list[float]:
    """Meta-train ``rule`` with antithetic evolution strategies (no backpropagation).

    Per meta-step, for ``samples/2`` random directions :math:`\\epsilon_k \\sim N(0, I)` of
    the flattened rule parameters, the episode loss is measured at
    :math:`\\theta \\pm \\sigma\\epsilon_k` on the same networks, and

    .. math:: \\theta \\leftarrow \\theta - \\alpha\\, \\frac{1}{2\\sigma K}\\sum_k \\big(L(\\theta + \\sigma\\epsilon_k) - L(\\theta - \\sigma\\epsilon_k)\\big)\\,\\epsilon_k

    (through Adam with step size ``lr``).  Returns the loss history at :math:`\\theta`.
    """
    if samples < 2 or samples % 2:
        raise ValueError(f"samples must be a positive even number, got {samples}")
    params = [p for p in rule.parameters()]
    theta = nn.utils.parameters_to_vector(params).detach()
    opt = torch.optim.Adam([theta.requires_grad_()], lr=lr)
    history = []

    def loss_at(vec, x, y, w0, fb, idx):
        nn.utils.vector_to_parameters(vec, params)
        with torch.no_grad():
            return episode_loss(run_episode(rule, w0, x, y, n_steps, modulation, fb, idx), x, y).item()

    for _ in range(n_meta_steps):
        x, y, w0, fb, idx = fresh_task(rule, task, hidden, n_nets, n_steps, generator)
        # drawn on the CPU, where the generator lives, then moved to the rule's parameters
        eps = torch.randn(samples // 2, theta.numel(), generator=generator).to(theta)
        diffs = theta.new_tensor([loss_at(theta.detach() + sigma * e, x, y, w0, fb, idx)
                                  - loss_at(theta.detach() - sigma * e, x, y, w0, fb, idx) for e in eps])
        grad = (diffs[:, None] * eps).sum(0) / (2 * sigma * len(eps))
        opt.zero_grad()
        theta.grad = grad
        opt.step()
        history.append(loss_at(theta.detach(), x, y, w0, fb, idx))
    nn.utils.vector_to_parameters(theta.detach(), params)
    return history


@torch.no_grad()
def count_solved(
    rule: PlasticityRule,
    task: str = "xor",
    hidden: Sequence[int] = (10,),
    n_nets: int = 100,
    n_steps: int = 50,
    modulation: str = "feedback",
    generator=None,
) -> int:
    """Number of ``n_nets`` fresh (held-out) networks the rule trains to get all patterns right.

    Uses chapter 8's metric (:func:`dfa_lib.local.nets.success`).  Pass a generator seeded apart
    from the one used for meta-training so the initialisations are held out.
    """
    x, y, w0, fb, idx = fresh_task(rule, task, hidden, n_nets, n_steps, generator)
    w = run_episode(rule, w0, x, y, n_steps, modulation, fb, idx)
    return int(success(w, x, y).sum())
