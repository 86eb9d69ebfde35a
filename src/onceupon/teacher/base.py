"""What every teacher backend takes and returns.

A teacher rates *stories*: the story prompt and the student's continuation, kept apart so the
teacher judges only the continuation. A :class:`Rating` carries per-criterion scores, the raw
answer and whether it was valid. An invalid rating has no scores and no ``score``: it is never
silently turned into a number (REFERENCE.md lists what the reference code got wrong).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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
    #: weighted mean of the scores normalised to [0, 1] (the paper's T); None when invalid.
    score: float | None = None
    #: why the rating is invalid (parse failure, request error), None when valid.
    error: str | None = None
    #: how many requests it took (retries included).
    attempts: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def total(self) -> float | None:
        """Sum of the criterion scores (the paper's 0..9 'mean teacher score' unit)."""
        return None if self.scores is None else float(sum(self.scores.values()))


class Teacher(Protocol):
    #: identifies the teacher for caching and reports, e.g. "openai:meta-llama/Llama-3.1-8B-Instruct".
    identity: str

    def rate(self, stories: list[Story]) -> list[Rating]:
        """Rate stories; one rating per story, in order. Never drops or duplicates a story."""
        ...

    def close(self) -> None: ...
