"""Statistics over seeds and runs: a "mean [min, max]" summary and confidence intervals.

:func:`spread` is how chapters 3-7, 10 and 11 report a number over several seeds; the Wilson
interval for success rates over many random networks is introduced in chapter 8
(``book/08_hebbian.ipynb``) and used in chapter 9 too.
"""
from __future__ import annotations

import math

import numpy as np


def spread(values, fmt: str = ".2f") -> str:
    """``"mean [min, max]"`` of several seeds' values (just the value for one seed), for tables and glue."""
    values = np.asarray(values, dtype=float)
    if values.size == 1:
        return format(float(values.reshape(-1)[0]), fmt)
    return f"{values.mean():{fmt}} [{values.min():{fmt}}, {values.max():{fmt}}]"


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (95 % for the default ``z``).

    .. math::

        \\frac{\\hat p + \\frac{z^2}{2n} \\pm z\\sqrt{\\frac{\\hat p(1-\\hat p)}{n} + \\frac{z^2}{4n^2}}}{1 + \\frac{z^2}{n}}

    Unlike the normal approximation it stays inside [0, 1] and is not empty at ``k = 0``.

    Introduced in chapter 8 (``book/08_hebbian.ipynb``).
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n] = [0, {n}], got {k}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lower = 0.0 if k == 0 else max(0.0, centre - half)
    upper = 1.0 if k == n else min(1.0, centre + half)
    return lower, upper


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when the closed intervals ``a`` and ``b`` share at least one point."""
    return a[0] <= b[1] and b[0] <= a[1]


def difference_interval(k1: int, n1: int, k2: int, n2: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Newcombe's hybrid score interval for the difference of two proportions ``k1/n1 - k2/n2``.

    Two rates are consistent with each other when this interval contains 0.  Asking only that
    their two Wilson intervals overlap is far more lenient (it would call 0.80 and 0.91 of 100
    equal); this is Newcombe's (1998) method 10, built from the two Wilson intervals.

    Introduced in chapter 8 (``book/08_hebbian.ipynb``); chapter 9 uses it too.
    """
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(k1, n1, z), wilson_interval(k2, n2, z)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def rates_consistent(k1: int, n1: int, k2: int, n2: int) -> bool:
    """True when the 95 % interval of ``k1/n1 - k2/n2`` (:func:`difference_interval`) contains 0."""
    lower, upper = difference_interval(k1, n1, k2, n2)
    return lower <= 0 <= upper
