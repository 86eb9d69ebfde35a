"""Agreement between two raters (two teachers, or a teacher and people), per criterion.

This is the tool for the paper's open question, "validate the teacher". For each criterion,
over the stories both raters rated validly:

- ``spearman``: rank correlation (ties averaged); None when either side is constant;
- ``kappa``: Cohen's kappa with quadratic weights on the criterion's integer scale (a miss by
  two costs four times a miss by one), the usual statistic for ordinal ratings; scores that
  are not whole numbers (expected-score mode, averaged human ratings) are rounded first;
  None when it is undefined (both raters constant);
- ``kappa_interval``: a 95 % percentile bootstrap interval of that kappa, resampling the
  stories (1,000 resamples, seeded: the same files give the same interval);
- ``exact``: share of stories with the same (rounded) score;
- ``mean_abs_diff``: mean absolute difference.

Plus the invalid rate of each rater, how many stories were matched, and the same statistics
for the total (sum of the criteria; kappa on the total's scale).

Kappa and Spearman need a sample: below ``MIN_SHARED`` stories rated validly by both raters
they are not computed (``None``; ``enough`` is false and the table says "not enough shared
stories (n)"), rather than a kappa of 0.00 from one story.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from onceupon.errors import UserError
from onceupon.files import atomic_write_json
from onceupon.schemas.ratings import read_rating_records
from onceupon.teacher.rubric import Rubric
from onceupon.tracking import print_table


#: fewest stories both raters must have rated validly for kappa and Spearman to be computed
#: (and, between annotators, for the pair to count in the ceiling)
MIN_SHARED = 10
#: bootstrap resamples behind a kappa's interval
RESAMPLES = 1000


@dataclass
class Rated:
    id: str | None
    scores: dict[str, float] | None  # None: invalid / missing


def load_ratings(path: str | Path, rubric: Rubric) -> list[Rated]:
    """Ratings from JSONL: ``scores`` {criterion: number} (our ratings files, anthologies) or
    the criteria as top-level fields (a spreadsheet of human ratings). ``valid: false``,
    ``scores: null`` or a missing criterion make a record invalid; a score that is not a finite
    number on the criterion's scale is an error (:mod:`onceupon.schemas.ratings`)."""
    return [Rated(r.id, r.rated(rubric)) for r in read_rating_records(path, rubric)]


def match(a: list[Rated], b: list[Rated]) -> tuple[list[tuple[Rated, Rated]], str]:
    """Pairs by id when every record of both files has one, else by line order."""
    if all(r.id is not None for r in a + b):
        indexes: list[dict] = [{}, {}]
        for side, index in zip((a, b), indexes):  # a repeated id would pair one story twice
            for r in side:
                if r.id in index:
                    raise UserError(f"Ratings to compare have the id '{r.id}' twice.")
                index[r.id] = r
        index = indexes[1]
        return [(r, index[r.id]) for r in a if r.id in index], "id"
    if len(a) != len(b):
        raise UserError(f"Without ids on every line, both files need the same number of lines ({len(a)} vs {len(b)}).")
    return list(zip(a, b)), "line order"


def quadratic_kappa(x: list[int], y: list[int], low: int, high: int) -> float | None:
    """Cohen's kappa with quadratic weights for integer ratings on low..high."""
    k = high - low + 1
    observed = np.zeros((k, k))
    for i, j in zip(x, y):
        observed[i - low, j - low] += 1
    n = observed.sum()
    if n == 0 or k < 2:
        return None
    idx = np.arange(k)
    weights = (idx[:, None] - idx[None, :]) ** 2 / (k - 1) ** 2
    expected = np.outer(observed.sum(1), observed.sum(0)) / n
    denom = (weights * expected).sum()
    if denom == 0:
        return None
    return float(1 - (weights * observed).sum() / denom)


def kappa_interval(x: list[int], y: list[int], low: int, high: int, seed: int = 0, confidence: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of :func:`quadratic_kappa`, resampling the stories
    (seeded). Resamples where kappa is undefined (one rater constant) are left out; None when
    most are."""
    k, n = high - low + 1, len(x)
    if n == 0 or k < 2:
        return None
    cells = (np.asarray(x) - low) * k + (np.asarray(y) - low)
    picks = cells[np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))]
    offsets = np.arange(RESAMPLES)[:, None] * k * k  # one k x k table per resample, counted at once
    observed = np.bincount((picks + offsets).ravel(), minlength=RESAMPLES * k * k).reshape(RESAMPLES, k, k)
    idx = np.arange(k)
    weights = (idx[:, None] - idx[None, :]) ** 2 / (k - 1) ** 2
    expected = observed.sum(2)[:, :, None] * observed.sum(1)[:, None, :] / n
    denom = (weights * expected).sum(axis=(1, 2))
    defined = denom > 0
    if defined.sum() < RESAMPLES / 2:
        return None
    kappas = 1 - (weights * observed).sum(axis=(1, 2))[defined] / denom[defined]
    tail = (1 - confidence) / 2 * 100
    return [float(v) for v in np.percentile(kappas, [tail, 100 - tail])]


def _spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr  # imported here: scipy.stats takes seconds to import

    value = spearmanr(x, y).statistic
    return None if value is None or math.isnan(value) else float(value)


def _stats(x: list[float], y: list[float], low: int, high: int, min_shared: int, seed: int) -> dict:
    xi = [min(high, max(low, round(v))) for v in x]
    yi = [min(high, max(low, round(v))) for v in y]
    n = len(x)
    enough = n >= min_shared
    return {
        "n": n,
        "spearman": _spearman(x, y) if enough else None,
        "kappa": quadratic_kappa(xi, yi, low, high) if enough else None,
        "kappa_interval": kappa_interval(xi, yi, low, high, seed) if enough else None,
        "exact": (sum(a == b for a, b in zip(xi, yi)) / n) if n else None,
        "mean_abs_diff": (sum(abs(a - b) for a, b in zip(x, y)) / n) if n else None,
    }


def agreement(a: list[Rated], b: list[Rated], rubric: Rubric, *, min_shared: int = MIN_SHARED, seed: int = 0) -> dict:
    """Agreement statistics (see the module docstring) for two lists of ratings; ``seed``
    seeds the kappa intervals' bootstrap."""
    pairs, matched_by = match(a, b)
    both = [(p, q) for p, q in pairs if p.scores is not None and q.scores is not None]
    criteria = {}
    for c in rubric.criteria:
        x, y = [p.scores[c.name] for p, _ in both], [q.scores[c.name] for _, q in both]
        criteria[c.name] = _stats(x, y, c.low, c.high, min_shared, seed)
    low = sum(c.low for c in rubric.criteria)
    x, y = [sum(p.scores.values()) for p, _ in both], [sum(q.scores.values()) for _, q in both]
    total = _stats(x, y, low, rubric.max_total, min_shared, seed)
    n = len(pairs)
    return {
        "matched": n,
        "matched_by": matched_by,
        "unmatched_a": len(a) - n,
        "unmatched_b": len(b) - n,
        "both_valid": len(both),
        "min_shared": min_shared,
        "enough": len(both) >= min_shared,
        "invalid_rate_a": (sum(p.scores is None for p, _ in pairs) / n) if n else None,
        "invalid_rate_b": (sum(q.scores is None for _, q in pairs) / n) if n else None,
        "criteria": criteria,
        "total": total,
    }


def agreement_path(ours_path: str | Path) -> Path:
    """Where an agreement with ``OURS.jsonl`` is kept: ``OURS.agreement.json`` beside it."""
    return Path(ours_path).with_name(Path(ours_path).name.removesuffix(".jsonl") + ".agreement.json")


def save_agreement(ours_path: str | Path, result: dict) -> Path:
    """Write an agreement result next to the ratings it was computed from (:func:`agreement_path`,
    where ``onceupon report --agreement`` reads it); returns the path."""
    report = agreement_path(ours_path)
    atomic_write_json(report, result)
    return report


def fmt(value) -> str:
    """A statistic or score as the tables show it: three decimals, "-" for None."""
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def fmt_kappa(stats: dict, digits: int = 3) -> str:
    """``0.812 [0.655, 0.930]``: a kappa with its bootstrap interval; "-" when not computed."""
    kappa, interval = stats.get("kappa"), stats.get("kappa_interval")
    if kappa is None:
        return "-"
    return f"{kappa:.{digits}f}" + (f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else "")


def too_few(result: dict) -> str | None:
    """``not enough shared stories (1)`` when two raters share too few stories, else None
    (files written before the minimum existed have no ``enough`` and count as enough)."""
    return None if result.get("enough", True) else f"not enough shared stories ({result['both_valid']})"


def print_agreement(result: dict, console: Console, a: str, b: str) -> None:
    table = Table(
        title=f"agreement: {a} vs {b} ({result['matched']} matched by {result['matched_by']}, {result['both_valid']} rated validly by both)"
    )
    for col in ("criterion", "spearman", "kappa (quadratic) [95 % interval]", "exact", "mean |diff|", "n"):
        table.add_column(col, justify="left" if col == "criterion" else "right")
    for name, s in [*result["criteria"].items(), ("total", result["total"])]:
        table.add_row(name, fmt(s["spearman"]), fmt_kappa(s), fmt(s["exact"]), fmt(s["mean_abs_diff"]), str(s["n"]))
    print_table(table, console)
    console.print(f"invalid rate: {a} {fmt(result['invalid_rate_a'])}, {b} {fmt(result['invalid_rate_b'])}")
    if too_few(result):
        console.print(f"warning: {too_few(result)}: kappa and Spearman need at least {result['min_shared']}", style="yellow")


def compare_ratings(ours_path: str | Path, other: str | Path, rubric: Rubric, console: Console) -> dict:
    """``onceupon rate --compare OTHER`` when OTHER holds one rater's ratings (another teacher's,
    or a spreadsheet of ratings): print the agreement, write ``OURS.agreement.json``."""
    result = agreement(load_ratings(ours_path, rubric), load_ratings(other, rubric), rubric)
    result = {"a": str(ours_path), "b": str(other), **result}
    print_agreement(result, console, Path(ours_path).name, Path(other).name)
    report = save_agreement(ours_path, result)
    console.print(f"agreement written to {report}")
    return result
