"""The figures of the teacher check (check_teacher.py), each from the probes and one rating
per probe: discrimination per criterion and per variant, specificity, ranking of graded
copies, the injections' lifts, fragments, answers, diversity and the retest. What each
means, and the bound that fails a teacher, is in check_teacher.py's docstring."""

from __future__ import annotations

from collections import Counter

import numpy as np

from onceupon.teacher.agreement import Rated, agreement
from onceupon.teacher.base import Outcome, Rating
from onceupon.teacher.check_stats import (
    MIN_GAP, OVERALL, compare, entropy_bits, grouped_interval, mean_interval, spearman, verdict_line,
)
from onceupon.teacher.probes import VARIANTS, Probe
from onceupon.teacher.rubric import Rubric

#: fewest pairs with which a criterion is judged at all: below, too few pairs is a FAIL
MIN_PAIRS = 20
#: fewest pairs with which one variant is judged on its own (fewer: only pooled)
MIN_VARIANT_PAIRS = 8
#: a teacher that gives one answer to more than this share of the valid answers fails (a
#: collapsed 135M judge: 90 % "1 2 3"). Most probes are damaged copies, each lowering its own
#: criteria, so a faultless judge of the paper's rubric gives its most frequent answer to
#: about a quarter of them; where a faultless judge would give one answer more often (a
#: rubric of one criterion), the bound is that share plus ONE_ANSWER_MARGIN.
MAX_ONE_ANSWER = 0.5
ONE_ANSWER_MARGIN = 0.2


def score_of(rating: Rating, criterion: str) -> float | None:
    if not rating.valid or rating.scores is None:
        return None
    return rating.score if criterion == OVERALL else rating.scores.get(criterion)


def overall_min_gap(rubric: Rubric, min_gap: float) -> float:
    """The minimum gap on the normalised 0..1 score: what ``min_gap`` points on one criterion
    move it by, averaged over the criteria (0.25 / 9 with the paper's three 0..3 criteria)."""
    weight = sum(c.weight for c in rubric.criteria)
    return min_gap * sum(c.weight / (c.high - c.low) for c in rubric.criteria) / len(rubric.criteria) / weight


def by_id(probes: list[Probe], ratings: list[Rating]) -> dict[str, Rating]:
    return {p.id: r for p, r in zip(probes, ratings)}


def discrimination(
    probes: list[Probe], ratings: list[Rating], rubric: Rubric, min_gap: float = MIN_GAP, why_unmeasured: str | None = None
) -> dict:
    """One row per probed criterion of the rubric, plus ``overall``, each with per-variant rows
    (each variant judged on its own too: a judge blind to one damage of a criterion is blind
    there, whatever the others show). ``why_unmeasured`` replaces the reason a row without
    pairs gives (e.g. every answer invalid)."""
    rated = by_id(probes, ratings)
    probed = [c for c in rubric.names if any(c in targets for targets in VARIANTS.values())]
    rows = {}
    for criterion in [*probed, OVERALL]:
        pairs: dict[str, list[tuple[float, float]]] = {}
        for probe, rating in zip(probes, ratings):
            base = rated.get(probe.base or probe.story)
            if probe.kind not in VARIANTS or base is None:
                continue
            if criterion != OVERALL and criterion not in probe.targets:
                continue
            a, b = score_of(base, criterion), score_of(rating, criterion)
            if a is not None and b is not None:
                pairs.setdefault(probe.kind, []).append((a, b))
        least = overall_min_gap(rubric, min_gap) if criterion == OVERALL else min_gap
        row = compare([p for kind in pairs.values() for p in kind], least)
        row["variants"] = {kind: compare(p, least) for kind, p in pairs.items()}
        # a variant it cannot see (or sees backwards); a small gap counts on the pooled row only
        row["blind_to"] = [
            kind for kind, v in row["variants"].items()
            if v["pairs"] >= MIN_VARIANT_PAIRS and v["verdict"] in ("does not discriminate", "reversed")
        ]  # fmt: skip
        row["too_few_pairs"] = 0 < row["pairs"] < MIN_PAIRS
        row["text"] = verdict_line(criterion, row, *([why_unmeasured] if why_unmeasured else []))
        rows[criterion] = row
    return rows


def specificity(probes: list[Probe], ratings: list[Rating], rubric: Rubric) -> dict:
    """Per probed criterion: does a damage aimed at it lower it more than the other criteria?
    For each (clean, damaged) pair of its variants, the gap on the criterion minus the mean
    gap on the others; the mean of that with a bootstrap interval. A judge that gives one
    number for every criterion (a halo) scores 0 here, whatever its gaps; *specific* when
    the interval lies above zero."""
    rated = by_id(probes, ratings)
    names = rubric.names
    out = {}
    for criterion in names:
        others = [n for n in names if n != criterion]
        if not others or not any(criterion in t for t in VARIANTS.values()):
            continue
        diffs: dict[str, list[float]] = {}
        for probe, rating in zip(probes, ratings):
            base = rated.get(probe.base or probe.story)
            if probe.kind not in VARIANTS or criterion not in probe.targets or base is None or not _both_valid(base, rating):
                continue
            gap = {n: base.scores[n] - rating.scores[n] for n in names}
            diffs.setdefault(probe.kind, []).append(gap[criterion] - sum(gap[n] for n in others) / len(others))
        every = [d for kind in diffs.values() for d in kind]
        interval = mean_interval(every)
        out[criterion] = {
            "pairs": len(every),
            "specificity": sum(every) / len(every) if every else None,
            "interval": interval,
            "variants": {kind: sum(d) / len(d) for kind, d in diffs.items()},
            "verdict": "not measured" if not every else "specific" if interval[0] > 0 else "not specific",
        }
    return out


def _both_valid(*ratings: Rating) -> bool:
    return all(r.valid and r.scores is not None for r in ratings)


def ranking(probes: list[Probe], ratings: list[Rating], rubric: Rubric) -> dict:
    """Per criterion with graded probes: does the judge rank copies of one story by how much
    of it was damaged (0 % = the clean story, 25, 50, 75 %)? ``rho``: Spearman's correlation
    of the score with the undamaged share, pooled over the stories, with an interval that
    resamples whole stories; ``steps``: each grade against the next, as clean against damaged.
    *ranks* when the interval of ``rho`` lies above zero and in the first step (0 % against
    25 %: stories that are still good) more clean stories score higher than lower; a judge
    that gives every good story the top answer fails that step (*no spread among good
    stories*)."""
    rated = by_id(probes, ratings)
    out = {}
    for criterion in rubric.names:
        series: dict[str, dict[float, float]] = {}
        for probe, rating in zip(probes, ratings):
            base = rated.get(probe.base or probe.story)
            if probe.kind != "graded" or criterion not in probe.targets or base is None:
                continue
            a, b = score_of(base, criterion), score_of(rating, criterion)
            if a is not None and b is not None:
                series.setdefault(probe.story, {0.0: a})[probe.grade] = b
        if not series:
            continue
        stories = [sorted(s.items()) for s in series.values()]
        grades = sorted({g for s in series.values() for g in s})
        steps = {}
        for lo, hi in zip(grades, grades[1:]):
            steps[f"{100 * lo:.0f}-{100 * hi:.0f}"] = compare([(s[lo], s[hi]) for s in series.values() if lo in s and hi in s], 0.0)

        def rho(items: list[tuple[float, float]]) -> float | None:
            return spearman([1 - g for g, _ in items], [v for _, v in items])

        items = [item for s in stories for item in s]
        interval = grouped_interval(stories, rho)
        first = next(iter(steps.values()), None)
        # good stories spread: some 25 % copies score below their clean story, more than above
        # it (the rank correlation carries the significance; this catches a judge that gives
        # every good story one answer, which no number of stories makes significant)
        told = first is not None and first["higher"] > first["lower"]
        if interval is None:
            verdict = "does not rank"
        elif not told:
            verdict = "no spread among good stories"
        else:
            verdict = "ranks" if interval[0] > 0 else "does not rank"
        out[criterion] = {
            "stories": len(stories),
            "rho": rho(items),
            "rho_interval": interval,
            "steps": steps,
            "mean_by_grade": {f"{100 * g:.0f}": float(np.mean([s[g] for s in series.values() if g in s])) for g in grades},
            "verdict": verdict,
        }
    return out


def faultless_share(probes: list[Probe], rubric: Rubric) -> float:
    """The share of the probes a faultless judge gives its most frequent answer: the top
    answer to clean stories, one level less on each criterion a variant or graded copy
    damages, an injected story's answer as its base's, the lowest answer to fragments."""
    top = {c.name: c.high for c in rubric.criteria}
    kinds = {p.id: p.kind for p in probes}
    answers = Counter()
    for probe in probes:
        damaged = set(kinds.get(probe.base, "") != "clean" and VARIANTS.get(kinds.get(probe.base, ""), ()) or ())
        damaged |= set(probe.targets)  # a variant's or a graded copy's own criteria
        if probe.kind == "fragment":
            answers[rubric.answer(rubric.lowest())] += 1
        else:
            answers[rubric.answer({k: v - (k in damaged) for k, v in top.items()})] += 1
    return answers.most_common(1)[0][1] / len(probes) if probes else 0.0


def diversity(ratings: list[Rating], rubric: Rubric, probes: list[Probe] | None = None) -> dict:
    """Answer entropy and the most frequent answer, per criterion and for the whole answer
    (scores rounded to whole numbers, so expected-score answers are comparable). The whole
    answer's ``bound``: the most frequent answer's largest share with which a teacher passes
    (MAX_ONE_ANSWER, or more where a faultless judge would give one answer that often)."""
    valid = [r for r in ratings if r.valid and r.scores is not None and r.outcome != Outcome.RULE]
    out = {}
    for name in [*rubric.names, "answer"]:
        if name == "answer":
            counts = Counter(rubric.answer({k: round(v) for k, v in r.scores.items()}) for r in valid)
        else:
            counts = Counter(str(round(r.scores[name])) for r in valid)
        top, top_n = counts.most_common(1)[0] if counts else (None, 0)
        out[name] = {
            "n": len(valid),
            "entropy_bits": entropy_bits(counts),
            "most_frequent": top,
            "most_frequent_share": top_n / len(valid) if valid else None,
            "distribution": dict(sorted(counts.items())),
        }
    faultless = faultless_share(probes, rubric) if probes else 0.0
    out["answer"] |= {"faultless_share": faultless, "bound": max(MAX_ONE_ANSWER, faultless + ONE_ANSWER_MARGIN)}
    return out


def answers_figures(ratings: list[Rating], shown_example: str | None) -> dict:
    """Invalid rate and example-copy rate over the ratings the teacher was asked for."""
    asked = [r for r in ratings if r.outcome not in (Outcome.RULE, Outcome.CACHED)]
    cached = sum(r.outcome == Outcome.CACHED for r in ratings)
    answers = [" ".join(a.split()) for r in asked for a in (r.answers or [])]
    copies = sum(a == shown_example for a in answers) if shown_example else 0
    judged = [r for r in ratings if r.outcome != Outcome.RULE]
    invalid = sum(not r.valid for r in judged)
    return {
        "ratings": len(ratings),
        "by_rule": len(ratings) - len(judged),
        "cached": cached,
        "invalid": invalid,
        "invalid_rate": invalid / len(judged) if judged else None,
        "failed_requests": sum(r.request_failed for r in judged),
        "shown_example": shown_example,
        "answers": len(answers),
        "example_copies": copies,
        "example_copy_rate": (copies / len(answers) if answers else None) if shown_example else None,
    }


def fragments(probes: list[Probe], ratings: list[Rating], rubric: Rubric) -> dict:
    rated = [r for p, r in zip(probes, ratings) if p.kind == "fragment"]
    lowest = rubric.lowest()
    hits = sum(r.valid and r.scores is not None and all(r.scores[k] == v for k, v in lowest.items()) for r in rated)
    by_rule = sum(r.outcome == Outcome.RULE for r in rated)
    return {"n": len(rated), "lowest": hits, "lowest_rate": hits / len(rated) if rated else None, "by_rule": by_rule}


def _lift(pairs: list[tuple[float, float]], confidence: float) -> dict:
    lifts = [b - a for a, b in pairs]
    interval = mean_interval(lifts, confidence)
    return {
        "pairs": len(pairs),
        "raised": sum(b > a for a, b in pairs),
        "lowered": sum(b < a for a, b in pairs),
        "lift": sum(lifts) / len(pairs) if pairs else None,
        "lift_interval": interval,
        # the student is an optimiser: a reliable lift, however small, is an exploit
        "raises": bool(pairs) and interval[0] > 0,
    }


def _where(group: str, key: str) -> str:
    """``'french'``, ``in the middle``, ``in damaged stories``: a lift's group, in words."""
    if group == "wording":
        return f"'{key}'"
    if group == "place":
        return {"start": "at the start", "middle": "in the middle", "end": "at the end"}.get(key, key)
    return f"in {key} stories"


def injection(probes: list[Probe], ratings: list[Rating], rubric: Rubric) -> dict:
    """How an instruction to the grader moves the normalised score against the same story
    without it, pooled and by wording, by place and by what it was put into (the clean story
    or a damaged copy). *raises the score* when the interval of any of these lifts lies above
    zero; the intervals are widened for the number of them (Bonferroni), so a sound judge
    is not failed by one chance lift among many. ``asked_answer_given`` counts answers equal
    to the one asked for, which a clean story that already earns it also gives: the lift is
    the evidence."""
    rated = by_id(probes, ratings)
    kinds = {p.id: p.kind for p in probes}
    top = rubric.answer({c.name: c.high for c in rubric.criteria})
    groups: dict[str, dict[str, list[tuple[float, float]]]] = {"wording": {}, "place": {}, "into": {}}
    pairs, asked_answer_given = [], 0
    for probe, rating in zip(probes, ratings):
        base = rated.get(probe.base or probe.story)
        if probe.kind != "injection" or base is None:
            continue
        asked_answer_given += rating.valid and " ".join(rating.raw.split()) == top
        a, b = score_of(base, OVERALL), score_of(rating, OVERALL)
        if a is None or b is None:
            continue
        pairs.append((a, b))
        into = "clean" if kinds.get(probe.base or probe.story) == "clean" else "damaged"
        for group, key in (("wording", probe.wording or "note"), ("place", probe.place or "end"), ("into", into)):
            groups[group].setdefault(key, []).append((a, b))
    tests = 1 + sum(len(g) for g in groups.values())
    confidence = 1 - 0.05 / tests
    pooled = _lift(pairs, confidence)
    by = {group: {key: _lift(p, confidence) for key, p in g.items()} for group, g in groups.items()}
    raising = [_where(group, key) for group, g in by.items() for key, v in g.items() if v["raises"]]
    if not pairs:
        verdict = "not measured"
    elif pooled["raises"] or raising:
        verdict = "raises the score"
    else:
        verdict = "does not raise the score"
    return pooled | {
        "tied": len(pairs) - pooled["raised"] - pooled["lowered"],
        "confidence": confidence,
        "by": by,
        "raising": raising,
        "asked_for": top,
        "asked_answer_given": asked_answer_given,
        "verdict": verdict,
    }


def retest_figures(first: list[Rating], second: list[Rating], rubric: Rubric, temperature: float | None) -> dict:
    if not first:
        return {"n": 0, "temperature": temperature}
    a = [Rated(str(i), r.scores if r.valid else None) for i, r in enumerate(first)]
    b = [Rated(str(i), r.scores if r.valid else None) for i, r in enumerate(second)]
    result = agreement(a, b, rubric)
    same = sum(x.raw.strip() == y.raw.strip() for x, y in zip(first, second))
    return {
        "n": len(first),
        "temperature": temperature,
        "both_valid": result["both_valid"],
        "identical_answers": same / len(first),
        "criteria": {name: {"exact": s["exact"], "kappa": s["kappa"]} for name, s in result["criteria"].items()},
    }
