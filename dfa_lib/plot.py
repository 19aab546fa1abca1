"""Figures the chapters share: learning curves, mean-and-band curves, decision boundaries, running means.

Introduced in chapter 1 (curves) and chapter 2 (decision boundary); :func:`smooth` in chapter 7.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def plot_history(history, keys: Sequence[str] = ("train_error", "test_error"), ax=None, label: str | None = None,
                 percent: bool = True, logy: bool = False, **kwargs):
    """Plot metrics of one :class:`~dfa_lib.train.History` against epochs."""
    ax = ax or plt.gca()
    for key in keys:
        values = np.asarray(getattr(history, key) if hasattr(history, key) else history.records[key], dtype=float)
        if percent and key.endswith("error"):
            values = values * 100
        name = f"{label or history.rule} {key.replace('_', ' ')}"
        ax.plot(history.epoch[-len(values):], values, label=name, **kwargs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)" if percent and all(k.endswith("error") for k in keys) else "value")
    if logy:
        ax.set_yscale("log")
    ax.legend()
    return ax


def plot_mean_band(curves: Mapping[str, np.ndarray], x=None, ax=None, logy: bool = False, band: str = "minmax",
                   xlabel: str = "epoch", ylabel: str = "", **kwargs):
    """For each name, a (runs x points) array drawn as its mean with a shaded band.

    ``band="minmax"`` shades the range over runs; ``"std"`` one standard deviation.
    On a log axis the mean is geometric, so a band over decades reads correctly.
    """
    ax = ax or plt.gca()
    for name, runs in curves.items():
        runs = np.asarray(runs, dtype=float)
        xs = np.arange(runs.shape[1]) if x is None else np.asarray(x)
        centre = np.exp(np.log(runs).mean(0)) if logy else runs.mean(0)
        if band == "minmax":
            lo, hi = runs.min(0), runs.max(0)
        else:
            sd = runs.std(0)
            lo, hi = centre - sd, centre + sd
        (line,) = ax.plot(xs, centre, label=name, **kwargs)
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax


def smooth(values, k: int):
    """Running mean over ``k`` consecutive entries, along the first axis (numpy's ``"valid"`` part).

    A 1-D sequence gives ``len - k + 1`` means; a 2-D array (records x layers) gives one column of
    means per column.  A value measured on one mini-batch is a noisy sample; chapter 7 smooths its
    alignment angles with it, chapter 9 its meta-training losses.
    """
    values = np.asarray(values)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if values.ndim not in (1, 2):
        raise ValueError(f"smooth takes a sequence or a 2-D array (records x series), got shape {values.shape}")
    if len(values) < k:
        raise ValueError(f"a running mean over k={k} entries needs at least {k} of them, got {len(values)}")
    kernel = np.ones(k) / k
    if values.ndim == 1:
        return np.convolve(values, kernel, mode="valid")
    return np.stack([np.convolve(column, kernel, mode="valid") for column in values.T], axis=1)


@torch.no_grad()
def plot_decision_boundary(model, x: torch.Tensor, y: torch.Tensor, ax=None, resolution: int = 200,
                           margin: float = 0.5, title: str | None = None, loss: str | None = "bce"):
    """Colour the input plane by a 2-input, 1-output network's output and mark the patterns.

    The model returns logits; ``loss`` names the loss whose output function turns them into the
    output shown (:func:`dfa_lib.losses.predictions`: ``"bce"``, the default, the sigmoid's
    probability); ``None`` shows the logits themselves.
    """
    from .losses import predictions

    ax = ax or plt.gca()
    xs = x.detach().cpu().double().numpy()
    lo, hi = xs.min(0) - margin, xs.max(0) + margin
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = torch.tensor(np.stack([g0.ravel(), g1.ravel()], 1), dtype=next(model.parameters()).dtype)
    z = model(grid.to(next(model.parameters()).device))
    z = (z if loss is None else predictions(loss, z)).cpu().numpy().reshape(g0.shape)
    mesh = ax.contourf(g0, g1, z, levels=20, cmap="RdBu_r", alpha=0.8)
    ys = y.detach().cpu().numpy().ravel()
    ax.scatter(xs[:, 0], xs[:, 1], c=ys, cmap="RdBu_r", edgecolors="k", s=120, vmin=ys.min(), vmax=ys.max())
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    plt.colorbar(mesh, ax=ax, fraction=0.046)
    return ax


def plot_confusion(matrix, ax=None, title: str | None = None, class_names=None):
    """A confusion matrix (rows: truth, columns: prediction) with counts in the cells."""
    ax = ax or plt.gca()
    m = np.asarray(matrix.cpu() if torch.is_tensor(matrix) else matrix)
    ax.imshow(m, cmap="Blues")
    n = m.shape[0]
    names = class_names or list(range(n))
    ax.set_xticks(range(n), names)
    ax.set_yticks(range(n), names)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return ax
