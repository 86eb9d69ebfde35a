"""Ratings (a teacher's or a spreadsheet of people's) and annotations (``onceupon annotate``'s
answers log), checked against the rubric in use: every score of a rubric criterion is a finite
number on that criterion's scale (the paper's: 0..3).

A ratings line: ``id`` (optional), ``valid`` (optional; false: an invalid rating), and the
scores either as ``scores`` {criterion: number} (our ratings files, anthologies) or as the
criteria at the top level (a spreadsheet). ``scores: null`` or a criterion left out or null
make the rating invalid (counted as such, not an error); a score that is not a number, not
finite, or off the scale is an error.

An annotations line: ``id`` (the story), ``annotator`` (a name), ``scores`` ({criterion: whole
number on the scale}, or null when skipped), and optionally ``skipped``, ``flagged``,
``comment``, ``time``. Answers given for another rubric (none of this one's criteria) are
kept and left out of the comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, model_validator

from onceupon.errors import UserError
from onceupon.schemas.base import Id, Record, read_records


def _check_scale(source: dict, rubric, prefix: str, whole: bool) -> None:
    """Every rubric criterion present in ``source`` holds a number on its scale."""
    for c in rubric.criteria:
        value = source.get(c.name)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (whole and not isinstance(value, int)) or not c.low <= value <= c.high:
            kind = "a whole number" if whole else "a number"
            shown = value if isinstance(value, (int, float, str)) else type(value).__name__
            raise ValueError(f"field '{prefix}{c.name}' must be {kind} from {c.low} to {c.high} (got {shown!r})")


class RatingRecord(Record):
    """One rating; validate with ``context={"rubric": rubric}``."""

    id: Id | None = None
    valid: bool | None = None
    scores: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _on_scale(self, info: ValidationInfo) -> "RatingRecord":
        nested = "scores" in self.model_fields_set
        source = self.scores if nested else self.model_extra
        if source is not None:
            _check_scale(source, info.context["rubric"], "scores." if nested else "", whole=False)
        return self

    def holds_rating(self, rubric) -> bool:
        """Whether the line is a rating at all (valid or not), not a bare story."""
        fields = self.model_fields_set | set(self.model_extra or {})
        return bool(fields & {"scores", "valid", *rubric.names})

    def rated(self, rubric) -> dict[str, float] | None:
        """{criterion: score} of a valid rating, None for an invalid one."""
        source = self.scores if "scores" in self.model_fields_set else self.model_extra
        if self.valid is False or source is None or any(source.get(n) is None for n in rubric.names):
            return None
        return {n: float(source[n]) for n in rubric.names}


def read_rating_records(path: str | Path, rubric) -> list[RatingRecord]:
    """Every rating of a ratings file, each checked against ``rubric``'s scales."""
    records = [r for _, r in read_records(path, RatingRecord, context={"rubric": rubric}, holding="ratings")]
    if not any(r.holds_rating(rubric) for r in records):
        raise UserError(
            f"{path} holds stories but no ratings (no line has 'scores', 'valid' or a criterion of the rubric); "
            "rate it first (onceupon rate without --as-rated)."
        )
    return records


class AnswerRecord(Record):
    """One answer of the annotations log; validate with ``context={"rubric": rubric}``."""

    id: Id
    annotator: str = Field(min_length=1)
    scores: dict[str, Any] | None = None
    skipped: bool = False
    flagged: bool = False
    comment: str = ""
    time: str | None = None

    @model_validator(mode="after")
    def _on_scale(self, info: ValidationInfo) -> "AnswerRecord":
        if self.scores is not None:
            _check_scale(self.scores, info.context["rubric"], "scores.", whole=True)
        return self

    def rated(self, rubric) -> dict[str, float] | None:
        """{criterion: score}, None for a skip or an answer for another rubric."""
        if self.scores is None or any(self.scores.get(n) is None for n in rubric.names):
            return None
        return {n: float(self.scores[n]) for n in rubric.names}


def read_answer_records(path: str | Path, rubric) -> list[AnswerRecord]:
    """Every answer of an annotations log, in the order given."""
    return [r for _, r in read_records(path, AnswerRecord, context={"rubric": rubric})]
