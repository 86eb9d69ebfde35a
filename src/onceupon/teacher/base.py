"""What every teacher backend takes and returns.

A teacher rates *stories*: the story prompt and the student's continuation, kept apart so the
teacher judges only the continuation. A :class:`Rating` carries per-criterion scores, the raw
answer and whether it was valid. An invalid rating has no scores and no ``score``: it is never
silently turned into a number (the paper's reference code turned an unparseable answer into 0.5,
above the early mean reward of about 0.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from onceupon.errors import UserError


@dataclass(frozen=True)
class Story:
    prompt: str
    continuation: str
    id: str | None = None


class Outcome(str, Enum):
    """How a rating came about. A str, so it is written to JSON as its value."""

    #: the teacher answered (the answer may still be invalid: unparseable)
    ANSWERED = "answered"
    #: the server refused the request (HTTP 4xx other than 429): asking again will not help
    REJECTED = "rejected"
    #: no usable answer after every retry: timeouts, refused or dropped connections, 429/5xx,
    #: or a reply that is not a chat completion at all (HTML, plain text, broken JSON)
    FAILED = "failed"
    #: no request: the rubric's rule for empty or too-short stories gave the lowest scores
    RULE = "rule"
    #: no request: the rating came from the rating cache
    CACHED = "cached"


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
    outcome: Outcome = Outcome.ANSWERED
    #: every answer the teacher gave for this story, oldest first, answers a retry replaced
    #: included (the last one is ``raw``); empty when no answer came back. Defaults to
    #: ``[raw]`` (or ``[]`` for an empty ``raw``) when not given.
    answers: list[str] | None = None
    #: diagnostics only (nothing in the pipeline reads them back)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.answers is None:
            self.answers = [self.raw] if self.raw else []
        self.outcome = Outcome(self.outcome)

    @property
    def request_failed(self) -> bool:
        """No answer came back (refused or failed): the rating says nothing about the story."""
        return self.outcome in (Outcome.REJECTED, Outcome.FAILED)

    @property
    def total(self) -> float | None:
        """Sum of the criterion scores (the paper's 0..9 'mean teacher score' unit)."""
        return None if self.scores is None else float(sum(self.scores.values()))

    def to_dict(self) -> dict:
        """JSON-ready fields, as written to ratings files: valid, scores, score, total, raw,
        error, attempts, outcome, answers (``extra`` is left out: it is diagnostics, not the
        rating)."""
        return {
            "valid": self.valid,
            "scores": self.scores,
            "score": self.score,
            "total": self.total,
            "raw": self.raw,
            "error": self.error,
            "attempts": self.attempts,
            "outcome": self.outcome.value,
            "answers": list(self.answers or []),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Rating":
        """The inverse of :meth:`to_dict`. Records written before ``outcome`` and ``answers``
        existed load as answered, with ``answers`` = ``[raw]``."""
        outcome = data.get("outcome")
        answers = data.get("answers")
        return cls(
            valid=bool(data["valid"]),
            raw=data.get("raw") or "",
            scores=data.get("scores"),
            score=data.get("score"),
            error=data.get("error"),
            attempts=int(data.get("attempts", 1)),
            outcome=Outcome(outcome) if outcome in Outcome._value2member_map_ else Outcome.ANSWERED,
            answers=[str(a) for a in answers] if isinstance(answers, list) else None,
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
    (``outcome`` REJECTED or FAILED when no answer came back at all).

    A backend that rates stories concurrently may also accept ``on_rated`` (as
    ``rate(stories, on_rated=None)``) and call ``on_rated(i, rating)`` as each story's rating
    arrives; the pipeline then reports progress story by story (the openai backend does)."""

    identity: str

    def rate(self, stories: list[Story]) -> list[Rating]: ...

    def close(self) -> None: ...


class TeacherUnavailable(UserError):
    """The teacher stopped answering altogether (every request of a batch failed after all
    retries): carrying on would train on nothing, so the stage stops; a resumable stage can be
    resumed once the server is back."""
