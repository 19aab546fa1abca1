"""One-time checks of what a user hands to :func:`dfa_lib.train`, and of feedback matrices.

Everything here runs once per call, when the data are prepared or a matrix is set, never
inside the training loop, so a valid run computes exactly what it did without them.  Each
check ends a bad input with an error that names the problem and the fix, instead of an
error from deep inside torch (or no error at all):

- :func:`check_epochs`: any integral number of epochs (``numpy.int64`` included).
- :func:`check_inputs`: empty train or test sets; NaN or infinite input rows.
- :class:`FeedbackChecks`: the feedback matrices of FA and DFA keep their shapes when set
  as attributes (the rule checks its own buffers), and a ``state_dict`` only loads into a rule of the sizes it was drawn for.
- :func:`check_generator`: a rule's ``generator`` argument is a ``torch.Generator`` (or None).

Labels are checked and converted in :mod:`dfa_lib.targets`; output/loss pairs in
:func:`dfa_lib.losses.check_loss`.
"""
from __future__ import annotations

import operator

import torch


def check_epochs(epochs) -> int:
    """``epochs`` as a Python int; any integral type (int, ``numpy.int64``, a 0-dim integer tensor)."""
    try:
        if isinstance(epochs, bool):
            raise TypeError
        value = operator.index(epochs)
    except TypeError:
        value = None
    if value is None or value < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    return value


def check_inputs(x_train: torch.Tensor, x_test: torch.Tensor) -> None:
    """Refuse an empty train or test set, and inputs with NaN or infinite entries.

    Called by :func:`dfa_lib.train` once, on the inputs already converted to the model's
    dtype (so values that overflow it count as infinite).  The finite check is one
    reduction per set; only when its sum is not finite are the bad rows counted.
    """
    for name, x, role in (("x_train", x_train, "training"), ("x_test", x_test, "test")):
        if len(x) == 0:
            hint = (
                "train() needs at least one example to learn from"
                if role == "training"
                else "train() evaluates on the test set after every epoch; to evaluate on the training set "
                "instead, pass Data(x, y, x, y)"
            )
            raise ValueError(f"the {role} set is empty ({name} has shape {tuple(x.shape)}); {hint}")
        if x.is_floating_point() and not torch.isfinite(x.sum()):
            bad = ~torch.isfinite(x).reshape(len(x), -1).all(1)
            n_bad = int(bad.sum())
            if n_bad:  # else the sum merely overflowed: every entry is finite
                first = bad.nonzero()[:5, 0].tolist()
                raise ValueError(
                    f"{name} has {n_bad} of {len(x)} rows with NaN or infinite values (rows {first}"
                    f"{', ...' if n_bad > 5 else ''}); drop or repair them before training, e.g. "
                    f"keep = torch.isfinite({name}).all(1)"
                )


def check_generator(generator) -> None:
    """Refuse a ``generator`` that is not a ``torch.Generator`` (a seed such as ``0``, a numpy generator).

    Checked when a rule is built, so the mistake is named there instead of deep inside ``torch.rand``
    (or, for brSF, at the first forward pass).  ``None`` means torch's global random stream.
    """
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, e.g. torch.Generator().manual_seed(0), or None for torch's "
            f"global random stream; got {type(generator).__name__} {generator!r}"
        )


class FeedbackChecks:
    """Mixin for rules whose feedback matrices are module buffers (FA and DFA).

    * Assigning a buffer directly (``rule.B = ...``) goes through the rule's own check,
      ``check_feedback_buffer(name, value)``, which raises for a matrix that does not fit (the rule
      knows what its buffers hold); reading ``rule.B`` is untouched (no cost in the training loop).
    * ``state_dict()`` records the layout the matrices were drawn for (the network's sizes and
      the feedback shapes), and ``load_state_dict()`` refuses a rule of another layout before
      copying anything: DFA keeps every hidden layer's matrix in one stacked buffer, so two
      networks whose hidden widths add up to the same total would otherwise swap rows between
      layers silently.

    Needs ``name``, ``expected_shapes()`` and ``check_feedback_buffer(name, value)`` on the class;
    uses ``sizes`` (and ``block_shapes``) where the rule has them.
    """

    def __setattr__(self, name, value):
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            self.check_feedback_buffer(name, value)
        super().__setattr__(name, value)

    def _feedback_layout(self) -> dict:
        sizes, blocks = getattr(self, "sizes", None), getattr(self, "block_shapes", None)
        layout = {"rule": self.name, "sizes": None if sizes is None else list(sizes),
                  "feedback_shapes": [list(s) for s in self.expected_shapes()]}
        if blocks is not None:
            layout["block_shapes"] = [None if b is None else list(b) for b in blocks]
        return layout

    @staticmethod
    def _describe(layout: dict) -> str:
        if layout.get("sizes") is not None:
            return f"a network of sizes {layout['sizes']}"
        return f"feedback shapes {layout.get('feedback_shapes')}"

    def get_extra_state(self) -> dict:
        return self._feedback_layout()

    def set_extra_state(self, state) -> None:
        pass  # checked in _load_from_state_dict, before any matrix is copied

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        saved, current = state_dict.get(prefix + "_extra_state"), self._feedback_layout()
        if isinstance(saved, dict) and any(saved[k] != current[k] for k in saved.keys() & current.keys()):
            where = f" ({prefix[:-1]})" if prefix else ""
            error_msgs.append(
                f"{self.name} feedback{where} was saved for {self._describe(saved)}, but this rule belongs to "
                f"{self._describe(current)}: its matrices would land on the wrong layers. Build the model and the "
                f"rule like the saved ones before loading this state_dict (nothing of the rule was loaded)"
            )
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
