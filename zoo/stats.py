"""The statistics of comparing runs: a mean with its Student-t interval, a bootstrap interval over test images,
McNemar's exact test on paired predictions, and the paired accuracy gap.

Pure functions on plain numbers, standard library only (no numpy, scipy or torch): the read commands use them.
References: Dietterich 1998 (McNemar's test for two classifiers on one test set); Student's t for the mean of a
few seeds; Efron's percentile bootstrap (computed exactly for an accuracy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence

LEVEL = 0.95  # every interval zoo prints is a 95% one


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def stdev(values: Sequence[float]) -> Optional[float]:
    """The sample standard deviation (n - 1); None for fewer than 2 values."""
    if len(values) < 2:
        return None
    mu = mean(values)
    return math.sqrt(math.fsum((v - mu) ** 2 for v in values) / (len(values) - 1))


# --------------------------------------------------------------------------------------------- Student's t


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (``t_quantile(0.975, 2)`` = 4.303), by bisection on ``t_cdf``."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError("t_quantile needs 0 < p < 1 and df > 0")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Optional[tuple[float, float]]:
    """The Student-t interval of the mean of ``values`` (seeds of one model); None for fewer than 2."""
    sd = stdev(values)
    if sd is None:
        return None
    half = t_quantile(0.5 + level / 2.0, len(values) - 1) * sd / math.sqrt(len(values))
    mu = mean(values)
    return (mu - half, mu + half)


def bootstrap_interval(correct: Sequence[bool], level: float = LEVEL) -> Optional[tuple[float, float]]:
    """The percentile bootstrap interval of an accuracy over the test images (one run: no seeds to average)."""
    return accuracy_bootstrap(sum(1 for c in correct if c), len(correct), level)


def accuracy_bootstrap(right: int, total: int, level: float = LEVEL) -> Optional[tuple[float, float]]:
    """The percentile bootstrap interval of an accuracy of ``right`` / ``total`` test images. The bootstrap
    distribution of a mean of 0/1 values is exactly Binomial(total, accuracy) / total, so its percentiles are
    computed from that distribution instead of sampled: no resampling noise, the same every time, fast for any
    size. None without images."""
    n, k = total, right
    if n <= 0 or not 0 <= k <= n:
        return None
    p = k / n
    if p in (0.0, 1.0):
        return (p, p)
    lo_q, hi_q = (1.0 - level) / 2.0, (1.0 + level) / 2.0
    log_p, log_q = math.log(p), math.log1p(-p)
    cumulative, low, high = 0.0, None, None
    for i in range(n + 1):
        cumulative += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                               + i * log_p + (n - i) * log_q)
        if low is None and cumulative >= lo_q:
            low = i
        if cumulative >= hi_q:
            high = i
            break
    return (low / n, (high if high is not None else n) / n)


# ------------------------------------------------------------------------------------------ paired tests


def mcnemar_exact(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value: of the test images exactly one classifier got right, ``b`` went to the
    first and ``c`` to the second; under 'no difference' b ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


@dataclass(frozen=True)
class PairedGap:
    """Two classifiers on the same test images: the accuracy gap (first minus second, a fraction), its interval,
    the discordant counts and McNemar's p."""

    pairs: int  # paired predictions (test images x matched seeds)
    first_only: int  # b: the first right, the second wrong
    second_only: int  # c: the second right, the first wrong
    gap: float
    low: float
    high: float
    p: float


def paired_gap(first: Sequence[bool], second: Sequence[bool], level: float = LEVEL) -> PairedGap:
    """The paired comparison of two lists of right/wrong on the same images (in the same order): gap with a
    t interval of the per-image differences (-1, 0, +1; kept within -1..1), and McNemar's exact test."""
    if len(first) != len(second) or not first:
        raise ValueError("paired_gap needs two equally long, non-empty lists")
    n = len(first)
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    gap = (b - c) / n
    if n > 1:
        var = max(0.0, ((b + c) - n * gap * gap) / (n - 1))
        half = t_quantile(0.5 + level / 2.0, n - 1) * math.sqrt(var / n)
    else:
        half = float("inf")
    return PairedGap(n, b, c, gap, max(-1.0, gap - half), min(1.0, gap + half), mcnemar_exact(b, c))


def overlaps(a: Optional[tuple[float, float]], b: Optional[tuple[float, float]]) -> Optional[bool]:
    """Whether two intervals share a point; None when either is unknown."""
    if a is None or b is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]
