"""Data-efficiency equivalence: how many words of pretraining was an interaction run worth?

The paper reads its headline ("1M words of interaction ~ 410M words of pretraining") off a
table: the 90M checkpoint after interaction scored 2.28, the 500M checkpoint before
interaction scored 2.25, and 500M - 90M = 410M. This module makes that reading precise and
gives it an uncertainty:

1. **The pretraining curve** is the story score of pretraining checkpoints against the words
   they had seen. Scores are noisy and need not rise at every checkpoint, so we fit the
   closest non-decreasing curve (isotonic regression by pool-adjacent-violators, equal
   weights) and interpolate it linearly in log10(words). The curve can then be inverted.
2. **Words needed** for a score: the fewest pretraining words at which the fitted curve
   reaches it. A score below the first checkpoint's fitted score or above the last one's has
   no number, only a bound (``< first words`` / ``> last words``): we never extrapolate.
3. **Equivalent extra words** = words needed - the start checkpoint's pretraining words, and
   the **ratio** = extra words / interaction words spent.
4. **Bootstrap interval**: resample the rated stories behind every score (each curve point and
   the run's final score) with replacement, redo steps 1-3, and take percentiles. Replicates
   that fall outside the curve count as -inf / +inf, so an interval end can itself be a bound.

``reached_words`` keeps the paper's own, coarser reading (the largest checkpoint whose score
the run reached or beat) next to the interpolated number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal, Sequence

import numpy as np

Position = Literal["inside", "below", "above"]


# --------------------------------------------------------------------------- the curve
def monotone_fit(scores: Sequence[float]) -> np.ndarray:
    """Closest non-decreasing sequence to ``scores`` in least squares (pool adjacent violators).

    A dip (a checkpoint scoring lower than an earlier one) is pooled with its neighbours into
    their mean, which keeps the fit faithful on average instead of trusting the luckiest point.
    """
    blocks: list[list[float]] = []  # [sum, count] per block of pooled points
    for s in scores:
        blocks.append([float(s), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    out: list[float] = []
    for total, count in blocks:
        out.extend([total / count] * int(count))
    return np.asarray(out, dtype=float)


@dataclass
class Curve:
    """Pretraining checkpoints' scores against words seen, sorted by words (all > 0)."""

    words: np.ndarray
    scores: np.ndarray
    fitted: np.ndarray

    @classmethod
    def from_points(cls, points: Sequence[tuple[float, float]]) -> "Curve":
        """Build a curve from ``(words, score)`` pairs.

        Points at 0 words have no place on a log axis and are dropped; several scores at the
        same word count (e.g. a checkpoint evaluated twice) are averaged.
        """
        by_words: dict[float, list[float]] = {}
        for words, score in points:
            if words > 0 and score is not None and math.isfinite(score):
                by_words.setdefault(float(words), []).append(float(score))
        words = np.array(sorted(by_words), dtype=float)
        scores = np.array([np.mean(by_words[w]) for w in words], dtype=float)
        return cls(words=words, scores=scores, fitted=monotone_fit(scores))

    def __len__(self) -> int:
        return len(self.words)

    def score_at(self, words: float) -> float:
        """The fitted curve's score at ``words`` (log-linear; clamped at the ends)."""
        return float(np.interp(math.log10(words), np.log10(self.words), self.fitted))


@dataclass
class Reach:
    """Where a score falls on a curve."""

    position: Position
    #: words needed (position "inside"); otherwise None.
    words: float | None
    #: for "below": the first checkpoint's words (needed < bound); "above": the last's (needed > bound).
    bound: float | None


def words_to_reach(curve: Curve, score: float) -> Reach:
    """Fewest pretraining words at which the fitted curve reaches ``score``."""
    if len(curve) < 2:
        raise ValueError("a curve needs at least two checkpoints with words > 0")
    fit, logw = curve.fitted, np.log10(curve.words)
    if score < fit[0]:
        return Reach("below", None, float(curve.words[0]))
    if score > fit[-1]:
        return Reach("above", None, float(curve.words[-1]))
    i = int(np.argmax(fit >= score))  # first point at or above the score
    if i == 0:
        return Reach("inside", float(curve.words[0]), None)
    # fit[i-1] < score <= fit[i], so the segment rises and the division is safe.
    t = (score - fit[i - 1]) / (fit[i] - fit[i - 1])
    return Reach("inside", float(10 ** (logw[i - 1] + t * (logw[i] - logw[i - 1]))), None)


def reached_checkpoint(curve: Curve, score: float) -> float | None:
    """The paper's reading: words of the largest checkpoint whose (raw) score ``score`` reaches.

    None when the score is below every checkpoint's.
    """
    reached = [w for w, s in zip(curve.words, curve.scores) if s <= score]
    return float(max(reached)) if reached else None


def _log_needed(curve: Curve, score: float) -> float:
    """log10 of the words needed, with -inf / +inf for below / above the curve."""
    reach = words_to_reach(curve, score)
    if reach.position == "below":
        return -math.inf
    if reach.position == "above":
        return math.inf
    return math.log10(reach.words)


# --------------------------------------------------------------------------- equivalence
@dataclass
class Interval:
    """Bootstrap percentile interval of the words needed; ends may be -inf / +inf (outside)."""

    confidence: float
    resamples: int
    log10_low: float
    log10_high: float
    #: how many rated stories were resampled, and which scores were held fixed for lack of them.
    stories: int
    fixed: list[str] = field(default_factory=list)

    @property
    def low(self) -> float:
        """Lower end in words (0.0 when below the curve)."""
        return 10**self.log10_low

    @property
    def high(self) -> float:
        """Upper end in words (inf when above the curve)."""
        return 10**self.log10_high


@dataclass
class Equivalence:
    """What one interaction run was worth in pretraining words."""

    run: str
    start_checkpoint: str
    start_words: int
    interact_words: int
    start_score: float | None
    final_score: float
    score: str  # which score, e.g. "stories.mean_total (evaluate)"
    position: Position
    needed_words: float | None
    bound: float | None
    curve_first: float
    curve_last: float
    reached_words: float | None
    interval: Interval | None = None

    @property
    def extra_words(self) -> float | None:
        """Equivalent extra pretraining words (None when outside the curve)."""
        return None if self.needed_words is None else self.needed_words - self.start_words

    @property
    def extra_bound(self) -> float | None:
        """For an outside score: extra words are < this (below) or > this (above)."""
        return None if self.bound is None else self.bound - self.start_words

    @property
    def ratio(self) -> float | None:
        """Extra pretraining words per interaction word."""
        if self.extra_words is None or self.interact_words <= 0:
            return None
        return self.extra_words / self.interact_words

    @property
    def reached_extra(self) -> float | None:
        return None if self.reached_words is None else self.reached_words - self.start_words

    def extra_interval(self) -> tuple[float, float] | None:
        """Bootstrap interval of the extra words (ends may be +-inf: outside the curve)."""
        if self.interval is None:
            return None
        lo = -math.inf if self.interval.log10_low == -math.inf else self.interval.low - self.start_words
        hi = math.inf if self.interval.log10_high == math.inf else self.interval.high - self.start_words
        return lo, hi

    def summary(self) -> str:
        """One sentence, as printed by the demo and shown in the report's headline."""
        spent = format_words(self.interact_words)
        if self.position == "inside":
            extra = format_words(self.extra_words)
            text = f"{spent} words of interaction from {self.start_checkpoint} ~ {extra} extra words of pretraining"
            if self.ratio is not None:
                text += f" ({format_ratio(self.ratio)})"
            ci = self.extra_interval()
            if ci is not None:
                text += f", {self.interval.confidence:.0%} interval {format_extra(ci[0])} .. {format_extra(ci[1])}"
            return text
        sign = "<" if self.position == "below" else ">"
        where = "below the first" if self.position == "below" else "above the last"
        return (
            f"{spent} words of interaction from {self.start_checkpoint}: score {self.final_score:.2f} lies {where} "
            f"pretraining checkpoint, so the equivalent extra pretraining is {sign} {format_words(self.extra_bound)}"
        )

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(
            extra_words=self.extra_words,
            extra_bound=self.extra_bound,
            ratio=self.ratio,
            reached_extra=self.reached_extra,
            summary=self.summary(),
        )
        ci = self.extra_interval()
        data["extra_interval"] = None if ci is None else [_json_float(ci[0]), _json_float(ci[1])]
        if self.interval is not None:
            data["interval"]["log10_low"] = _json_float(self.interval.log10_low)
            data["interval"]["log10_high"] = _json_float(self.interval.log10_high)
        return data


def equivalence(
    curve: Curve,
    *,
    run: str,
    start_checkpoint: str,
    start_words: int,
    interact_words: int,
    final_score: float,
    start_score: float | None = None,
    score: str = "stories.mean_total",
) -> Equivalence:
    """Point estimate of the pretraining words an interaction run's final score is worth."""
    reach = words_to_reach(curve, final_score)
    return Equivalence(
        run=run,
        start_checkpoint=start_checkpoint,
        start_words=int(start_words),
        interact_words=int(interact_words),
        start_score=start_score,
        final_score=float(final_score),
        score=score,
        position=reach.position,
        needed_words=reach.words,
        bound=reach.bound,
        curve_first=float(curve.words[0]),
        curve_last=float(curve.words[-1]),
        reached_words=reached_checkpoint(curve, final_score),
    )


def bootstrap_needed(
    curve_words: Sequence[float],
    curve_samples: Sequence[np.ndarray | float],
    target_sample: np.ndarray | float,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> Interval:
    """Percentile interval of the words needed to reach the target score.

    ``curve_samples[i]`` holds the per-story scores behind curve point ``i`` (an array), or
    just its score (a float) when the stories are unknown: such a point is held fixed. The
    same for ``target_sample``. Each replicate resamples every array with replacement, takes
    the means, refits the curve and inverts it.
    """
    rng = np.random.default_rng(seed)
    names = list(names) if names is not None else [f"point {i}" for i in range(len(curve_words))]

    def means(sample: np.ndarray | float) -> np.ndarray:
        if np.ndim(sample) == 0:
            return np.full(resamples, float(sample))
        sample = np.asarray(sample, dtype=float)
        picks = rng.integers(0, len(sample), size=(resamples, len(sample)))
        return sample[picks].mean(axis=1)

    fixed = [n for n, s in zip(names, curve_samples) if np.ndim(s) == 0]
    if np.ndim(target_sample) == 0:
        fixed.append("final score")
    stories = sum(len(s) for s in [*curve_samples, target_sample] if np.ndim(s) > 0)
    point_means = np.stack([means(s) for s in curve_samples], axis=1)  # (resamples, points)
    target_means = means(target_sample)
    logs = np.empty(resamples)
    for b in range(resamples):
        curve = Curve.from_points(list(zip(curve_words, point_means[b])))
        logs[b] = _log_needed(curve, float(target_means[b]))
    alpha = 1.0 - confidence
    # Order statistics, not interpolation: the ends may be infinite.
    low = float(np.quantile(logs, alpha / 2, method="lower"))
    high = float(np.quantile(logs, 1 - alpha / 2, method="higher"))
    return Interval(confidence, resamples, low, high, stories, fixed)


# --------------------------------------------------------------------------- formatting
def format_words(words: float | None) -> str:
    """410000000 -> '410M', 1500 -> '1.5K', 12 -> '12'."""
    if words is None:
        return "n/a"
    if not math.isfinite(words):
        return "inf" if words > 0 else "-inf"
    sign = "-" if words < 0 else ""
    w = abs(words)
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if w >= scale:
            value = w / scale
            text = f"{value:.0f}" if value >= 100 else f"{value:.3g}"
            return f"{sign}{text}{suffix}"
    return f"{sign}{w:.0f}"


def format_ratio(ratio: float) -> str:
    """Extra pretraining words per interaction word: '410x', '2.5x', '0.37x'."""
    return f"{ratio:,.0f}x" if abs(ratio) >= 10 else f"{ratio:.2g}x"


def format_extra(extra: float) -> str:
    """An interval end of the extra words: '< first' / '> last' ends read as bounds."""
    if extra == -math.inf:
        return "below curve"
    if extra == math.inf:
        return "above curve"
    return format_words(extra)


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")
