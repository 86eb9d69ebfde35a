"""Data-efficiency equivalence on curves whose answers are known by hand."""

import math

import numpy as np
import pytest

from onceupon.analysis.efficiency import (
    Curve,
    bootstrap_needed,
    equivalence,
    format_words,
    monotone_fit,
    reached_checkpoint,
    words_to_reach,
)

M = 1_000_000

#: The paper's results: mean teacher score (0..9) of the first / last 10 RL batches per start checkpoint.
PAPER = {20 * M: (0.03, 0.20), 50 * M: (0.26, 1.36), 90 * M: (0.70, 2.28), 200 * M: (1.45, 2.70),
         500 * M: (2.25, 3.13), 900 * M: (2.64, 3.37)}


def log_curve() -> Curve:
    """score = log10(words) at 1K, 10K, 100K, 1M: every inverse is a power of ten."""
    return Curve.from_points([(10**k, float(k)) for k in range(3, 7)])


def test_monotone_fit_pools_dips_and_keeps_rising_curves():
    assert monotone_fit([1, 2, 3]).tolist() == [1, 2, 3]
    assert monotone_fit([1, 3, 2, 4]).tolist() == [1, 2.5, 2.5, 4]
    assert monotone_fit([3, 2, 1]).tolist() == [2, 2, 2]
    assert monotone_fit([0, 5, 1, 1, 6]).tolist() == pytest.approx([0, 7 / 3, 7 / 3, 7 / 3, 6])


def test_inverse_of_a_known_curve_is_exact():
    curve = log_curve()
    reach = words_to_reach(curve, 4.5)
    assert reach.position == "inside"
    assert reach.words == pytest.approx(10**4.5)
    # The end points themselves are inside, at exactly their words.
    assert words_to_reach(curve, 3.0).words == pytest.approx(1e3)
    assert words_to_reach(curve, 6.0).words == pytest.approx(1e6)


def test_equivalence_extra_words_and_ratio():
    eq = equivalence(log_curve(), run="r", start_checkpoint="chck_1K", start_words=1_000, interact_words=500,
                     final_score=5.0, start_score=3.0)
    assert eq.position == "inside"
    assert eq.needed_words == pytest.approx(100_000)
    assert eq.extra_words == pytest.approx(99_000)
    assert eq.ratio == pytest.approx(198)
    assert "99K extra words of pretraining" in eq.summary() and "198x" in eq.summary()


@pytest.mark.parametrize(
    "score, position, bound, extra_bound, sign",
    [(2.5, "below", 1e3, 1e3 - 50_000, "<"), (6.5, "above", 1e6, 1e6 - 50_000, ">")],
)
def test_outside_the_curve_gives_a_bound_not_a_number(score, position, bound, extra_bound, sign):
    eq = equivalence(log_curve(), run="r", start_checkpoint="chck_50K", start_words=50_000, interact_words=100,
                     final_score=score)
    assert eq.position == position
    assert eq.needed_words is None and eq.extra_words is None and eq.ratio is None
    assert eq.bound == bound
    assert eq.extra_bound == pytest.approx(extra_bound)
    assert f"{sign} {format_words(extra_bound)}" in eq.summary()
    data = eq.to_json()
    assert data["position"] == position and data["needed_words"] is None


def test_non_monotone_curve_is_inverted_through_its_monotone_fit():
    # Raw scores 1, 3, 2, 4 at 1K, 2K, 4K, 8K; the fit is 1, 2.5, 2.5, 4.
    curve = Curve.from_points([(1_000, 1.0), (2_000, 3.0), (4_000, 2.0), (8_000, 4.0)])
    assert curve.fitted.tolist() == [1, 2.5, 2.5, 4]
    # On the flat stretch the fewest words win: 2.5 is first reached at 2K.
    assert words_to_reach(curve, 2.5).words == pytest.approx(2_000)
    # 2.0 lies 2/3 of the way from 1K (1.0) to 2K (2.5) in log-words.
    assert words_to_reach(curve, 2.0).words == pytest.approx(1_000 * 2 ** (2 / 3))
    # 3.0 lies 1/3 of the way from 4K (2.5) to 8K (4.0).
    assert words_to_reach(curve, 3.0).words == pytest.approx(4_000 * 2 ** (1 / 3))
    # The raw 3.0 at 2K does not count as reaching 3.0 there: the fit pooled it with the dip.
    assert words_to_reach(curve, 3.0).words > 4_000


def test_a_dip_at_the_start_moves_the_lower_edge():
    # Raw 3, 1, 3 fits to 2, 2, 3: a score of 1.5 is below the fitted curve although the raw
    # point at 100 words scored only 1.0.
    curve = Curve.from_points([(10, 3.0), (100, 1.0), (1000, 3.0)])
    assert curve.fitted.tolist() == [2, 2, 3]
    assert words_to_reach(curve, 1.5).position == "below"
    assert words_to_reach(curve, 2.0).words == pytest.approx(10)


def test_curve_drops_zero_words_and_averages_duplicates():
    curve = Curve.from_points([(0, 0.0), (100, 1.0), (100, 2.0), (1000, 3.0)])
    assert curve.words.tolist() == [100, 1000]
    assert curve.scores.tolist() == [1.5, 3.0]
    with pytest.raises(ValueError):
        words_to_reach(Curve.from_points([(100, 1.0)]), 1.0)


def test_the_papers_410M_reading():
    """The paper: 90M after RL (2.28) scores like 500M before RL (2.25): 500M - 90M = 410M."""
    curve = Curve.from_points([(w, start) for w, (start, _end) in PAPER.items()])
    eq = equivalence(curve, run="90M", start_checkpoint="chck_90M", start_words=90 * M, interact_words=1 * M,
                     final_score=PAPER[90 * M][1], start_score=PAPER[90 * M][0])
    # The paper's reading: the largest checkpoint the run reached is 500M.
    assert eq.reached_words == 500 * M
    assert eq.reached_extra == 410 * M
    # Interpolating between 500M (2.25) and 900M (2.64) in log-words refines it a little.
    t = (2.28 - 2.25) / (2.64 - 2.25)
    expected = 10 ** (math.log10(500 * M) + t * (math.log10(900 * M) - math.log10(500 * M)))
    assert eq.needed_words == pytest.approx(expected)
    assert 410 * M < eq.extra_words < 450 * M
    assert eq.ratio == pytest.approx(eq.extra_words / M)
    # 900M after RL (3.37) beats every pretraining checkpoint: only a bound.
    top = equivalence(curve, run="900M", start_checkpoint="chck_900M", start_words=900 * M, interact_words=M,
                      final_score=PAPER[900 * M][1])
    assert top.position == "above" and top.extra_bound == 0
    # 20M after RL (0.20) lies between the 20M and 50M starts.
    low = equivalence(curve, run="20M", start_checkpoint="chck_20M", start_words=20 * M, interact_words=M,
                      final_score=PAPER[20 * M][1])
    assert low.position == "inside" and 0 < low.extra_words < 30 * M
    assert reached_checkpoint(curve, 0.01) is None


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_stories():
    rng = np.random.default_rng(1)
    words = [1e3, 1e4, 1e5, 1e6]

    def sample(mean, n):  # integer totals 0..9 around a mean
        return np.clip(np.round(rng.normal(mean, 1.0, n)), 0, 9)

    widths = []
    for n in (30, 3000):
        curve_samples = [sample(m, n) for m in (2, 3, 4, 5)]
        target = sample(3.5, n)
        point = words_to_reach(Curve.from_points(list(zip(words, [s.mean() for s in curve_samples]))), target.mean())
        iv = bootstrap_needed(words, curve_samples, target, resamples=300, seed=0)
        assert iv.low <= point.words <= iv.high
        assert iv.stories == 5 * n and iv.fixed == []
        widths.append(iv.log10_high - iv.log10_low)
    assert widths[1] < widths[0] / 3
    # Same seed, same interval; curve points given as plain means are held fixed and say so.
    target = sample(3.5, 50)
    a = bootstrap_needed(words, [2.0, 3.0, 4.0, 5.0], target, resamples=200, seed=7)
    b = bootstrap_needed(words, [2.0, 3.0, 4.0, 5.0], target, resamples=200, seed=7)
    assert (a.log10_low, a.log10_high) == (b.log10_low, b.log10_high)
    assert a.fixed == ["point 0", "point 1", "point 2", "point 3"] and a.stories == 50


def test_bootstrap_end_outside_the_curve_is_infinite():
    # A target right at the top of the curve: about half the resamples land above it.
    words = [1e3, 1e4]
    target = np.array([4.0, 6.0] * 20)  # mean 5.0 = the last point
    iv = bootstrap_needed(words, [3.0, 5.0], target, resamples=400, seed=0)
    assert iv.log10_high == math.inf and iv.high == math.inf
    assert math.isfinite(iv.log10_low) and iv.low < 1e4
    eq = equivalence(Curve.from_points([(1e3, 3.0), (1e4, 5.0)]), run="r", start_checkpoint="s",
                     start_words=1_000, interact_words=10, final_score=5.0)
    eq.interval = iv
    assert eq.extra_interval()[1] == math.inf
    assert "above curve" in eq.summary()
    assert eq.to_json()["extra_interval"][1] == "inf"


def test_format_words():
    assert format_words(410 * M) == "410M"
    assert format_words(1_500) == "1.5K"
    assert format_words(2_000_000_000) == "2B"
    assert format_words(12) == "12"
    assert format_words(-6_000) == "-6K"
    assert format_words(None) == "n/a"
