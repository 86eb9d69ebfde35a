"""Agreement when the other ratings come from several people (an ``onceupon annotate`` file).

``onceupon rate --compare OTHER`` comes here (:func:`compare`), which chooses: a file whose
records name an ``annotator`` is compared here, any other ratings file as one more rater's
(:func:`onceupon.teacher.agreement.compare_ratings`). The choice lives here, above the
teacher, so the teacher never needs to know about people's answers.

An annotations file is read as it is: the last record per (annotator, story) is that
annotator's answer, and a skipped story is no rating. Each comparison below uses the
statistics of :func:`onceupon.teacher.agreement.agreement` (Spearman, quadratic-weighted
kappa, exact agreement, mean absolute difference; per criterion and for the total):

- the teacher against each annotator, over the stories that annotator rated;
- the teacher against the annotators' mean (per story and criterion, over whoever rated the
  story; kappa rounds the mean, as it does for expected scores);
- each pair of annotators, over the stories both rated (the shared ones), and the mean of
  each statistic over the pairs: the ceiling. A teacher that agrees with people about as well
  as they agree with each other cannot be expected to do much better.

Every comparison reports how many stories it rests on. One resting on fewer than
:data:`~onceupon.teacher.agreement.MIN_SHARED` (10) shared stories gets no kappa or
Spearman ("not enough shared stories (n)"), and such a pair of annotators is left out of the
ceiling, with a warning naming it. Each kappa has a bootstrap interval over the stories.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onceupon.errors import UserError
from onceupon.files import read_jsonl
from onceupon.schemas.ratings import read_answer_records
from onceupon.schemas.results import read_people_agreement
from onceupon.teacher.agreement import (
    MIN_SHARED, Rated, agreement, compare_ratings, fmt_kappa, load_ratings, save_agreement, too_few,
)
from onceupon.teacher.rubric import Rubric
from onceupon.tracking import print_table

STATS = ("spearman", "kappa", "exact", "mean_abs_diff")


def is_annotations(path: str | Path) -> bool:
    """Whether a ratings file holds ``onceupon annotate`` answers (records name an annotator)."""
    first = next(iter(read_jsonl(path)), None)
    return first is not None and "annotator" in first


def load_annotators(path: str | Path, rubric: Rubric) -> dict[str, list[Rated]]:
    """Each annotator's ratings (their last answer per story; skipped stories left out)."""
    people: dict[str, list[Rated]] = {}
    answers = {(r.annotator, r.id): r for r in read_answer_records(path, rubric)}  # the last answer counts
    for (who, story), answer in answers.items():
        scores = answer.rated(rubric)
        if scores is not None:
            people.setdefault(who, []).append(Rated(story, scores))
    if not people:
        raise UserError(f"{path} holds no rated stories yet (only skips, or answers for another rubric).")
    return dict(sorted(people.items()))


def mean_of(people: dict[str, list[Rated]]) -> list[Rated]:
    """Per story, each criterion's mean over the annotators who rated it."""
    by_story: dict[str, list[dict]] = {}
    for rated in people.values():
        for r in rated:
            by_story.setdefault(r.id, []).append(r.scores)
    return [Rated(sid, {n: sum(s[n] for s in all_) / len(all_) for n in all_[0]}) for sid, all_ in by_story.items()]


def _mean_over_pairs(results: list[dict], rubric: Rubric) -> dict:
    def mean(parts: list[dict]) -> dict:
        out = {}
        for stat in STATS:
            values = [p[stat] for p in parts if p[stat] is not None]
            out[stat] = sum(values) / len(values) if values else None
        return out

    return {
        "pairs": len(results),
        "criteria": {n: mean([r["criteria"][n] for r in results]) for n in rubric.names},
        "total": mean([r["total"] for r in results]),
    }


def compare_with_annotators(teacher: list[Rated], path: str | Path, rubric: Rubric, *, min_shared: int = MIN_SHARED) -> dict:
    """Every comparison of the module docstring. ``left_out``: the pairs of annotators kept out
    of the ceiling for sharing fewer than ``min_shared`` stories, with how many they share."""
    people = load_annotators(path, rubric)

    def compare(a: list[Rated], b: list[Rated]) -> dict:
        return agreement(a, b, rubric, min_shared=min_shared)

    between = {f"{a} ~ {b}": compare(people[a], people[b]) for a, b in combinations(people, 2)}
    counted = [r for r in between.values() if r["enough"]]
    return {
        "annotators": {who: len(rated) for who, rated in people.items()},
        "min_shared": min_shared,
        "teacher_vs": {who: compare(teacher, rated) for who, rated in people.items()},
        "teacher_vs_mean": compare(teacher, mean_of(people)),
        "between": between,
        "between_mean": _mean_over_pairs(counted, rubric) if counted else None,
        "left_out": {pair: r["both_valid"] for pair, r in between.items() if not r["enough"]},
    }


def warnings(result: dict) -> list[str]:
    """One line per pair of annotators left out of the ceiling."""
    return [
        f"{pair.replace(' ~ ', ' and ')} share {shared} rated stor{'y' if shared == 1 else 'ies'}, fewer than "
        f"{result['min_shared']}: left out of the ceiling"
        for pair, shared in result.get("left_out", {}).items()
    ]


def comparison_rows(result: dict) -> list[dict]:
    """The comparisons of a result, one row each, as the table and the report show them:
    label, stories (or pairs), quadratic kappa per criterion, the total's kappa and Spearman."""
    names = list(result["teacher_vs_mean"]["criteria"])
    teacher = Path(result.get("a", "teacher")).name

    def row(label: str, r: dict, n) -> dict:
        return {
            "label": label,
            "n": n,
            "note": too_few(r) if "both_valid" in r else None,  # "not enough shared stories (1)"
            "kappa": {c: r["criteria"][c]["kappa"] for c in names},
            "kappa_interval": {c: r["criteria"][c].get("kappa_interval") for c in names},
            "total_kappa": r["total"]["kappa"],
            "total_kappa_interval": r["total"].get("kappa_interval"),
            "total_spearman": r["total"]["spearman"],
        }

    rows = [row(f"{teacher} vs {who}", r, r["both_valid"]) for who, r in result["teacher_vs"].items()]
    mean = result["teacher_vs_mean"]
    rows.append(row(f"{teacher} vs mean of {len(result['annotators'])} annotator(s)", mean, mean["both_valid"]))
    rows += [row(pair.replace(" ~ ", " vs "), r, r["both_valid"]) for pair, r in result["between"].items()]
    if result["between_mean"]:
        pairs = result["between_mean"]
        left_out = len(result.get("left_out", {}))
        n = f"{pairs['pairs']} pair(s)" + (f", {left_out} left out" if left_out else "")
        rows.append(row("between annotators (ceiling: mean of pairs)", pairs, n))
    return rows


def read_agreement(path: str | Path) -> dict:
    """An ``OURS.agreement.json`` written with people's answers, for ``onceupon report``."""
    result = read_people_agreement(path)  # every field used below, checked (onceupon.schemas.results)
    criteria = list(result["teacher_vs_mean"]["criteria"])
    return {
        "path": str(path), "annotators": result["annotators"], "criteria": criteria, "rows": comparison_rows(result),
        "warnings": warnings(result),
    }


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_comparison(result: dict, console: Console) -> None:
    rows = comparison_rows(result)
    table = Table(title="agreement with people: quadratic kappa [95 % interval] per criterion; the total's kappa and Spearman")
    for column in ["comparison", "stories", *rows[0]["kappa"], "total", "total spearman"]:
        table.add_column(column, justify="left" if column == "comparison" else "right")
    for r in rows:
        kappas = [fmt_kappa({"kappa": r["kappa"][c], "kappa_interval": r["kappa_interval"][c]}, 2) for c in r["kappa"]]
        total = fmt_kappa({"kappa": r["total_kappa"], "kappa_interval": r["total_kappa_interval"]}, 2)
        table.add_row(r["label"], r["note"] or str(r["n"]), *kappas, total, _fmt(r["total_spearman"]))
    print_table(table, console)
    for line in warnings(result):
        console.print(f"warning: {line}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def check_other(other: str | Path, rubric: Rubric) -> None:
    """Read OTHER (``rate --compare``) through its schema now, so that a bad file is one
    sentence before any story is rated rather than after."""
    if is_annotations(other):
        load_annotators(other, rubric)
    else:
        load_ratings(other, rubric)


def compare(ours_path: str | Path, other: str | Path, rubric: Rubric, console: Console | None = None) -> dict:
    """``onceupon rate --compare OTHER``: our ratings against people's answers (an ``onceupon
    annotate`` file) or against another rater's ratings; printed, and written to
    ``OURS.agreement.json``."""
    console = console or Console()
    if is_annotations(other):
        return compare_people(ours_path, other, rubric, console)
    return compare_ratings(ours_path, other, rubric, console)


def compare_people(ours_path: str | Path, path: str | Path, rubric: Rubric, console: Console) -> dict:
    """``onceupon rate --compare`` with an annotations file: print, write OURS.agreement.json."""
    ours = load_ratings(ours_path, rubric)
    result = {"a": str(ours_path), "b": str(path), **compare_with_annotators(ours, path, rubric)}
    print_comparison(result, console)
    report = save_agreement(ours_path, result)
    console.print(f"agreement written to {report}")
    return result
