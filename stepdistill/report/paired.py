"""Paired statistics for comparing two methods on the same test rows: pure functions, values in and out.

    from stepdistill.report.paired import mcnemar_exact, paired_bootstrap, verdict
    p = mcnemar_exact(b=3, c=9)                      # b: A right, B wrong; c: A wrong, B right
    ci = paired_bootstrap(a_correct, b_correct)      # accuracy(A) - accuracy(B), 95% interval
    verdict("step-by-step", "standard", ci)          # "step-by-step beats standard" only if lo > 0

The bootstrap resamples test rows (the same rows for both methods, so what the two get right together
cancels out) with a fixed seed, so a report is reproducible to the digit. Values per row may be
fractions: the mean correctness of a row over several seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 10_000  # resamples; the 2.5/97.5 percentiles move by < 0.3 points between seeds
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A difference (A - B, fractions) with its 95% bootstrap interval over `n` paired rows."""

    diff: float
    lo: float
    hi: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def discordant(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """(b, c) of McNemar's table: rows A gets right and B wrong, rows A gets wrong and B right."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} vs {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    return only_a, only_b


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" each of the b + c discordant rows is
    A's or B's with probability 1/2, so p = 2 * P(Binomial(b + c, 1/2) <= min(b, c)), capped at 1."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts cannot be negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> Interval:
    """Mean of a - b over rows and its percentile interval from `samples` resamples of the rows."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no paired rows to compare")
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)  # [rows]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(samples, len(d)))  # [samples, rows]
    means = d[idx].mean(axis=1)  # [samples]
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return Interval(float(d.mean()), float(lo), float(hi), len(d))


def verdict(a: str, b: str, ci: Interval) -> str:
    """Words a reader may use: a winner only when the 95% interval excludes 0."""
    if ci.lo > 0:
        return f"{a} beats {b}"
    if ci.hi < 0:
        return f"{b} beats {a}"
    return "no difference shown (the interval includes 0)"


def interval_text(ci: Interval) -> str:
    """'+5.0 points [-2.5, +12.5]' (percentage points)."""
    return f"{100 * ci.diff:+.1f} points [{100 * ci.lo:+.1f}, {100 * ci.hi:+.1f}]"
