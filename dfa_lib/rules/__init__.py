"""Feedback rules: how the output error reaches each hidden layer.

Every rule in the FA family differs only in the teaching signal ``delta_l`` it gives
hidden layer ``l`` (row-vector convention, one row per example, ``f'`` the hidden
activation's derivative, ``e = y_hat - y`` the output error)::

    BP       delta_l = (delta_{l+1} @ W_{l+1})   * f'(a_l)   exact gradient
    FA       delta_l = (delta_{l+1} @ B_l^T)     * f'(a_l)   B_l fixed, random, shape (n_l, n_{l+1})
    DFA      delta_l = (e @ B_l^T)               * f'(a_l)   B_l fixed, random, shape (n_l, n_out)
    shallow  no signal: only the output layer learns

(In column form, as Lillicrap et al. write it: BP sends ``W^T e``, FA sends ``B e``.)
The output layer always gets ``delta_L = e``.  A rule only produces these signals; turning
them into weight updates (``dW_l = delta_l^T h_{l-1}``) is :mod:`dfa_lib.update`'s job, the
same for every rule.

**Feedback matrices: one name, one layout.**  Every rule with feedback matrices (FA, DFA,
DRTP, uSF, frSF, brSF, Kolen-Pollack) lists them as ``rule.feedback``, one per hidden block
``l = 1 .. L-1``, each in the layout of the ``B_l`` above: the first axis belongs to the block
that *receives* the signal, the second to its *source* (the next layer's output for FA, sign
symmetry and Kolen-Pollack; the network's output for DFA and DRTP).  So ``B_l`` stands where BP
has ``W_{l+1}.transpose(0, 1)``: ``W^T``, shape (n_l, n_{l+1}), for an ``nn.Linear`` layer, and
the kernel with its two channel axes swapped, shape (C_l, C_{l+1}, kh, kw), for an ``nn.Conv2d``.
Setting ``B_l = W_{l+1}.transpose(0, 1)`` (``rule.set_feedback``, FA) makes FA exactly BP on any
model.  BP and shallow learning have none (``rule.feedback == []``).  How a rule stores them (what its
``state_dict`` holds) is its own affair: FA's buffers ``B1, B2, ...``, DFA's and DRTP's one buffer
``B`` with every block's ``B_l`` as rows, frSF's and brSF's magnitudes ``R1, ...``, Kolen-Pollack's
``feedback_parameters`` in ``W``'s own layout (the optimizer steps them with W's gradient).

**Building a rule: one signature.**  Every rule is built as ``Rule(model, **common, **own)``,
with the common keywords ``generator`` (a ``torch.Generator`` for the random draws; validated and
unused by rules that draw nothing), ``example_input`` (one input batch such as ``x[:1]``; DFA and
DRTP need it on a model with conv layers to learn the block shapes, the others check and ignore it)
and ``path`` (``"auto"`` or ``"autograd"``; rules without an MLP fast path always use autograd),
plus the rule's own keywords (``dist``, ``scale``, ``weight_decay`` ...).  ``make_rule(name, model,
**kwargs)`` builds one from ``RULES`` by name.

**Adding a rule** (say Direct Kolen-Pollack): subclass :class:`FeedbackRule` in a module of its
own, give it that constructor, the ``feedback`` list in the layout above, ``cuts``/``tap`` for the
autograd path (and ``signals`` for an MLP fast path), and the class hooks that say what the rest of
the library needs to know: ``needs_hooks``, ``feedback_stands_for_weights`` (the weight-alignment
angle), ``batched`` (:mod:`dfa_lib.seeds`) and ``stacked`` (:mod:`dfa_lib.stack`); then add it to
``RULES``.  Nothing outside this package switches on a rule's type.

One module per family:

- :mod:`.base`             the :class:`FeedbackRule` interface, the ``f'`` step every rule shares, and
                           the attachment: :func:`rule_of` and :func:`detach` (one rule per model);
- :mod:`.backprop`         BP and shallow learning (no feedback matrices);
- :mod:`.random_feedback`  FA and DFA (fixed random matrices, kept as module buffers);
- :mod:`.sign_symmetry`    uSF, frSF, brSF (the signs of W, with uniform or random magnitudes);
- :mod:`.kolen_pollack`    Kolen-Pollack (feedback weights that learn W's update);
- :mod:`.drtp`             DRTP (the target, not the error, projected to every hidden block);
- :mod:`.graph`            the autograd path that applies any of them to any model of
                           ``nn.Linear``/``nn.Conv2d`` layers (chapters 10 and 11), residual
                           networks and transformers included (chapter 12);
- :mod:`.points`           :class:`FeedbackPoint`, where DFA's and DRTP's blocks end;
- :mod:`.attention`        :func:`split_attention`: ``nn.MultiheadAttention`` as two ``nn.Linear`` layers.

Introduced in chapter 1 (FA, shallow) and chapter 2 (DFA); alignment in chapter 7.
"""
from .attention import SelfAttention, split_attention
from .backprop import BP, Shallow
from .base import FeedbackRule, detach, rule_of, times_derivative
from .drtp import DRTP
from .graph import learning_layers
from .kolen_pollack import KolenPollack
from .points import FeedbackPoint, add_feedback_points
from .random_feedback import DFA, FA, RandomFeedback, fan_in_scale, init_feedback, nokland_scale
from .sign_symmetry import BRSF, FRSF, USF, SignSymmetry

RULES = {"bp": BP, "fa": FA, "dfa": DFA, "shallow": Shallow, "usf": USF, "frsf": FRSF, "brsf": BRSF,
         "kp": KolenPollack, "drtp": DRTP}


def make_rule(name: str, model, **kwargs) -> FeedbackRule:
    """Build a rule for ``model`` by name: one of ``RULES`` (case does not matter).

    Every rule takes the common keywords ``generator``, ``example_input`` and ``path`` (see the
    package docstring), so one call builds any of them, e.g.
    ``make_rule(name, model, generator=g, example_input=x[:1])``; ``kwargs`` may add the rule's own
    (``weight_decay=`` for Kolen-Pollack, ``scale=`` ...).
    """
    key = name.lower()
    if key not in RULES:
        raise ValueError(f"unknown rule {name!r}; choose one of {sorted(RULES)}")
    cls = RULES[key]
    return cls(model, **kwargs)


__all__ = ["BP", "Shallow", "FA", "DFA", "USF", "FRSF", "BRSF", "SignSymmetry", "KolenPollack", "DRTP",
           "FeedbackRule", "RandomFeedback", "RULES", "make_rule", "learning_layers",
           "init_feedback", "nokland_scale", "fan_in_scale", "times_derivative", "rule_of", "detach",
           "FeedbackPoint", "add_feedback_points", "SelfAttention", "split_attention"]
