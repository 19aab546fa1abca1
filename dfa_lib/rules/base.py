"""The interface every FA-family rule implements, how it is attached to a model, and the ``f'`` step.

A rule is an ``nn.Module`` (so feedback matrices are buffers that follow ``.to(device)``
and ``state_dict``).  It reaches a model one of two ways:

- the MLP fast path, ``signals(model, cache, e)``: one teaching signal per layer from a
  :class:`~dfa_lib.models.ForwardCache`, written out by hand (chapters 1-7), which
  :func:`dfa_lib.train` uses for an MLP;
- the autograd path for any model of ``nn.Linear``/``nn.Conv2d`` layers (:mod:`.graph`):
  hooks that decide the gradient each block output receives, so that an ordinary
  ``loss.backward(); optimizer.step()`` applies the rule (chapters 10 and 11).

A rule built on a model always puts its hooks on it, an MLP included, so the reader's own loop
trains with the rule; :func:`dfa_lib.train` still takes the fast path on an MLP (the hooks do
nothing there: the fast path's forward pass runs without gradients).  A model carries at most one
rule: :func:`rule_of` says which, :func:`detach` takes it off.  Both paths compute the same
update (``tests/test_any_model.py``).  Introduced in chapter 1, the attachment in chapter 10.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..checks import check_generator
from ..models import MLP, ForwardCache, caches_forward
from .graph import RuleGraph, _PreHook, _check_example_input

PATHS = ("auto", "autograd")


def times_derivative(model: MLP, cache: ForwardCache, l: int, p: torch.Tensor) -> torch.Tensor:
    """``p * f'(a_l)`` for hidden layer ``l``: the last step of every rule's signal.

    For tanh with a consistent cache this is one fused kernel, ``p * (1 - h_l**2)``, the one
    autograd uses for tanh (3x fewer passes over the (N, n_l) tensor than the three-op form).
    """
    if cache.consistent and model.activation.name == "tanh":
        return torch.ops.aten.tanh_backward(p, cache.inputs[l])
    return p * model.hidden_derivative(cache, l)


class FeedbackRule(nn.Module):
    """Base class: a rule maps the output error to a teaching signal for every layer.

    Every subclass is built as ``Rule(model, generator=None, example_input=None, path="auto", ...)``
    plus its own keywords (the package docstring, :mod:`dfa_lib.rules`, lists the common ones), and
    lists its feedback matrices as :attr:`feedback`, one per hidden block, in ONE layout for every
    rule and layer kind: ``feedback[l-1]`` stands where BP has ``W_{l+1}.transpose(0, 1)``, its first
    axis the block receiving the signal (n_l, or C_l for a conv layer), its second the signal's source
    (n_{l+1}, C_{l+1} or n_out).

    Args of subclasses' constructors: ``path="auto"`` lets :func:`dfa_lib.train` take the MLP fast
    path for a :class:`~dfa_lib.models.MLP` when the rule has one, the autograd path otherwise;
    ``path="autograd"`` makes it train through the hooks on the MLP too.  Either way the rule puts
    its hooks on the model's learning layers, so ``loss.backward()`` in any loop applies it
    (chapter 10); only BP, which is plain autograd, needs none.

    One rule per model: building a second rule on a model that carries one raises an error, so
    that the rule you attach is the rule that runs.  ``rule.detach()`` or :func:`dfa_lib.detach`
    takes the hooks off; :func:`dfa_lib.rule_of` says which rule a model carries; ``repr(rule)``
    says what the rule is attached to.

    What a copy carries: the hooks are part of the model's layers, so ``copy.deepcopy(model)``
    (and ``torch.save``/``torch.load`` of the whole model) also copies the rule, with its own copy
    of the feedback matrices, attached to the copied layers.  A "BP baseline made by deepcopy" of
    a hooked model therefore trains with the rule in a plain loop: take it off with
    ``dfa_lib.detach(copy)``, or copy the model before building the rule.  A copied rule is found
    with ``dfa_lib.rule_of(copy)``.
    """

    name = "rule"
    has_fast_path = False  # True where signals() is implemented
    needs_hooks = True  # False for BP, which is plain autograd: dfa_lib.train puts no hooks on a model for it
    feedback_stands_for_weights = False  # True where feedback[l-1] replaces W_{l+1}^T (FA, sign symmetry, KP)
    forced_autograd = False  # path="autograd": dfa_lib.train applies the rule through its hooks on an MLP too
    _attached_to_mlp = False

    def __init__(self):
        super().__init__()
        self.hooks: RuleGraph | None = None

    @property
    def graph(self) -> RuleGraph | None:
        """The hooks through which :func:`dfa_lib.train` applies the rule; None where it takes the MLP
        fast path (the hooks are on the MLP all the same, for the reader's own loop: see :attr:`hooks`)."""
        if self.hooks is None or (self.has_fast_path and self._attached_to_mlp and not self.forced_autograd):
            return None
        return self.hooks

    def forward(self, *args, **kwargs):
        raise TypeError(
            f"{self.name} is a feedback rule, not a layer: call the model, model(x), and compute the loss as "
            f"usual; the rule shapes the gradients through hooks on the model's layers when you call "
            f"loss.backward() (chapter 10), or train with dfa_lib.train(model, rule, data)")

    # ---------------------------------------------------------------- MLP fast path
    def signals(self, model: MLP, cache: ForwardCache, e: torch.Tensor) -> list:
        """``[delta_1, ..., delta_L]``, ``None`` where a layer gets no teaching signal."""
        raise NotImplementedError(f"{self.name} has no MLP fast path; it trains through autograd (path='autograd')")

    def uses_fast_path(self, model) -> bool:
        """Whether :func:`dfa_lib.train` applies this rule with :meth:`signals` (else through autograd)."""
        return self.graph is None and self.has_fast_path and caches_forward(model)

    # ---------------------------------------------------------------- attachment (chapter 10)
    def attach(self, model: nn.Module) -> "FeedbackRule":
        """Put the rule's hooks on ``model``'s learning layers (done by the constructor).

        Raises:
            RuntimeError: the rule is attached already, or ``model`` carries another rule.
        """
        if self.hooks is not None:
            raise RuntimeError(f"{self.name} is already attached to {self._attachment()}; call rule.detach() "
                               "first, or build a new rule for the other model")
        refuse_a_second_rule(model, self.name)
        self.hooks = RuleGraph(self, model)
        self.__dict__["_model"] = model  # plain reference, not a submodule: the rule's parameters stay its own
        self._attached_to_mlp = caches_forward(model)  # an MLP: the fast path needs no hooks
        for layer in self.hooks.layers:
            layer.register_forward_pre_hook(_EagerUnderCompile(self.hooks), prepend=True)
        return self

    def detach(self) -> None:
        """Take the rule's hooks off its model (the model then trains with plain autograd, i.e. BP)."""
        hooks, self.hooks = self.hooks, None
        if hooks is None:
            return
        hooks.remove()
        # a copied model's hooks have no handles (they are not copied): find them by what they belong to
        model = self.__dict__.pop("_model", None)
        for module in (model.modules() if model is not None else hooks.layers):
            _remove_hooks_of(module, hooks)

    def _choose_path(self, model: nn.Module, path: str) -> None:
        check_path(path)
        self.forced_autograd = path == "autograd"
        self.attach(model)

    def _attachment(self) -> str:
        model = self.__dict__.get("_model")
        kind = type(model).__name__ if model is not None else "a model"
        n = self.hooks.n_layers
        return f"{kind} with {n} learning layer{'s' if n != 1 else ''}"

    # ---------------------------------------------------------------- autograd path
    def cuts(self, k: int, n_layers: int) -> bool:
        """Whether learning layer ``k`` (0-based) sees a detached input (no gradient flows past it)."""
        return True

    def tap(self, k: int, graph: RuleGraph) -> tuple:
        """``(handler, kept)`` for layer ``k``'s output: ``handler(g)`` returns the gradients of the
        tensors in ``kept`` given the gradient ``g`` at the layer's output; ``(None, ())`` for none."""
        return None, ()

    def start_forward(self, graph: RuleGraph) -> None:
        """Called at the start of every forward pass with gradients (brSF redraws its magnitudes here)."""

    def observe_target(self, y: torch.Tensor, scale: float | None = None) -> None:
        """Show the rule the batch's targets (only DRTP uses them); ``scale`` defaults to 1/batch."""

    @property
    def feedback(self) -> list:
        """The feedback matrices, one per hidden block, in the layout of the class docstring
        (``[]`` for a rule without any: BP, shallow learning)."""
        return []

    # ---------------------------------------------------------------- many networks as one (chapter 2)
    @classmethod
    def batched(cls, rules: list) -> "FeedbackRule":
        """One rule for a :class:`~dfa_lib.seeds.SeedBatch` of the networks ``rules`` (all of this class)
        were built for: what :func:`dfa_lib.seeds.batch_rules` returns."""
        raise ValueError(f"seeds train as one batched model with the MLP fast path of BP, FA, DFA and shallow "
                         f"learning; {cls.__name__} trains each seed with dfa_lib.train")

    @classmethod
    def stacked(cls, big: MLP, rules: list) -> "FeedbackRule":
        """One rule for ``big``, the block-diagonal stack of the networks ``rules`` (all of this class) were
        built for: what :func:`dfa_lib.stack.stack` returns."""
        raise ValueError(f"cannot stack rules of type {cls.__name__}")

    def extra_repr(self) -> str:
        return f"attached to {self._attachment()}" if self.hooks is not None else "not attached to a model"

    def __setstate__(self, state):
        if "graph" in state and "hooks" not in state:  # pickled before the hooks were kept as ``hooks``
            state["hooks"] = state.pop("graph")
        super().__setstate__(state)


def check_path(path: str) -> None:
    if path not in PATHS:
        raise ValueError(f"path must be 'auto' or 'autograd', got {path!r}")


def check_common_arguments(generator=None, example_input=None, path: str = "auto") -> None:
    """Check the keywords every rule's constructor takes, also where the rule does not use them
    (BP draws nothing, FA needs no example input): a wrong one is named where it was passed."""
    check_generator(generator)
    check_path(path)
    if example_input is not None:
        _check_example_input(example_input)


def _attached_rules(model: nn.Module) -> list:
    """Every rule whose hooks are on ``model``'s modules (one, unless hooks were put on by hand)."""
    rules = {}
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, _PreHook):
                rules.setdefault(id(hook.graph.rule), hook.graph.rule)
    return list(rules.values())


def rule_of(model: nn.Module) -> FeedbackRule | None:
    """The feedback rule attached to ``model`` (its hooks decide the gradients), or None for plain autograd.

    A copy of a hooked model (``copy.deepcopy``) carries a copy of the rule: ``rule_of(copy)``
    returns it.  Chapter 10 explains the hooks.
    """
    rules = _attached_rules(model)
    return rules[0] if rules else None


def detach(model: nn.Module) -> nn.Module:
    """Take whatever rule is attached to ``model`` off it and return the model, now trained by plain
    autograd (BP) in any loop.  For when the rule object is lost (a re-run notebook cell) or came
    with a copy of the model (``copy.deepcopy``).  Chapter 10 explains the hooks.
    """
    for rule in _attached_rules(model):
        rule.detach()
    return model


def refuse_a_second_rule(model: nn.Module, new: str) -> None:
    """Raise if ``model`` carries a rule already: its hooks would go on deciding the gradients."""
    old = rule_of(model)
    if old is None:
        return
    raise RuntimeError(
        f"{type(model).__name__} already carries a rule, {old!r}, whose hooks decide its gradients: {new} "
        f"would not be the rule that trains it. Take the old rule off first with old_rule.detach(), or "
        f"dfa_lib.detach(model) if you no longer have it (e.g. a notebook cell run twice), or build {new} on a "
        f"fresh model. A copy.deepcopy of a model also copies its rule: dfa_lib.detach(copy) gives a plain one")


def _remove_hooks_of(module: nn.Module, graph: RuleGraph) -> None:
    for hooks in (module._forward_pre_hooks, module._forward_hooks):
        for key in [key for key, hook in hooks.items() if getattr(hook, "graph", None) is graph]:
            del hooks[key]
            for extra in (module._forward_pre_hooks_with_kwargs, module._forward_hooks_with_kwargs,
                          module._forward_hooks_always_called):
                extra.pop(key, None)


@torch.compiler.disable(reason="the feedback rule's hooks on this learning layer run eagerly, outside the compiled "
                        "graph, so that they shape the gradients; compile without fullgraph=True (or take the rule "
                        "off with dfa_lib.detach(model) to compile plain backprop)")
def _leave_the_compiled_graph() -> None:
    """Nothing: torch.compile cannot trace this function, so it runs the rest of the layer call eagerly."""


class _EagerUnderCompile:
    """A forward pre-hook, ahead of the rule's: under ``torch.compile`` the learning layer runs eagerly.

    Traced into a compiled graph, the rule's cut (the detached input) and its tap lose their
    effect: the hidden layers got exactly zero gradients.  A call dynamo cannot trace ends the
    compiled graph before each learning layer, so the rule's hooks run as they do without compile
    and the gradients are the same; the parts between learning layers are still compiled.  Only
    with gradients: the fast path's ``forward_cached`` (no gradients) stays one compiled graph.
    """

    def __init__(self, graph: RuleGraph):
        self.graph = graph

    def __call__(self, layer, args):
        if torch.is_grad_enabled():
            _leave_the_compiled_graph()
        return None
