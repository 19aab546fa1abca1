"""Several independent runs at once: one Python thread per run, one torch thread per run.

A small network's step leaves a multi-core CPU half idle: its products are too small for
torch's threads to share well, and part of every step is Python.  torch's kernels release
Python's GIL, so two runs in two threads, each computing on one core, overlap their work.  On
the book's 2-core machine four one-epoch runs finished between 1.09x (chapter 11's LeNet) and
1.9x (chapter 3's 784-200-10 at batch 200) faster than one after another on torch's two threads
(``benchmarks/concurrent_runs.py``; the figure varies from run to run on a shared VM).

The rules that keep every number reproducible:

* each job is a function that only trains: build the models, rules, optimizers and
  shuffling generators *before* (in one thread, in a fixed order), because anything drawn
  from torch's global random stream while runs overlap would depend on thread timing;
* each job computes on exactly one torch thread, whatever ``workers`` is, so a run gives the
  same numbers bit for bit with ``workers=1`` or ``workers=2`` (``tests/test_parallel.py``);
* results come back in the order of the jobs, and the first job that raised re-raises its
  error after the others finish.

Jobs start in the order given, each as soon as a worker is free, so list the longest first:
the short ones then fill the gaps at the end instead of one core training a last long run
alone while the other idles (chapters 10 and 11 order their runs by a measured relative cost).

Chapters 3, 4, 5, 6, 10 and 11 train their runs this way.

While the runs train, a progress bar counts the finished ones and names the last to finish.  By
default it shows only where a person watches the output as it comes (:func:`someone_is_watching`):
a chapter executed by Jupyter Book, ``jupyter nbconvert --execute`` or nbval keeps no trace of it.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Hashable, Mapping, Sequence

import torch


def run_concurrently(jobs: Sequence[Callable] | Mapping, workers: int = 2, progress: bool | None = None):
    """Call every zero-argument function in ``jobs``, ``workers`` of them at a time.

    Args:
        jobs: a list of functions (a list of their results comes back) or a dict of them
            (a dict with the same keys comes back).  Each should train something that was
            built beforehand and use no global random stream (see the module docstring).
        workers: threads; 1 runs the jobs one after another, still on one torch thread each.
        progress: show a progress bar of the finished runs (finished/total, with the key, or the
            list index, of the last run to finish); it disappears when all have finished.  ``None``
            (the default) shows it only where someone watches (:func:`someone_is_watching`), so that
            an executed notebook saves no bar.  The jobs' own bars (``train``'s)
            show beside it unless the jobs pass ``progress=False``, as the chapters do.

    Returns:
        The jobs' return values, in the jobs' order.
    """
    if isinstance(jobs, Mapping):
        keys = list(jobs)
        return dict(zip(keys, _run_all([jobs[k] for k in keys], keys, workers, progress)))
    jobs = list(jobs)
    return _run_all(jobs, list(range(len(jobs))), workers, progress)


def _run_all(jobs: list, keys: list, workers: int, progress: bool | None) -> list:
    """The jobs' results in order; ``keys`` name the jobs on the progress bar."""
    if not all(callable(job) for job in jobs):
        raise TypeError("run_concurrently takes zero-argument functions, e.g. lambda: train(model, rule, data)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    threads_before = torch.get_num_threads()
    bar = _RunsBar(len(jobs), wants_progress(progress))

    def one_thread(job):
        torch.set_num_threads(1)  # per thread: OpenMP's thread count is set in the calling thread
        return job()

    try:
        if workers == 1 or len(jobs) <= 1:
            results = []
            for key, job in zip(keys, jobs):
                results.append(one_thread(job))
                bar.finished(key)
            return results
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            futures = [pool.submit(one_thread, job) for job in jobs]
            key_of = {future: key for future, key in zip(futures, keys)}
            for future in as_completed(futures):  # the bar moves in this thread, as each run ends
                bar.finished(key_of[future])
        for future in futures:  # the first job in order that raised, once every job has run
            if future.exception() is not None:
                raise future.exception()
        return [f.result() for f in futures]
    finally:
        bar.close()
        torch.set_num_threads(threads_before)


class _RunsBar:
    """run_concurrently's tqdm bar: one tick per finished run, the last one's key in the postfix; it
    disappears when closed (``leave=False``).  Without ``show``, nothing is drawn."""

    def __init__(self, total: int, show: bool):
        self.bar = None
        if show and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="runs", unit="run", leave=False)

    def finished(self, key: Hashable) -> None:
        if self.bar is not None:
            label = " ".join(map(str, key)) if isinstance(key, tuple) else str(key)
            self.bar.update(1)
            # redrawn at once (tqdm would wait for its next tick): one redraw per run costs nothing next to a run
            self.bar.set_postfix_str(f"last finished: {label}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def wants_progress(progress: bool | None) -> bool:
    """``progress`` itself when given; for ``None``, whether :func:`someone_is_watching`."""
    return someone_is_watching() if progress is None else bool(progress)


def someone_is_watching() -> bool:
    """Whether a person sees the output while it is produced, so that a progress bar helps.

    In a Jupyter kernel: whether the cell running now was sent by a front end that can answer
    ``input()`` (JupyterLab, the classic notebook, VS Code, Colab all can).  Jupyter Book,
    ``jupyter nbconvert --execute`` and nbval execute cells without that ability, and a bar drawn there
    would be saved into the notebook for good (a widget view, or the bar's text on stderr) even after
    it disappeared on screen.  Outside Jupyter: whether stderr, where the bar is drawn, is a terminal
    (not a file, a pipe or pytest's capture).
    """
    kernel = _jupyter_kernel()
    if kernel is not None:
        get_parent = getattr(kernel, "get_parent", None)  # ipykernel >= 6
        request = (get_parent("shell") if get_parent is not None else None) or {}
        return bool(request.get("content", {}).get("allow_stdin", False))
    stderr = sys.stderr
    return stderr is not None and hasattr(stderr, "isatty") and stderr.isatty()


def _jupyter_kernel():
    """The running Jupyter kernel (ipykernel's), or None outside one (a script, a terminal IPython)."""
    ipython = sys.modules.get("IPython")  # never imported here: a script without IPython has no kernel
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None)
