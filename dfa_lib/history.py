"""What a training run leaves behind: per-epoch metrics and anything callbacks record.

Introduced in chapter 1 (``book/01_linear_fa.ipynb``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class History:
    """Per-epoch metrics of one run.  Entry 0 is the untrained network when ``eval_initial``.

    Errors are fractions (multiply by 100 for %); for regression they are normalised
    squared errors.  ``target_kind`` says which the run used: ``"classification"``,
    ``"binary"`` or ``"regression"`` (see :mod:`dfa_lib.targets`; force it with
    ``train(..., kind=...)``).  ``records`` holds anything a callback adds (e.g. alignment angles).
    ``stopped_early`` says why a run ended before its last epoch: the tolerance was met, it was
    interrupted by hand (:attr:`interrupted`), or it diverged (the history a
    :class:`~dfa_lib.step.TrainingDivergedError` carries).
    """

    rule: str
    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_error: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_error: list = field(default_factory=list)
    records: dict = field(default_factory=dict)
    stopped_early: str | None = None
    seconds: float = 0.0
    target_kind: str | None = None

    @property
    def interrupted(self) -> bool:
        """True when the run was stopped by hand (a ``KeyboardInterrupt``); ``stopped_early`` says when."""
        return self.stopped_early is not None and self.stopped_early.startswith("interrupted")

    def record(self, key: str, value) -> None:
        """Append ``value`` to ``records[key]`` (used by callbacks)."""
        self.records.setdefault(key, []).append(value)

    def log(self, epoch: int, train: tuple, test: tuple) -> None:
        """Append one epoch's ``(loss, error)`` pairs on the training and test sets."""
        self.epoch.append(epoch)
        self.train_loss.append(train[0])
        self.train_error.append(train[1])
        self.test_loss.append(test[0])
        self.test_error.append(test[1])

    def final(self, key: str = "test_error"):
        """The last value of a metric."""
        return getattr(self, key)[-1] if hasattr(self, key) else self.records[key][-1]

    def plot(self, keys: Sequence[str] = ("train_error", "test_error"), ax=None, label: str | None = None,
             percent: bool = True, logy: bool = False, **kwargs):
        """One line per metric against epochs; returns the axes."""
        from .plot import plot_history

        return plot_history(self, keys=keys, ax=ax, label=label, percent=percent, logy=logy, **kwargs)

    def __repr__(self) -> str:
        last = f", test_error={self.test_error[-1]:.4g}" if self.test_error else ""
        return f"History({self.rule}, epochs={self.epoch[-1] if self.epoch else 0}{last})"
