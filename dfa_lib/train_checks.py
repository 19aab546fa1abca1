"""Checks :func:`dfa_lib.train` makes once, before the first step, of what it was handed.

Each catches a mistake that would otherwise end deep inside torch, or not end at all (the
weights silently stay where they are), and names it in the user's terms with the fix:

- :func:`check_rule`: a rule class or a rule's name in place of a rule built for the model;
- :func:`check_data`: a ``DataLoader`` or a tuple in place of :class:`dfa_lib.Data`;
- :func:`check_same_features`: test examples of another shape than the training examples;
- :func:`check_scores`: a model that returns a tuple, or probabilities where ``loss="ce"``
  wants scores (a final ``nn.Softmax``);
- :func:`check_optimizer`: an optimizer built for another model (a stale notebook cell), or
  one that lacks the rule's own learning weights (Kolen-Pollack's feedback weights);
- :func:`check_single_row_batches`: batch norm meeting a training batch of one row;
- :func:`check_seed_batch`: what a :class:`~dfa_lib.seeds.SeedBatch` cannot train with.

Like :mod:`dfa_lib.checks`, nothing here runs inside the training loop, so a valid run
computes exactly what it did without them.  The autograd path they guard is chapter 10's.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from .rules import RULES, FeedbackRule, rule_of
from .seeds import SeedBatch

_DATA_FIELDS = ("x_train", "y_train", "x_test", "y_test")
_BUILD_DATA = "build one with dfa_lib.Data(x_train, y_train, x_test, y_test) from tensors or numpy arrays"


def check_rule(rule) -> None:
    """A rule must be an instance built for the model, not its class or its name."""
    if isinstance(rule, FeedbackRule):
        return
    if isinstance(rule, type) and issubclass(rule, FeedbackRule):
        raise TypeError(f"train() needs a rule built for your model, not the class {rule.__name__}: "
                        f"pass {rule.__name__}(model)")
    if isinstance(rule, str):
        cls = RULES.get(rule.lower())
        if cls is None:
            raise TypeError(f"train() needs a rule built for your model, not the string {rule!r} (no rule has "
                            f"that name; the rules are {sorted(RULES)})")
        raise TypeError(f"train() needs a rule built for your model, not the string {rule!r}: pass "
                        f"{cls.__name__}(model), or dfa_lib.make_rule({rule!r}, model)")
    raise TypeError(f"train()'s rule must be a feedback rule built for your model (e.g. DFA(model)), "
                    f"got {type(rule).__name__}")


def check_model_carries(model: nn.Module, rule: FeedbackRule) -> None:
    """The model must not carry another rule's hooks: in any later loop those would train it, not ``rule``.

    A model that was built with one rule and is handed to train() with another, or a copy of a
    hooked model (``copy.deepcopy`` copies the rule too) trained as a "BP baseline", would silently
    be trained by a rule nobody named.
    """
    attached = rule_of(model)
    if attached is None or attached is rule:
        return
    raise ValueError(
        f"the model carries another rule, {attached!r}, whose hooks decide its gradients, but train() was "
        f"given {rule.name}: train it with the rule it carries, or take that rule off first with "
        f"dfa_lib.detach(model) (a copy.deepcopy of a model copies its rule too)")


def check_data(data) -> None:
    """``data`` must hold the four sets as tensors (a :class:`dfa_lib.Data`)."""
    if all(hasattr(data, name) for name in _DATA_FIELDS):
        return
    if isinstance(data, DataLoader):
        raise TypeError(
            "train() takes the whole data set as tensors, not a DataLoader (it draws its own mini-batches: "
            "batch_size=...): " + _BUILD_DATA + "; to get the tensors out of a dataset, e.g. "
            "x_train, y_train = next(iter(DataLoader(train_set, batch_size=len(train_set))))")
    if isinstance(data, (tuple, list)):
        raise TypeError(f"train() takes a dfa_lib.Data, not a {type(data).__name__} of {len(data)}: " + _BUILD_DATA
                        + (" (here dfa_lib.Data(*data))" if len(data) == 4 else ""))
    raise TypeError(f"train() takes a dfa_lib.Data, got {type(data).__name__}: " + _BUILD_DATA)


def check_same_features(x_train: torch.Tensor, x_test: torch.Tensor) -> None:
    """The test examples must have the shape of the training examples."""
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"x_test's examples have shape {tuple(x_test.shape[1:])} but x_train's have {tuple(x_train.shape[1:])}: "
            "the test set must have the same features as the training set (the same columns, or image size)")


def check_scores(out, loss: str, n_out_seen: int | None = None) -> None:
    """The model's output for a few rows: one tensor of scores, not a tuple, and not probabilities under
    ``loss="ce"`` (which would take the softmax of a softmax and learn from a flattened error)."""
    if not torch.is_tensor(out):
        what = f"a {type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
        raise TypeError(
            f"the model returned {what}; train() needs it to return one tensor of scores (logits) of shape "
            "(batch, n_outputs): return only the scores from forward(), or wrap the model in a module that does")
    if out.dim() != 2:
        raise ValueError(f"the model must return scores of shape (batch, n_outputs); it returned shape "
                         f"{tuple(out.shape)}")
    if loss == "ce" and out.shape[1] >= 2 and _looks_like_probabilities(out):
        raise ValueError(
            "the model's outputs are probabilities (every row is >= 0 and sums to 1: a final nn.Softmax?), but "
            "loss='ce' applies the softmax itself to the model's scores: drop the softmax from the model and return "
            "the scores (logits); predict with model(x).softmax(1) or argmax")


def _looks_like_probabilities(out: torch.Tensor) -> bool:
    out = out.detach().double()
    if not torch.isfinite(out).all():
        return False
    return bool((out >= 0).all()) and torch.allclose(out.sum(1), torch.ones((), dtype=out.dtype, device=out.device),
                                                     atol=1e-4)


def check_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, rule: nn.Module) -> None:
    """The optimizer must hold the model's weights (not another model's), and the rule's own learning
    weights where it has any (Kolen-Pollack's feedback weights)."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if trainable and not any(id(p) in held for p in trainable):
        raise ValueError(
            f"the optimizer holds none of this {type(model).__name__}'s weights: it was built for another model "
            "(a notebook cell run before the model was made again?), so training would change nothing. Build it "
            "for this model: optimizer = torch.optim.SGD(model.parameters(), lr=...)")
    missing = [p for p in rule.parameters() if p.requires_grad and id(p) not in held]
    if missing:
        raise ValueError(
            f"{getattr(rule, 'name', type(rule).__name__)} learns weights of its own ({len(missing)} tensors, "
            "rule.parameters()) that the optimizer does not hold, so they would never change (Kolen-Pollack would "
            "run as plain feedback alignment): build the optimizer over both, e.g. "
            "torch.optim.SGD(list(model.parameters()) + list(rule.parameters()), lr=...)")


class BatchNormInputs:
    """Records, during one probing forward pass, how many values per channel each batch-norm layer
    sees for one example (1 for ``BatchNorm1d`` on ``(N, C)``, ``H*W`` for ``BatchNorm2d``)."""

    def __init__(self, model: nn.Module):
        self.per_row: dict[str, int] = {}
        self.handles = [m.register_forward_pre_hook(self._record(name)) for name, m in model.named_modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _record(self, name: str):
        def hook(module, args):
            x = args[0]
            self.per_row[name] = math.prod(x.shape[2:]) if x.dim() > 2 else 1

        return hook

    def __enter__(self) -> "BatchNormInputs":
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()


def check_single_row_batches(per_row: dict, n: int, batch_size: int) -> None:
    """Batch norm cannot normalise a training batch of one row when a channel has one value per row
    (``BatchNorm1d``): refuse a batch size that leaves one, and say which would not."""
    one_value = [name for name, values in per_row.items() if values == 1]
    if not one_value:
        return
    last = n - (math.ceil(n / batch_size) - 1) * batch_size  # rows in the epoch's last batch
    if last != 1:
        return
    where = f"batch norm (layer {one_value[0]!r} of the model)" if one_value[0] else "batch norm"
    if n == 1:
        raise ValueError(f"{where} cannot train on a set of one example: it needs at least two rows per training "
                         "batch; use more examples, or a model without batch norm")
    which = ("batches of one row" if batch_size == 1 else
             f"{n} examples in batches of {batch_size} leave a last batch of one row in every epoch")
    raise ValueError(
        f"{where} cannot normalise a training batch of one row, but {which}. Choose a batch size that leaves "
        f"none, e.g. batch_size={_batch_size_without_single_row(n, batch_size)}, or drop one training example "
        "(e.g. Data(x_train[:-1], y_train[:-1], x_test, y_test)): train() does not change which rows train by itself")


def _batch_size_without_single_row(n: int, batch_size: int) -> int:
    """The batch size nearest ``batch_size`` (at least 2) whose last batch is not a single row."""
    for distance in range(1, n + 1):
        for b in (batch_size + distance, batch_size - distance):
            if 2 <= b <= n and n % b != 1:
                return b
    return n


def check_seed_batch(model: SeedBatch, rule: FeedbackRule, averaging: str) -> None:
    """K networks trained as one (chapter 6) need the MLP fast path, feedback stacked one per network,
    and batches that average the same way in every network."""
    K = model.n_nets
    if not rule.uses_fast_path(model):
        raise ValueError(f"a SeedBatch trains on the MLP fast path of BP, FA, DFA and shallow learning; {rule.name} "
                         "as given trains through autograd hooks: build the batch's rule with dfa_lib.batch_rules from "
                         "each network's own rule, or train each network with train")
    unstacked = [(name, tuple(b.shape)) for name, b in rule.named_buffers() if b.dim() < 3 or b.shape[0] != K]
    if unstacked:
        name, shape = unstacked[0]
        raise ValueError(f"{rule.name}'s feedback {name!r} has shape {shape}, "
                         f"not one matrix per network of the SeedBatch ({K}, ...): build the rule with "
                         "dfa_lib.batch_rules([rule_1, ..., rule_K]) from each network's own rule")
    if averaging == "class":
        raise ValueError("averaging='class' cannot train a SeedBatch: each network's batch holds its own classes, so "
                         "the per-class means would differ in number between networks; train each network with "
                         "train(network, ..., averaging='class')")
