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
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping, Sequence

import torch


def run_concurrently(jobs: Sequence[Callable] | Mapping, workers: int = 2):
    """Call every zero-argument function in ``jobs``, ``workers`` of them at a time.

    Args:
        jobs: a list of functions (a list of their results comes back) or a dict of them
            (a dict with the same keys comes back).  Each should train something that was
            built beforehand and use no global random stream (see the module docstring).
        workers: threads; 1 runs the jobs one after another, still on one torch thread each.

    Returns:
        The jobs' return values, in the jobs' order.
    """
    if isinstance(jobs, Mapping):
        keys = list(jobs)
        return dict(zip(keys, run_concurrently([jobs[k] for k in keys], workers)))
    jobs = list(jobs)
    if not all(callable(job) for job in jobs):
        raise TypeError("run_concurrently takes zero-argument functions, e.g. lambda: train(model, rule, data)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    threads_before = torch.get_num_threads()

    def one_thread(job):
        torch.set_num_threads(1)  # per thread: OpenMP's thread count is set in the calling thread
        return job()

    try:
        if workers == 1 or len(jobs) <= 1:
            return [one_thread(job) for job in jobs]
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            futures = [pool.submit(one_thread, job) for job in jobs]
            errors = [f.exception() for f in futures]  # waits for every job
        for err in errors:
            if err is not None:
                raise err
        return [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads_before)

