"""Agreement between two raters (two teachers, or a teacher and people), per criterion.

This is the tool for the paper's open question, "validate the teacher". For each criterion,
over the stories both raters rated validly:

- ``spearman``: rank correlation (ties averaged); None when either side is constant;
- ``kappa``: Cohen's kappa with quadratic weights on the criterion's integer scale (a miss by
  two costs four times a miss by one), the usual statistic for ordinal ratings; scores that
  are not whole numbers (expected-score mode, averaged human ratings) are rounded first;
  None when it is undefined (both raters constant);
- ``exact``: share of stories with the same (rounded) score;
- ``mean_abs_diff``: mean absolute difference.

Plus the invalid rate of each rater, how many stories were matched, and the same statistics
for the total (sum of the criteria; kappa on the total's scale).
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


def _spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr  # imported here: scipy.stats takes seconds to import

    value = spearmanr(x, y).statistic
    return None if value is None or math.isnan(value) else float(value)


def _stats(x: list[float], y: list[float], low: int, high: int) -> dict:
    xi = [min(high, max(low, round(v))) for v in x]
    yi = [min(high, max(low, round(v))) for v in y]
    n = len(x)
    return {
        "n": n,
        "spearman": _spearman(x, y),
        "kappa": quadratic_kappa(xi, yi, low, high),
        "exact": (sum(a == b for a, b in zip(xi, yi)) / n) if n else None,
        "mean_abs_diff": (sum(abs(a - b) for a, b in zip(x, y)) / n) if n else None,
    }


def agreement(a: list[Rated], b: list[Rated], rubric: Rubric) -> dict:
    """Agreement statistics (see the module docstring) for two lists of ratings."""
    pairs, matched_by = match(a, b)
    both = [(p, q) for p, q in pairs if p.scores is not None and q.scores is not None]
    criteria = {}
    for c in rubric.criteria:
        criteria[c.name] = _stats([p.scores[c.name] for p, _ in both], [q.scores[c.name] for _, q in both], c.low, c.high)
    low = sum(c.low for c in rubric.criteria)
    total = _stats([sum(p.scores.values()) for p, _ in both], [sum(q.scores.values()) for _, q in both], low, rubric.max_total)
    n = len(pairs)
    return {
        "matched": n,
        "matched_by": matched_by,
        "unmatched_a": len(a) - n,
        "unmatched_b": len(b) - n,
        "both_valid": len(both),
        "invalid_rate_a": (sum(p.scores is None for p, _ in pairs) / n) if n else None,
        "invalid_rate_b": (sum(q.scores is None for _, q in pairs) / n) if n else None,
        "criteria": criteria,
        "total": total,
    }


def save_agreement(ours_path: str | Path, result: dict) -> Path:
    """Write an agreement result next to the ratings it was computed from (``OURS.jsonl`` ->
    ``OURS.agreement.json``, where ``onceupon report --agreement`` reads it); returns the path."""
    report = Path(ours_path).with_name(Path(ours_path).name.removesuffix(".jsonl") + ".agreement.json")
    atomic_write_json(report, result)
    return report


def fmt(value) -> str:
    """A statistic or score as the tables show it: three decimals, "-" for None."""
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def print_agreement(result: dict, console: Console, a: str, b: str) -> None:
    table = Table(
        title=f"agreement: {a} vs {b} ({result['matched']} matched by {result['matched_by']}, {result['both_valid']} rated validly by both)"
    )
    for col in ("criterion", "spearman", "kappa (quadratic)", "exact", "mean |diff|", "n"):
        table.add_column(col, justify="left" if col == "criterion" else "right")
    for name, s in [*result["criteria"].items(), ("total", result["total"])]:
        table.add_row(name, fmt(s["spearman"]), fmt(s["kappa"]), fmt(s["exact"]), fmt(s["mean_abs_diff"]), str(s["n"]))
    print_table(table, console)
    console.print(f"invalid rate: {a} {fmt(result['invalid_rate_a'])}, {b} {fmt(result['invalid_rate_b'])}")


def compare_ratings(ours_path: str | Path, other: str | Path, rubric: Rubric, console: Console) -> dict:
    """``onceupon rate --compare OTHER`` when OTHER holds one rater's ratings (another teacher's,
    or a spreadsheet of ratings): print the agreement, write ``OURS.agreement.json``."""
    result = agreement(load_ratings(ours_path, rubric), load_ratings(other, rubric), rubric)
    result = {"a": str(ours_path), "b": str(other), **result}
    print_agreement(result, console, Path(ours_path).name, Path(other).name)
    report = save_agreement(ours_path, result)
    console.print(f"agreement written to {report}")
    return result
