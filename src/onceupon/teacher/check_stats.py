"""The statistics of the teacher check (check_teacher.py): proportions, intervals, rank
correlation, and the words and numbers its lines print.

Every interval is seeded, so the same ratings always give the same check.json.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

OVERALL = "overall"
Z95 = 1.959964
#: the smallest mean clean-minus-damaged gap, in points of a criterion's scale, with which a
#: criterion passes: a quarter of one level (0.25 on the paper's 0..3). A reward that moves
#: by less is swamped by the spread of the scores of stories sampled from one prompt, and a
#: judge whose answer never changes but whose digit probabilities drift (expected-score
#: mode) scores a consistent sign with gaps of a few hundredths.
MIN_GAP = 0.25
#: verdicts with which a criterion (or one of its variants) passes
PASSING = ("discriminates", "discriminates weakly")
#: resamples of the bootstrap intervals (seeded: the same ratings always give the same interval)
RESAMPLES = 2000


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (good at small n and near 0 or 1)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: list[float], confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> list[float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (None when there are none).

    A bootstrap rather than a t interval: gaps between whole-number answers are a few
    distinct values (-3..3), far from normal at the sample sizes a check has."""
    if not values:
        return None
    x = np.asarray(values, dtype=float)
    if np.all(x == x[0]):
        return [float(x[0]), float(x[0])]
    means = x[np.random.default_rng(seed).integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(lo), float(hi)]


def entropy_bits(counts: Counter) -> float:
    n = sum(counts.values())
    # + 0.0: one answer gives -0.0, which prints as "-0.00 bits"
    return -sum(c / n * math.log2(c / n) for c in counts.values() if c) + 0.0 if n else 0.0


def compare(pairs: list[tuple[float, float]], min_gap: float = MIN_GAP) -> dict:
    """Clean vs damaged scores: how often the clean story is higher, lower, tied; by how much
    (``gap``, in the scores' own unit); the verdict."""
    higher = sum(c > v for c, v in pairs)
    lower = sum(c < v for c, v in pairs)
    n = len(pairs)
    tied = n - higher - lower
    untied = higher + lower
    gaps = [c - v for c, v in pairs]
    gap = sum(gaps) / n if n else None
    if not n:
        verdict = "not measured"
    elif untied and wilson(higher, untied)[0] > 0.5:
        if gap < min_gap:
            verdict = "too small a gap"
        else:
            verdict = "discriminates" if higher >= n / 2 else "discriminates weakly"
    elif untied and wilson(lower, untied)[0] > 0.5:
        verdict = "reversed"
    else:
        verdict = "does not discriminate"
    return {
        "pairs": n,
        "higher": higher,
        "lower": lower,
        "tied": tied,
        "discrimination": higher / n if n else None,
        "interval": list(wilson(higher, n)) if n else None,
        "chance": untied / 2 / n if n else None,
        "gap": gap,
        "gap_interval": mean_interval(gaps),
        "min_gap": min_gap,
        "verdict": verdict,
    }


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def signed(x: float, digits: int = 2) -> str:
    """``+0.25``; a value that rounds to zero is ``+0.00``, never ``-0.00``."""
    return f"{round(x, digits) + 0.0:+.{digits}f}"


def gap_text(row: dict, unit: str) -> str:
    """``gap +0.75 points (95 % CI +0.60..+0.90; minimum 0.25)``"""
    lo, hi = row["gap_interval"]
    return f"gap {signed(row['gap'])} {unit} (95 % CI {signed(lo)}..{signed(hi)}; minimum {row['min_gap']:.2g})"


def verdict_line(name: str, row: dict, why_unmeasured: str = "no pair where both stories got a valid rating") -> str:
    """``coherence: discriminates, 95 % of 120 pairs (95 % CI 89-98 %), 0 % tied, chance 48 %;
    gap +1.20 points (95 % CI +1.05..+1.35; minimum 0.25)``"""
    if not row["pairs"]:
        return f"{name}: not measured: {why_unmeasured}"
    lo, hi = row["interval"]
    unit = "of the 0..1 score" if name == OVERALL else "points"
    return (
        f"{name}: {row['verdict']}, {pct(row['discrimination'])} of {row['pairs']} pairs "
        f"(95 % CI {100 * lo:.0f}-{100 * hi:.0f} %), {pct(row['tied'] / row['pairs'])} tied, chance {pct(row['chance'])}; "
        f"{gap_text(row, unit)}"
    )


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None where either side is
    constant, as no order can then be read from it."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def grouped_interval(groups: list[list[tuple[float, float]]], stat, confidence: float = 0.95, resamples: int = 1000, seed: int = 0):
    """Percentile bootstrap interval of ``stat(pairs)`` resampling whole groups (the items of
    one story move together, since they share its quality); None when ``stat`` is."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        picked = rng.integers(0, len(groups), len(groups))
        value = stat([pair for k in picked for pair in groups[k]])
        if value is not None:
            values.append(value)
    if len(values) < resamples / 2:
        return None
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(lo), float(hi)]
