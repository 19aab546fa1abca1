"""Seeding and device choice: the two lines every chapter starts with.

Introduced in chapter 1 (``book/01_linear_fa.ipynb``).
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA) with one number.

    Returns a ``torch.Generator`` seeded with the same number, for code that wants
    its own stream (for example mini-batch shuffling) independent of other draws.
    """
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def get_device(preference: str | None = None) -> torch.device:
    """Pick a device: ``"cuda"``, ``"mps"`` or ``"cpu"``.

    With no preference, take CUDA if present, then Apple's MPS, then the CPU.
    Asking for a device that is not available is an error, not a silent fallback.
    """
    if preference is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch.cuda.is_available() is False")
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RuntimeError("device 'mps' was asked for but torch.backends.mps.is_available() is False")
    return device


@contextmanager
def flush_denormal():
    """Flush subnormal floats to zero for the duration of a run (where the CPU supports it).

    Zero-initialised DFA nets produce subnormal floats that are ~10x slower on CPUs; flushing
    them changes no result that matters (used by :func:`dfa_lib.train`).
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)
