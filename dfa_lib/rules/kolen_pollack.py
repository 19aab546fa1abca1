"""Kolen-Pollack: the feedback weights learn, with the same update as the forward weights.

Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019 ("Deep learning without weight transport"),
after Kolen & Pollack 1994.  Every learning layer after the first has a backward weight ``B``
of its weight's shape that sends the signal down in place of ``W`` (as in FA).  Both receive the
same update, each with weight decay::

    dW = -eta * (delta^T h) - lambda * W
    dB = -eta * (delta^T h) - lambda * B        (the same gradient: B never sees W itself)

so ``W - B`` shrinks by ``(1 - eta * lambda)`` every step and B converges to W: the transport
problem solved by local information (each synapse of B sees the same pre- and post-synaptic
activity as its W twin).  ``B`` are parameters of the rule, ``rule.feedback_parameters``, in W's
own layout (``rule.feedback`` shows them in every rule's common layout, ``W^T``'s: :mod:`dfa_lib.rules`);
:func:`dfa_lib.train` adds them to its optimizer, in your own loop pass
``list(model.parameters()) + list(rule.parameters())``.
The decay is part of the rule (added to both gradients), so any optimizer applies it; with plain
SGD the gap then shrinks by ``(1 - lr * weight_decay)`` a step.  An adaptive optimizer (Adam)
scales ``G + lambda W`` and ``G + lambda B`` differently, so the gap no longer just decays: there,
build the rule with ``weight_decay=0`` and decay both the decoupled way
(``torch.optim.AdamW(params, weight_decay=lambda)``): W and B then receive identical Adam steps and
the gap shrinks by ``(1 - lr * lambda)`` every step (chapter 10).  Compared in chapters 10 and 11.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import FeedbackRule, check_common_arguments
from .graph import input_gradient, learning_layers
from .random_feedback import Scale, fan_in_scale, init_feedback

_OPTIMIZER_FIX = ("build the optimizer over both: torch.optim.SGD(list(model.parameters()) + "
                  "list(rule.parameters()), ...) (any optimizer; dfa_lib.train does it for you)")


class _Contribution:
    """Tensor hook on W_k: keeps this backward's gradient of W_k, before it is added to ``W_k.grad``."""

    __torch_unserializable__ = True  # re-made after unpickling (KolenPollack.start_forward): no warning

    def __init__(self, rule: "KolenPollack", k: int):
        self.rule, self.k = rule, k

    def __call__(self, g: torch.Tensor) -> None:
        w = self.rule.layers[self.k].weight
        self.rule._pending[self.k] = (g, w.grad is None)


class _MirrorGradient:
    """After W_k's gradient is accumulated: B_k gets the same contribution (k >= 1), both get the decay.

    Each backward adds ``contribution + weight_decay * B`` to ``B.grad`` and ``weight_decay * W`` to
    ``W.grad`` (which autograd gave the contribution), so two accumulated backward calls give both
    twice the decay and B's gradient never contains W.
    """

    def __init__(self, rule: "KolenPollack", k: int):
        self.rule, self.k = rule, k

    def __call__(self, w: torch.Tensor) -> None:
        rule, decay = self.rule, self.rule.weight_decay
        if self.k > 0:
            g, w_grad_was_cleared = rule._pending.pop(self.k, (None, False))
            B = rule.feedback_parameters[self.k - 1]
            if g is not None and B.requires_grad:  # a B frozen on purpose stays as it is (FA)
                if w_grad_was_cleared and B.grad is not None:
                    raise RuntimeError(
                        f"Kolen-Pollack: the gradient of W (layer {self.k + 1}) was cleared since the last "
                        f"backward, but that of its feedback weight B was not: the optimizer does not hold "
                        f"the rule's weights, so B never learns and the rule runs as FA. {_OPTIMIZER_FIX}")
                _accumulate(B, g, decay)
                rule._versions[self.k] = (w._version, B._version)
        if decay:
            w.grad.add_(w.detach(), alpha=decay)


def _accumulate(B: nn.Parameter, g: torch.Tensor, decay: float) -> None:
    """``B.grad += g + decay * B`` (``B.grad`` created on the first backward)."""
    g = g.detach()
    if B.grad is None:
        if decay:
            B.grad = g.add(B.detach(), alpha=decay)
        elif g.stride() == B.stride():  # autograd copied g into W.grad (the hook holds it), so B may keep it
            B.grad = g
        else:
            B.grad = g.clone(memory_format=torch.contiguous_format)
        return
    B.grad.add_(g)
    if decay:
        B.grad.add_(B.detach(), alpha=decay)


class KolenPollack(FeedbackRule):
    """Kolen-Pollack: ``B`` gets W's gradient, both decay with ``weight_decay`` (Akrout et al. 2019).

    The backward weights ``B`` are parameters of the rule (``rule.feedback_parameters``, one per
    learning layer after the first, in the layer's weight shape): give them to the optimizer,
    ``list(model.parameters()) + list(rule.parameters())`` (:func:`dfa_lib.train` does).  An
    optimizer that holds only the model's weights leaves B fixed, which is FA, not KP: the rule
    notices (W changed or its gradient was cleared while B's was not) and raises an error at the
    next forward or backward pass.  Each backward call adds the same contribution to both
    gradients, so gradient accumulation over several calls works as for any parameter.

    Defaults: BioTorch has no Kolen-Pollack.  B is drawn like FA's former default on any model,
    U[-1/sqrt(n), 1/sqrt(n)] with n the fan-in of the backward map (:func:`~dfa_lib.rules.fan_in_scale`),
    the range of PyTorch's own initialisation; B learns, so its start matters little.

    Args:
        model: any ``nn.Module`` whose learning layers are ``nn.Linear``/``nn.Conv2d``.
        weight_decay: ``lambda`` of the module docstring, added to the gradients of W and B by the
            rule (default 1e-3).  With Adam use 0 here and AdamW's decoupled decay (chapter 10).
        dist: ``"uniform"`` (default) or ``"normal"``: the distribution B is drawn from.
        scale: its range (uniform) or standard deviation (normal), a number or a function of the
            ``W^T``-shaped (Linear) or W-shaped (conv) matrix's shape; default :func:`~dfa_lib.rules.fan_in_scale`.
        generator: a ``torch.Generator`` for a reproducible draw (on the CPU or on the model's
            device); default None: torch's global random stream of the model's device.
        example_input: not needed (checked and ignored, so every rule can be built the same way).
        path: ``"auto"`` or ``"autograd"``, the same here: Kolen-Pollack always trains through autograd.
    """

    name = "KP"
    feedback_stands_for_weights = True

    def __init__(self, model: nn.Module, weight_decay: float = 1e-3, dist: str = "uniform", scale: Scale = fan_in_scale,
                 generator: torch.Generator | None = None, example_input: torch.Tensor | None = None,
                 path: str = "auto"):
        """Draw the backward weights for ``model`` and attach the rule (see the class docstring)."""
        super().__init__()
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        check_common_arguments(generator, example_input, path)
        self.weight_decay = float(weight_decay)
        self.layers = learning_layers(model)
        # B drawn like FA's, stored in W's shape: a Linear layer's W^T-shaped draw is transposed
        self.feedback_parameters = nn.ParameterList()
        for layer in self.layers[1:]:
            w = layer.weight
            shape = (w.shape[1], w.shape[0]) if isinstance(layer, nn.Linear) else tuple(w.shape)
            B = init_feedback(shape, dist, scale, generator, dtype=w.dtype, device=w.device)
            self.feedback_parameters.append(nn.Parameter(B.T.contiguous() if isinstance(layer, nn.Linear) else B))
        self._grad_hooks = []
        self._reset_bookkeeping()
        self.attach(model)

    def _reset_bookkeeping(self) -> None:
        self._pending = {}   # layer -> (this backward's gradient of W, whether W.grad was None before it)
        self._versions = {}  # layer -> (W._version, B._version) after its last backward

    def attach(self, model: nn.Module) -> "KolenPollack":
        """Put the rule's hooks on ``model``: the forward hooks and the gradient hooks that make B learn."""
        layers = learning_layers(model)
        shapes = [tuple(l.weight.shape) for l in layers[1:]]
        if shapes != [tuple(B.shape) for B in self.feedback_parameters]:
            raise ValueError(f"{self.name}'s backward weights have the shapes "
                             f"{[tuple(B.shape) for B in self.feedback_parameters]}"
                             f", but this model's weights after the first have {shapes}: build a rule for this model")
        super().attach(model)
        self.layers = layers
        self._register_grad_hooks()
        return self

    def _register_grad_hooks(self) -> None:
        """On every trainable W: one hook that sees each backward's contribution, one after it is accumulated."""
        for h in self._grad_hooks or ():
            h.remove()
        self._reset_bookkeeping()
        self._grad_hooks = []
        for k, layer in enumerate(self.layers):
            w = layer.weight
            if not w.requires_grad:
                continue
            if k > 0:
                self._grad_hooks.append(w.register_hook(_Contribution(self, k)))
            self._grad_hooks.append(w.register_post_accumulate_grad_hook(_MirrorGradient(self, k)))

    def __getstate__(self):
        state = super().__getstate__()
        state["_grad_hooks"] = None  # tensor hooks are not saved with the weights: re-made at the next forward
        state["_pending"], state["_versions"] = {}, {}
        return state

    def start_forward(self, graph) -> None:
        if self._grad_hooks is None:  # after unpickling
            self._register_grad_hooks()
        self._pending.clear()  # left by a torch.autograd.grad call, which accumulates nothing
        self._check_backward_weights_learn()

    def _check_backward_weights_learn(self) -> None:
        """W changed since its last backward but B, which got the same gradient, did not: B is not being stepped.

        Read from the tensors' version counters (free); a W with no gradient (frozen, or an eval
        forward that never ran backward) has no record and is not checked.  An optimizer step with
        ``lr=0`` still writes both.  Fused optimizers do not count versions: for them the check at
        the next backward (W's gradient cleared, B's not) catches the same mistake.
        """
        for k, (w_version, b_version) in self._versions.items():
            w, B = self.layers[k].weight, self.feedback_parameters[k - 1]
            if w._version != w_version and B._version == b_version and B.grad is not None:
                raise RuntimeError(
                    f"Kolen-Pollack: W of layer {k + 1} changed since the last backward, but its feedback weight B "
                    f"did not, though it has a gradient: the optimizer does not hold the rule's weights, so B never "
                    f"learns and the rule runs as FA. {_OPTIMIZER_FIX}.  (If you changed W yourself, "
                    f"call rule.zero_grad() first.)")

    def detach(self) -> None:
        """Take the rule's hooks off its model, the gradient hooks on the weights too."""
        super().detach()
        for h in self._grad_hooks or ():
            h.remove()
        self._grad_hooks = []
        self._reset_bookkeeping()

    @property
    def feedback(self) -> list:
        """The learned backward weights in the common layout, ``B.transpose(0, 1)`` (views, no gradient)."""
        return [B.detach().transpose(0, 1) for B in self.feedback_parameters]

    def _load_from_state_dict(self, state_dict, prefix, *args):
        for key in [k for k in state_dict if k.startswith(prefix + "backward.")]:  # saved before the rename
            state_dict[prefix + "feedback_parameters." + key[len(prefix + "backward."):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def __setstate__(self, state):
        modules = state.get("_modules", {})
        if "backward" in modules:  # pickled before the rename
            modules["feedback_parameters"] = modules.pop("backward")
        super().__setstate__(state)

    def tap(self, k, graph):
        if k == 0:
            return None, ()
        layer, x, B = graph.layers[k], graph.inputs[k], self.feedback_parameters[k - 1].detach()
        return (lambda g: (input_gradient(layer, B, g, x.shape),)), (x,)
