"""Error rates, confusion matrices and alignment angles.

Introduced in chapter 1 (error rates, angles) and chapter 3 (confusion matrix);
the layer-by-layer alignment study is chapter 7.
"""
from __future__ import annotations

import math

import torch

from .models import MLP, ForwardCache
from .rules import BP, FeedbackRule, rule_of
from .targets import Targets


def error_rate(out: torch.Tensor, targets: Targets) -> float:
    """The task's error: misclassified fraction, wrong-side fraction, or normalised squared error."""
    if targets.kind in ("classification", "binary"):
        return error_sum(out, targets).item() / len(out)
    return (error_sum(out, targets) / (targets.values**2).sum()).item()


def error_sum(out: torch.Tensor, targets: Targets) -> torch.Tensor:
    """The task's error summed over rows, as a 0-dim tensor (no host sync).

    Wrong rows for classification and binary targets, squared error for regression.  The
    training loop adds these up over an epoch; :func:`error_rate` normalises one set's.
    For K networks trained together (``out`` of shape (K, N, n_out), :mod:`dfa_lib.seeds`)
    the sums are per network, shape (K,).
    """
    if targets.kind == "regression":
        return ((out - targets.values) ** 2).sum((-2, -1))
    return wrong_count(out, targets)


def wrong_count(out: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Number of wrong rows as a 0-dim tensor (no host sync), for classification and binary tasks."""
    if targets.kind == "classification":
        return (out.argmax(-1) != targets.labels).sum(-1)
    t = targets.threshold
    return ((out > t) != (targets.values > t)).any(-1).sum(-1)


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Counts ``C[i, j]`` of examples of class i predicted as j (rows: truth)."""
    idx = labels.long() * n_classes + pred.long()
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def angle_degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle between two tensors seen as flat vectors, in degrees (90 for a zero tensor).

    Computed as ``2 atan2(|u - v|, |u + v|)`` of the unit vectors (Kahan's form), which stays
    exact near 0 and 180 degrees, where ``acos`` of the cosine loses half the digits: identical
    gradients read 0, not a few 1e-6 degrees of rounding.
    """
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    norm_a, norm_b = a.norm(), b.norm()
    if norm_a == 0 or norm_b == 0:
        return 90.0
    u, v = a / norm_a, b / norm_b
    return math.degrees(2 * math.atan2((u - v).norm().item(), (u + v).norm().item()))


def alignment_from_cache(model: MLP, cache: ForwardCache, e: torch.Tensor, signals: list) -> dict:
    """Angles between a rule's ``signals`` and BP's, computed on the same forward ``cache``.

    Returns ``{"signal": [...], "update": [...]}`` with one angle (degrees) per hidden
    layer: between the teaching signals ``delta_l`` (N x n_l, as flat vectors) and between
    the weight updates ``delta_l^T h_{l-1}``.  No model copy, no second forward pass:
    BP is just one more rule applied to the same cache.  Explained in chapter 7.
    """
    bp = BP().signals(model, cache, e)
    out = {"signal": [], "update": []}
    for l in range(model.n_hidden):
        if signals[l] is None:
            out["signal"].append(90.0)
            out["update"].append(90.0)
            continue
        h_in = cache.inputs[l]
        out["signal"].append(angle_degrees(signals[l], bp[l]))
        out["update"].append(angle_degrees(signals[l].T @ h_in, bp[l].T @ h_in))
    return out


def default_loss(model: torch.nn.Module) -> str:
    """The loss :func:`alignment_angles` and :func:`alignment` measure with when none is named:
    ``"bce"``, :func:`dfa_lib.train`'s default, for every model (all return logits and the loss
    applies the output function).  Name the loss you train with to measure against it (chapters 10
    and 11 train and measure with ``"ce"``).
    """
    return "bce"


def alignment_angles(model: MLP, rule: FeedbackRule, x: torch.Tensor, y: torch.Tensor, loss: str | None = None) -> dict:
    """Angles between ``rule``'s hidden signals/updates and BP's on a batch ``(x, y)``.

    ``y`` may be class indices, one-hot rows or real targets, as for training.  As
    :func:`dfa_lib.train` does, ``x`` and the rule's matrices are converted to the model's
    dtype and device.  ``loss=None`` measures with :func:`default_loss` (``"bce"``).
    """
    from .losses import check_loss, output_error
    from .targets import labels_as_tensor, prepare_targets

    loss = check_loss(default_loss(model) if loss is None else loss)
    param = next(model.parameters())
    x = x.to(param.device, param.dtype)  # no copy when they match already
    rule.to(device=param.device, dtype=param.dtype)
    y = labels_as_tensor(y).to(param.device)
    t = prepare_targets(y, model.sizes[-1], loss, len(x), dtype=x.dtype)
    cache = model.forward_cached(x)
    e = output_error(loss, cache.logits, t.values)
    return alignment_from_cache(model, cache, e, rule.signals(model, cache, e))


def alignment(model: torch.nn.Module, rule: FeedbackRule, x: torch.Tensor, y: torch.Tensor,
              loss: str | None = None) -> dict:
    """Angles between ``rule`` and BP on any model, for one batch ``(x, y)`` (chapters 10, 11 and 12).

    Returns a dict of lists, one angle (degrees) per hidden block:

    - ``"signal"``: between the gradients each rule sends to a block's output: one per learning
      layer after the first (its input), or one per :class:`~dfa_lib.FeedbackPoint` for DFA and
      DRTP on a model with points (the point's input);
    - ``"update"``: between the weight updates of each learning layer but the last;
    - ``"weight"``: between the forward weight and the backward weight that replaces it
      (BioTorch's "layer alignment"), for learning layers 2..L; None where a rule has no
      backward weight (DFA, DRTP, shallow, BP).

    A block the rule sends no signal to (shallow learning) reads 90 degrees.  The rule's hooks
    must be on ``model`` (every rule but BP puts them on the model it is built on, an MLP
    included).  ``loss=None`` measures with :func:`default_loss` (``"bce"``).  ``x`` and the rule are converted to the model's device and dtype.

    Both rules' gradients come from ONE forward pass in the model's current mode, so under
    dropout they see the same mask, and a rule that draws at every forward (brSF) draws once.
    The pass is a *measuring* pass: every learning layer's input is cut and its tap can give either
    rule's gradient at that input (BP's with W, the rule's with its handler), every feedback point
    passes BP's gradient and stops the rule's; two backward passes on the one graph, one per rule,
    give both sets of gradients on any graph, skip connections and attention included
    (:meth:`~dfa_lib.rules.graph.RuleGraph.measuring_tap`).  The model is left as it was: its buffers (batch norm's
    running statistics) are restored and nothing is written to ``.grad``.  An
    :class:`~dfa_lib.models.MLP` on a fast path uses :func:`alignment_angles`.
    """
    from .targets import labels_as_tensor

    graph = rule.hooks  # an MLP's rule carries them too, even where train() takes the fast path
    if graph is None:
        raise ValueError(f"{rule.name} is not attached to a model: build it on the model, {type(rule).__name__}(model), "
                         "and measure that model (BP needs no hooks: its angles to itself are 0)")
    if rule_of(model) is not rule:
        raise ValueError(f"{rule.name} is attached to another model than the one measured: build the rule on "
                         "the model you measure")
    loss = default_loss(model) if loss is None else loss
    param = next(model.parameters())
    x = x.to(param.device, param.dtype)  # no copy when they match already
    rule.to(device=param.device, dtype=param.dtype)
    y = labels_as_tensor(y).to(param.device)

    was_active = graph.active
    saved = _ModelState(model)
    try:
        with torch.enable_grad():
            graph.active, graph.measuring = True, True  # every layer's input cut, both rules' handlers on the taps
            mean_loss, targets = _mean_loss(model, x, y, loss)
            blocks = graph.block_outputs()
            weights = [layer.weight for layer in graph.layers[:-1]]
            graph.backward_mode = "bp"
            bp_signals, bp_updates = _measured(mean_loss, blocks, weights)
            rule.observe_target(targets)  # DRTP's handler takes it, once, in the rule's backward
            graph.backward_mode = "rule"
            signals, updates = _measured(mean_loss, blocks, weights)
    finally:
        graph.active, graph.measuring, graph.backward_mode = was_active, False, "rule"
        graph.inputs, graph.outputs, graph.point_inputs = [], [], []  # drop the measuring pass's autograd graph
        saved.restore()

    def angle(a, b):
        return 90.0 if a is None or b is None else angle_degrees(a, b)

    # a backward weight that stands in for W, in W's own layout (the angle reads the same in any common layout)
    weights = ([B.transpose(0, 1) for B in rule.feedback] if rule.feedback_stands_for_weights
               else [None] * (len(graph.layers) - 1))
    return {
        "signal": [angle(s, b) for s, b in zip(signals, bp_signals)],
        "update": [angle(u, b) for u, b in zip(updates, bp_updates)],
        "weight": [None if B is None else angle_degrees(B, layer.weight.detach())
                   for B, layer in zip(weights, graph.layers[1:])],
    }


class _ModelState:
    """What a forward pass may change in a model: its buffers (batch norm's running mean and variance,
    ``num_batches_tracked``) and every submodule's train/eval flag; :meth:`restore` puts them back."""

    def __init__(self, model: torch.nn.Module):
        self.buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self.modes = [(m, m.training) for m in model.modules()]

    def restore(self) -> None:
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        for m, training in self.modes:
            m.training = training


def _mean_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> tuple:
    """The batch's mean loss from one forward pass, and the prepared targets (what training uses)."""
    from .losses import check_loss, per_example_loss
    from .targets import prepare_targets

    check_loss(loss)
    out = model(x)  # logits, for every model
    t = prepare_targets(y, out.shape[1], loss, len(x), dtype=out.dtype)
    return per_example_loss(loss, out, t.values).mean(), t.values


def _measured(mean_loss: torch.Tensor, blocks: list, weights: list) -> tuple:
    """The gradients of ``mean_loss`` at the block outputs and at the weights, from one backward on the
    measuring pass's graph (its taps give the rule's or BP's gradients, :meth:`RuleGraph.measuring_tap`)."""
    wanted = [t for t in blocks + weights if t.requires_grad]
    got = torch.autograd.grad(mean_loss, wanted, retain_graph=True, allow_unused=True) if wanted else ()
    found = {id(t): g for t, g in zip(wanted, got)}
    return [found.get(id(h)) for h in blocks], [found.get(id(w)) for w in weights]


