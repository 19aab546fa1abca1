"""A set of runs: build them in a fixed order, train them concurrently, read them off by seed.

Chapter 3 explains the recipe and every chapter that compares several runs follows it
(chapters 3, 4, 5, 10 and 11):

1. :func:`build_runs` builds every run, one after another in the order its keys are listed, and
   returns a zero-argument job per run.  Building draws the initial weights and feedback
   matrices; doing it in one thread, in a fixed order, is what makes every number the same on
   every execution (:mod:`dfa_lib.parallel` says why a draw made while runs overlap would not be).
2. :func:`train_runs` trains the jobs two at a time, one core each (:func:`~dfa_lib.parallel.run_concurrently`),
   the longest first (:func:`longest_first`), and returns the results keyed as the jobs were.
3. :func:`per_seed` collects one run's result over its seeds, in the seeds' order; ``dfa_lib.spread``
   writes them as "mean [min, max]".

:class:`AlignmentRecorder` records the angles between a rule's teaching signals and backprop's
while a run trains (the angles are explained in chapter 7, their any-model form in chapter 10),
and :func:`recorded_angles` stacks what it recorded over seeds.
"""
from __future__ import annotations

from typing import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch

from .metrics import alignment, alignment_from_cache
from .parallel import run_concurrently


def batch_order(seed: int = 0) -> torch.Generator:
    """Seed ``seed``'s shuffling stream: every run of one seed sees the same mini-batches, epoch by epoch.

    Chapters 3 and 4 shuffle with it, so their runs of a seed differ only in what they compare.
    """
    return torch.Generator().manual_seed(1 + 100 * seed)


def build_runs(keys: Iterable[Hashable], prepare: Callable[[Hashable], Callable]) -> dict:
    """``{key: prepare(key)}``, built one key after another in the order of ``keys`` (chapter 3).

    ``prepare(key)`` builds a run (model, rule, optimizer, shuffling generator) and returns a
    zero-argument job that trains it.  Every random draw happens here, in this order, before any
    run trains, so the draws and every number that follows are the same whatever order the runs
    then train in.

    Raises:
        ValueError: a key is listed twice (the second run would silently replace the first).
        TypeError: ``prepare`` returned something that is not a zero-argument function.
    """
    jobs = {}
    for key in keys:
        if key in jobs:
            raise ValueError(f"run {key!r} is listed twice: every run needs its own key")
        job = prepare(key)
        if not callable(job):
            raise TypeError(f"prepare({key!r}) returned a {type(job).__name__}, not a job: return a zero-argument "
                            "function that trains the run, e.g. lambda: train(model, rule, data)")
        jobs[key] = job
    return jobs


def longest_first(keys: Iterable[Hashable], cost: Mapping | Callable) -> list:
    """``keys`` sorted by decreasing ``cost`` (a mapping from key or a function of the key); ties keep their order.

    :func:`~dfa_lib.parallel.run_concurrently` starts the jobs in the order given, each as soon as a
    core is free: with the longest first, the short ones fill the gaps at the end instead of one
    core training a last long run alone while the other idles (chapters 10 and 11 give each rule
    its measured time per epoch relative to BP's).

    Raises:
        KeyError: ``cost`` is a mapping without an entry for one of the keys.
    """
    keys = list(keys)
    if isinstance(cost, Mapping):
        missing = [key for key in keys if key not in cost]
        if missing:
            raise KeyError(f"no cost given for run(s) {missing}: give every run a relative cost")
        of = cost.__getitem__
    elif callable(cost):
        of = cost
    else:
        raise TypeError(f"cost must be a mapping from run key to cost or a function of the key, got {type(cost).__name__}")
    return sorted(keys, key=lambda key: -of(key))  # sorted is stable: equal costs keep the build order


def train_runs(jobs: Mapping, cost: Mapping | Callable | None = None, workers: int = 2,
               progress: bool | None = None) -> dict:
    """Train every job of ``jobs`` (from :func:`build_runs`), ``workers`` at a time, one core each.

    With ``cost`` the jobs start longest first (:func:`longest_first`); without it, in the order
    given.  The results come back as a dict in the order of ``jobs``, whatever order the jobs
    trained in, so a chapter reads them the same way either way.
    """
    order = list(jobs) if cost is None else longest_first(jobs, cost)
    done = run_concurrently({key: jobs[key] for key in order}, workers=workers, progress=progress)
    return {key: done[key] for key in jobs}


def per_seed(results: Mapping, run, seeds: Sequence[int], value: Callable | None = None) -> list:
    """``[value(results[run, seed]) for seed in seeds]``: one run's results over its seeds (chapter 3).

    ``run`` is the key's part before the seed: a name (keys ``(name, seed)``) or a tuple (keys
    ``(*run, seed)``).  Without ``value`` the results themselves come back.  ``dfa_lib.spread`` of
    numbers writes them as "mean [min, max]", the form every chapter reports seeds in.

    Raises:
        KeyError: there is no result for one of the seeds (names the missing key and the known ones).
    """
    prefix = run if isinstance(run, tuple) else (run,)
    out = []
    for seed in seeds:
        key = (*prefix, seed)
        if key not in results:
            known = ", ".join(map(repr, list(results)[:12])) + (", ..." if len(results) > 12 else "")
            raise KeyError(f"no run {key!r} among the results (they hold {known})")
        out.append(results[key] if value is None else value(results[key]))
    return out


class AlignmentRecorder:
    """Records the angles between a rule's and backprop's teaching signals while a run trains.

    Give its :meth:`on_step` (and, to measure the trained network too, its :meth:`on_epoch`) to
    :func:`dfa_lib.train`.  At every step it measures, it appends to ``history.records``:

    - ``"step"``: the number of weight updates made before the measurement (0 for the initial weights);
    - ``"signal"`` and ``"update"``: one angle (degrees) per hidden block, as in chapter 7;
    - ``"weight"`` (with ``probe`` only): between each forward weight and the backward weight
      replacing it, None where a rule has none (chapter 10).

    Two ways to measure:

    - without ``probe``, on the step's own mini-batch, from the forward pass the step already made
      (:func:`~dfa_lib.metrics.alignment_from_cache`; an :class:`~dfa_lib.models.MLP` on the fast
      path, chapter 7);
    - with ``probe=(x, y)`` and ``rule``, on that fixed batch, for any model
      (:func:`~dfa_lib.metrics.alignment`, chapters 10 and 11).

    When to measure:

    - ``at``: the update counts to measure at (e.g. ``{0, 25, 50, 100}``);
    - ``every``: at every ``every``-th step of each epoch (steps counted from 1 within the epoch);
    - ``final_epoch``: also after that epoch's evaluation (:meth:`on_epoch`), on the trained
      weights, counted as ``final_epoch * steps_per_epoch`` updates.
    """

    def __init__(self, steps_per_epoch: int, *, at: Iterable[int] | None = None, every: int | None = None,
                 final_epoch: int | None = None, probe: tuple | None = None, rule=None, loss: str | None = None):
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}")
        if at is None and every is None and final_epoch is None:
            raise ValueError("say when to measure: at=<update counts>, every=<steps> and/or final_epoch=<epoch>")
        self.at = None if at is None else frozenset(at)
        if self.at is not None and any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.at):
            raise ValueError(f"at must hold update counts (integers >= 0), got {sorted(self.at, key=str)}")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if (probe is None) != (rule is None):
            raise ValueError("measuring on a probe batch needs both probe=(x, y) and the rule to measure")
        self.steps_per_epoch, self.every, self.final_epoch = steps_per_epoch, every, final_epoch
        self.probe, self.rule, self.loss = probe, rule, loss

    def due(self, epoch: int, step: int) -> bool:
        """Whether step ``step`` (from 1) of epoch ``epoch`` (from 1) is one to measure at."""
        return (self.at is not None and self.updates_before(epoch, step) in self.at) or \
               (self.every is not None and step % self.every == 0)

    def updates_before(self, epoch: int, step: int) -> int:
        """The weight updates made before step ``step`` of epoch ``epoch`` (both counted from 1)."""
        return (epoch - 1) * self.steps_per_epoch + step - 1

    def on_step(self, history, epoch, step, model, cache=None, e=None, signals=None) -> None:
        """``train``'s ``on_step``: after the step's backward pass, before its update."""
        if self.due(epoch, step):
            self.measure(history, self.updates_before(epoch, step), model, cache, e, signals)

    def on_epoch(self, history, epoch, model) -> None:
        """``train``'s ``on_epoch``: measures the trained weights after ``final_epoch``."""
        if self.final_epoch is not None and epoch == self.final_epoch:
            self.measure(history, epoch * self.steps_per_epoch, model)

    def measure(self, history, updates: int, model, cache=None, e=None, signals=None) -> None:
        """Append the angles now, labelled with ``updates``."""
        if self.probe is not None:
            angles = alignment(model, self.rule, *self.probe, loss=self.loss)
        elif cache is None:
            raise ValueError("measuring on the training batch needs the step's forward pass, which only an MLP on "
                             "the fast path hands to on_step: pass probe=(x, y) and rule= to measure any model")
        else:
            angles = alignment_from_cache(model, cache, e, signals)
        history.record("step", updates)
        for kind, values in angles.items():
            history.record(kind, values)


def recorded_angles(histories: Sequence, kind: str) -> tuple:
    """``(steps, angles)`` recorded by :class:`AlignmentRecorder` in several runs (seeds) of one rule.

    ``kind`` is ``"signal"``, ``"update"`` or ``"weight"``; ``angles[run, record, block]`` is a float
    array (a missing backward weight reads NaN).  Chapters 10 and 11 average it over the seeds.

    Raises:
        KeyError: the runs recorded no angles of that kind.
        ValueError: the runs were measured at different steps, so their angles cannot be stacked.
    """
    histories = list(histories)
    if not histories:
        raise ValueError("recorded_angles needs at least one run's history")
    for h in histories:
        if kind not in h.records:
            raise KeyError(f"no {kind!r} angles recorded (records hold {sorted(h.records)}): measure with an "
                           "AlignmentRecorder, and a probe batch for the 'weight' angles")
    steps = np.array(histories[0].records["step"])
    if any(h.records["step"] != histories[0].records["step"] for h in histories[1:]):
        raise ValueError("the runs were measured at different steps: their angles cannot be stacked")
    return steps, np.array([h.records[kind] for h in histories], dtype=float)
