"""What happens to an invalid rating: the one place the ``invalid_policy`` is applied.

- ``exclude`` (default): the rating stays invalid, ``score`` stays None, and the update
  leaves the story out. It is still recorded (raw answer, error) and counted.
- ``retry``: ask again, up to ``invalid_retries`` more times, for answers that could not be
  parsed; what is still invalid afterwards is excluded. Attempts add up.
- ``zero``: an unparseable answer counts as the lowest score on every criterion
  (``score`` 0.0, ``valid`` still False, ``extra["policy"] = "zero"``), the reference
  code's behaviour made explicit and visible.

A request that got no answer (``Rating.request_failed``: refused, or failed after every
transport retry) is never retried here and never zeroed: it says nothing about the story, so
it is always excluded. Every answer a retry replaces stays in the new rating's ``answers``, so
the interaction budget counts all the teacher's words.
"""

from __future__ import annotations

from collections.abc import Callable

from onceupon.teacher.base import Rating, Story
from onceupon.teacher.rubric import Rubric


def _unparseable(rating: Rating) -> bool:
    """An answer came back but could not be read (and no policy has scored it yet)."""
    return not rating.valid and not rating.request_failed and rating.score is None


def is_final(rating: Rating, policy: str, retries: int) -> bool:
    """Whether ``rating``, fresh from the backend, is already final: it will not be asked
    again (and :func:`settle_one` completes it)."""
    return not (policy == "retry" and retries > 0 and _unparseable(rating))


def settle_one(rating: Rating, policy: str, rubric: Rubric) -> Rating:
    """The policy applied to one final rating (``zero`` scores an unparseable answer);
    idempotent."""
    if policy == "zero" and _unparseable(rating):
        rating.scores = rubric.lowest()
        rating.score = rubric.normalise(rating.scores)
        rating.extra["policy"] = "zero"
    elif policy not in ("exclude", "retry", "zero"):
        raise ValueError(f"unknown invalid_policy {policy!r}")
    return rating


def settle(
    stories: list[Story],
    ratings: list[Rating],
    ask: Callable[[list[Story]], list[Rating]],
    policy: str,
    retries: int,
    rubric: Rubric,
) -> list[Rating]:
    """Apply the policy to ``ratings`` (one per story, from ``ask``); returns the final list."""
    ratings = list(ratings)
    if policy == "retry":
        for _ in range(retries):
            again = [i for i, r in enumerate(ratings) if _unparseable(r)]
            if not again:
                break
            fresh = ask([stories[i] for i in again])
            for i, new in zip(again, fresh, strict=True):
                old = ratings[i]
                new.attempts += old.attempts
                new.answers = [*old.answers, *new.answers]
                ratings[i] = new
    return [settle_one(r, policy, rubric) for r in ratings]
