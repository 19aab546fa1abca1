"""Adversarial examples under an L-infinity budget: FGSM, PGD and a random-sign baseline (chapter 13).

Chapter 13 asks whether networks trained without weight transport (FA, DFA, sign symmetry,
Kolen-Pollack) are harder to fool than networks trained with BP, and whether any difference is
real robustness or only *gradient masking*: an attack that follows a poor gradient fails even
where a better one would succeed.  So every gradient attack here takes a ``gradient`` choice:

- ``"exact"``: the trained network's true input gradient, plain autograd through every layer with
  the rule's hooks switched off for the attack (the network itself is unchanged, and the hooks are
  on again afterwards).  This is the white-box attack a robustness claim has to survive.
- ``"rule"``: the input gradient the rule's own backward pass produces (what an attacker who
  only had the training machinery would use).  The rule's hooks decide the gradient at the output
  of the first learning layer; the last step to the input goes through that layer's own weight
  (the rules keep no feedback matrix for the first layer: nothing before it learns), and through
  whatever runs before it (flattening, normalisation) by autograd.  FA with ``B = W`` therefore
  gives the exact gradient.  BP, a model without a rule, and ``path="auto"`` rules all count: a
  model that carries no rule is attacked with plain autograd.  Shallow learning sends nothing
  back to the first layer and DRTP's signal does not depend on the loss: both raise an error.

Why not torchattacks (MIT licence, last release 3.5.1): its FGSM and PGD call
``torch.autograd.grad`` on the model as it is, and a model that carries a rule cuts its input off
the graph, so they fail on every hooked model ("appears to not have been used in the graph");
they have no way to ask for the rule's gradient; its Square attack takes images ``(N, C, H, W)``
only and reseeds torch's global random stream at every call (``torch.random.manual_seed``), which
would disturb a seeded chapter; and its wheel pins ``requests~=2.25.1``, which would downgrade the
book's environment.  On a copy with the rule taken off (``dfa_lib.detach(copy.deepcopy(model))``)
its FGSM gives the same examples as ``fgsm(model, x, y, eps, gradient="exact")``.  The
two attacks are a few lines each, written out here so that the chapter can show them.  A
gradient-free attack of the same budget is :func:`random_sign_noise`: if it hurts a network as
much as the gradient attacks do, the gradients carry little information.

All attacks take a model that returns logits (scores before any softmax), inputs ``x`` within
the data range ``bounds`` (``(0, 1)`` by default, MNIST as :func:`dfa_lib.load_mnist` gives it),
labels ``y`` as class indices, and ``epsilon``, the L-infinity budget.  They return the
adversarial inputs (detached, same shape and dtype as ``x``), each within ``epsilon`` of its
original and inside ``bounds``.  The model is put in ``eval()`` mode for the attack and its mode
restored afterwards; no parameter gradient is left behind.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .rules.base import rule_of
from .rules.graph import input_gradient

GRADIENTS = ("exact", "rule")
NO_INPUT_SIGNAL = ("shallow", "drtp")

__all__ = ["fgsm", "pgd", "random_sign_noise", "input_gradient_of_loss"]


# ---------------------------------------------------------------------------- checks
def _check_attack_input(model, x, y, epsilon, bounds) -> tuple:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module that returns logits, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor of inputs, got "
                        f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"x must be a batch, shape (N, ...); got shape {tuple(x.shape)}: use x[None] for one input")
    try:
        epsilon = float(epsilon)
    except (TypeError, ValueError):
        raise TypeError(f"epsilon must be a number, the L-infinity budget; got {type(epsilon).__name__}") from None
    if not epsilon >= 0:  # also refuses NaN
        raise ValueError(f"epsilon must be >= 0 (the L-infinity budget), got {epsilon}")
    if len(bounds) != 2 or not float(bounds[0]) < float(bounds[1]):
        raise ValueError(f"bounds must be (low, high) with low < high, the data range; got {bounds!r}")
    low, high = float(bounds[0]), float(bounds[1])
    # the value checks read the data, which a tensor on the meta device (shapes only) does not hold
    if x.numel() and not x.is_meta and (x.min().item() < low or x.max().item() > high):
        raise ValueError(f"x has values in [{x.min().item():.4g}, {x.max().item():.4g}], outside the data range "
                         f"bounds=({low}, {high}): pass inputs as the model was trained on them (e.g. pixels in "
                         f"[0, 1]) or give their range with bounds=(low, high)")
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must hold one class index per input, shape ({x.shape[0]},); got shape {tuple(y.shape)} "
                         "(one-hot targets? pass y.argmax(1))")
    if y.is_floating_point() or y.dtype == torch.bool:
        if y.is_floating_point() and (y.is_meta or bool(torch.all(y == y.round()))):
            y = y.long()
        else:
            raise ValueError(f"y must be class indices (integers), got a {y.dtype} tensor")
    return epsilon, (low, high), y.to(device=x.device, dtype=torch.long)


def _check_gradient(gradient: str) -> None:
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be 'exact' (the network's true input gradient) or 'rule' (the one the "
                         f"rule's backward pass gives), got {gradient!r}")


def _check_logits(logits, y) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (N, classes), got {shape}")
    if y.numel() and not y.is_meta and (int(y.min()) < 0 or int(y.max()) >= logits.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {logits.shape[1] - 1}] for a model with "
                         f"{logits.shape[1]} outputs; got values in [{int(y.min())}, {int(y.max())}]")


# ---------------------------------------------------------------------------- the gradient
def input_gradient_of_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gradient: str = "exact") -> torch.Tensor:
    """The gradient of the summed cross-entropy of ``model(x)`` against labels ``y`` at the input ``x``.

    ``gradient="exact"``: plain autograd with the model's rule switched off; ``"rule"``: the
    rule's backward pass down to the first learning layer, then that layer's weight (module
    docstring).  Summed, not averaged, so that each example's gradient is its own loss's gradient.
    The attacks below use it; chapter 13 compares the two.
    """
    _check_gradient(gradient)
    _, _, y = _check_attack_input(model, x, y, 0.0, (-float("inf"), float("inf")))
    rule = rule_of(model)
    graph = rule.hooks if rule is not None else None
    if gradient == "rule" and rule is not None and rule.name.lower() in NO_INPUT_SIGNAL:
        why = ("sends no signal back past the output layer" if rule.name.lower() == "shallow"
               else "sends the target, not the loss's gradient, to the hidden layers")
        raise ValueError(f"{rule.name} {why}, so it defines no input gradient of the loss: attack with "
                         "gradient='exact'")
    x = x.detach().requires_grad_(True)
    if graph is None:  # no rule: plain autograd is both the exact gradient and the model's own
        with torch.enable_grad():
            logits = model(x)
            _check_logits(logits, y)
            return torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)[0]
    was_active = graph.active
    try:
        with torch.enable_grad():
            graph.active = gradient == "rule"
            logits = model(x)
            _check_logits(logits, y)
            loss = F.cross_entropy(logits, y, reduction="sum")
            if gradient == "exact" or not rule.cuts(0, graph.n_layers):  # BP's hooks cut nothing
                return torch.autograd.grad(loss, x)[0]
            first, before, out = graph.layers[0], graph.inputs[0], graph.outputs[0]
            (g,) = torch.autograd.grad(loss, out, allow_unused=True)
            if g is None:
                raise ValueError(f"{rule.name} sent no gradient to the first learning layer, so it defines no "
                                 "input gradient of the loss: attack with gradient='exact'")
            g_in = input_gradient(first, first.weight.detach(), g, before.shape)
            if before is x:
                return g_in
            if not before.requires_grad:  # the input does not reach the first layer through a graph
                raise ValueError("the first learning layer's input does not depend on x with gradients: "
                                 "attack with gradient='exact'")
            return torch.autograd.grad(before, x, grad_outputs=g_in)[0]
    finally:
        graph.active = was_active
        graph.inputs, graph.outputs, graph.last_output = [], [], None  # drop the attack's autograd graph


class _EvalMode:
    """``model.eval()`` for the attack, the model's own mode afterwards (dropout and batch norm fixed)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc):
        for m, mode in self.modes:
            m.training = mode


# ---------------------------------------------------------------------------- attacks
def fgsm(model: nn.Module, x: torch.Tensor, y, epsilon: float, gradient: str = "exact",
         bounds=(0.0, 1.0)) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): ``x + epsilon * sign(grad_x loss)``, clamped to ``bounds``.

    One step of size ``epsilon`` along the sign of the cross-entropy's input gradient (``gradient``:
    ``"exact"`` or ``"rule"``, see :func:`input_gradient_of_loss`).  Chapter 13.
    """
    epsilon, (low, high), y = _check_attack_input(model, x, y, epsilon, bounds)
    _check_gradient(gradient)
    with _EvalMode(model):
        g = input_gradient_of_loss(model, x, y, gradient)
    return (x.detach() + epsilon * g.sign()).clamp(low, high).detach()


def pgd(model: nn.Module, x: torch.Tensor, y, epsilon: float, steps: int = 10, step_size: float | None = None,
        random_start: bool = True, gradient: str = "exact", bounds=(0.0, 1.0),
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent under an L-infinity budget (Madry et al. 2018).

    ``steps`` signed-gradient steps of ``step_size`` (default ``2.5 * epsilon / steps``), each
    followed by projection onto the ``epsilon`` ball around ``x`` and the data range ``bounds``.
    ``random_start`` begins at a uniform point of the ball (drawn with ``generator``); without it,
    one step of size ``epsilon`` is exactly :func:`fgsm`.  ``gradient``: ``"exact"`` or ``"rule"``
    (:func:`input_gradient_of_loss`).  Chapter 13.
    """
    epsilon, (low, high), y = _check_attack_input(model, x, y, epsilon, bounds)
    _check_gradient(gradient)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    step_size = 2.5 * epsilon / steps if step_size is None else float(step_size)
    if not step_size >= 0:
        raise ValueError(f"step_size must be >= 0, got {step_size}")
    x0 = x.detach()
    adv = x0.clone()
    if random_start and epsilon > 0:
        noise = torch.rand(x0.shape, generator=generator, device=generator.device if generator else x0.device,
                           dtype=x0.dtype).to(x0.device)
        adv = (x0 + (2 * noise - 1) * epsilon).clamp(low, high)
    with _EvalMode(model):
        for _ in range(steps):
            g = input_gradient_of_loss(model, adv, y, gradient)
            adv = adv + step_size * g.sign()
            adv = torch.min(torch.max(adv, x0 - epsilon), x0 + epsilon).clamp(low, high)
    return adv.detach()


def random_sign_noise(x: torch.Tensor, epsilon: float, bounds=(0.0, 1.0),
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The gradient-free baseline: ``x + epsilon * s`` with independent random signs ``s``, clamped to ``bounds``.

    The same L-infinity size as an FGSM step (every entry moves by ``epsilon`` unless the data range
    stops it), in a direction that knows nothing of the model.  Chapter 13 compares it with the
    gradient attacks.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor of inputs")
    epsilon, (low, high), _ = _check_attack_input(nn.Identity(), x, torch.zeros(x.shape[0], dtype=torch.long)
                                                  if x.dim() >= 2 else torch.zeros(0), epsilon, bounds)
    bits = torch.randint(0, 2, x.shape, generator=generator,
                         device=generator.device if generator else x.device).to(device=x.device, dtype=x.dtype)
    return (x.detach() + epsilon * (2 * bits - 1)).clamp(low, high).detach()
