"""What every teacher backend takes and returns.

A teacher rates *stories*: the story prompt and the student's continuation, kept apart so the
teacher judges only the continuation. A :class:`Rating` carries per-criterion scores, the raw
answer and whether it was valid. An invalid rating has no scores and no ``score``: it is never
silently turned into a number (the paper's reference code turned an unparseable answer into 0.5,
above the early mean reward of about 0.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from onceupon.errors import UserError


@dataclass(frozen=True)
class Story:
    prompt: str
    continuation: str
    id: str | None = None


@dataclass
class Rating:
    valid: bool
    raw: str
    #: criterion name -> score on the rubric scale (int, or float in expected-score mode);
    #: None when the rating is invalid.
    scores: dict[str, float] | None = None
    #: weighted mean of the scores normalised to [0, 1] (the paper's T). None exactly when the
    #: rating must be left out of an update: always when invalid, except under
    #: ``invalid_policy: zero``, where an unparseable answer gets 0.0 (valid stays False).
    score: float | None = None
    #: why the rating is invalid (parse failure, request error), None when valid.
    error: str | None = None
    #: how many requests it took (retries included); 0 when no request was needed (cache hit,
    #: empty or too-short continuation, heuristic teacher counts 1 per story).
    attempts: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def total(self) -> float | None:
        """Sum of the criterion scores (the paper's 0..9 'mean teacher score' unit)."""
        return None if self.scores is None else float(sum(self.scores.values()))

    def to_dict(self) -> dict:
        """JSON-ready fields, as written to ratings files: valid, scores, score, total, raw,
        error, attempts (``extra`` is left out: it is diagnostics, not the rating)."""
        return {
            "valid": self.valid,
            "scores": self.scores,
            "score": self.score,
            "total": self.total,
            "raw": self.raw,
            "error": self.error,
            "attempts": self.attempts,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Rating":
        return cls(
            valid=bool(data["valid"]),
            raw=data.get("raw") or "",
            scores=data.get("scores"),
            score=data.get("score"),
            error=data.get("error"),
            attempts=int(data.get("attempts", 1)),
            extra=dict(data.get("extra") or {}),
        )


class Teacher(Protocol):
    #: identifies the teacher for caching and reports, e.g. "openai:meta-llama/Llama-3.1-8B-Instruct".
    identity: str

    def rate(self, stories: list[Story]) -> list[Rating]:
        """Rate stories; one rating per story, in order. Never drops or duplicates a story."""
        ...

    def close(self) -> None: ...


class Backend(Protocol):
    """What a backend implements (see ``backends/``); :func:`onceupon.teacher.factory.build_teacher`
    wraps it into a :class:`Teacher` that cleans stories, applies the short-story rule, the
    cache and the invalid-answer policy. A backend receives cleaned stories only and returns
    one rating per story, in order: valid with scores, or invalid with ``raw`` and ``error``
    (``extra["request_failed"] = True`` when no answer came back at all)."""

    identity: str

    def rate(self, stories: list[Story]) -> list[Rating]: ...

    def close(self) -> None: ...


class TeacherUnavailable(UserError):
    """The teacher stopped answering altogether (every request of a batch failed after all
    retries): carrying on would train on nothing, so the stage stops; a resumable stage can be
    resumed once the server is back."""
