"""Results ``onceupon report`` shows from other commands: a teacher check (``check.json`` of
``check-teacher``) and an agreement with people (``OURS.agreement.json`` of ``rate --compare``
with an annotations file), and a run's evaluation (``results.json`` of ``evaluate``: its
``rows``, one per checkpoint). Only the fields the report reads are named; the rest is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from onceupon.schemas.base import Count, Record, read_json

# --------------------------------------------------------------------------- check.json
class CriterionCheck(Record):
    verdict: str
    discrimination: float | None = Field(ge=0, le=1)
    interval: list[float] | None = Field(None, min_length=2, max_length=2)
    tied: Count
    chance: float | None = Field(ge=0, le=1)
    pairs: Count


class Verdict(Record):
    discriminates: bool
    text: str


class ProbeCounts(Record):
    n: Count
    stories: Count


class AnswerDiversity(Record):
    most_frequent: str | None
    most_frequent_share: float | None = Field(ge=0, le=1)
    entropy_bits: float | None = Field(ge=0)


class Diversity(Record):
    answer: AnswerDiversity


class Answers(Record):
    shown_example: str | None
    example_copy_rate: float | None = Field(ge=0, le=1)
    invalid_rate: float | None = Field(ge=0, le=1)


class Fragments(Record):
    n: Count
    lowest: Count


class Injection(Record):
    verdict: str
    lift: float | None


class Speed(Record):
    ratings_per_s: float | None = Field(ge=0)


class CheckResult(Record):
    verdict: Verdict
    probes: ProbeCounts
    criteria: dict[str, CriterionCheck]
    diversity: Diversity
    answers: Answers
    fragments: Fragments
    injection: Injection
    speed: Speed
    warnings: list[str] = []


def read_check_result(file: str | Path) -> dict:
    """A teacher check's results as the report shows them (the whole file, checked)."""
    return read_json(file, CheckResult, what="the check.json of a directory written by `onceupon check-teacher`").model_dump()


# --------------------------------------------------------------------------- OURS.agreement.json
class Stats(Record):
    kappa: float | None = None
    spearman: float | None = None


class Comparison(Record):
    """One comparison (teacher vs one annotator, vs their mean, or two annotators)."""

    both_valid: Count
    criteria: dict[str, Stats]
    total: Stats


class PairsMean(Record):
    pairs: Count
    criteria: dict[str, Stats]
    total: Stats


class PeopleAgreement(Record):
    annotators: dict[str, Count]
    teacher_vs: dict[str, Comparison]
    teacher_vs_mean: Comparison
    between: dict[str, Comparison]
    between_mean: PairsMean | None = None

    @model_validator(mode="before")
    @classmethod
    def _with_people(cls, data: Any) -> Any:
        if isinstance(data, dict) and "teacher_vs" not in data:  # e.g. two raters' agreement, or results.json
            raise ValueError("not an agreement with people (no 'teacher_vs'); compare with an onceupon annotate file to write one")
        return data


def read_people_agreement(path: str | Path) -> dict:
    """An agreement with people (``OURS.agreement.json``), checked, as a dict."""
    what = "the OURS.agreement.json that `onceupon rate --compare` writes with an annotations file"
    return read_json(path, PeopleAgreement, what=what).model_dump()


class EvaluationResults(Record):
    rows: list[dict] = Field(description="one row per checkpoint evaluated")


def read_evaluation_results(path: str | Path) -> dict:
    """A run's ``results.json`` (written by ``onceupon evaluate``), checked, as a dict."""
    return read_json(path, EvaluationResults, what="the results.json `onceupon evaluate` writes").model_dump()
