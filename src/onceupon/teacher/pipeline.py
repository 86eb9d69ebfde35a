"""The teacher every stage uses: clean, apply the short-story rule, cache, backend, policy.

``RubricTeacher.rate`` does, for a list of stories, in order:

1. clean prompt and continuation of special tokens and our delimiters (rubric.clean_text);
2. give continuations that are empty or shorter than ``min_words`` words the lowest score on
   every criterion without asking the backend (the rubric's own rule for stories shorter
   than a sentence; ``outcome`` RULE, ``extra["rule"] = "too_short"``, attempts 0);
3. take what the cache already knows (if a cache is configured);
4. ask the backend for the rest;
5. apply the invalid-answer policy (policy.settle) and store new valid ratings in the cache.

It returns exactly one rating per story, in order, and is safe to call from any thread
(one call at a time per teacher).
"""

from __future__ import annotations

import threading

from onceupon.teacher.base import Backend, Outcome, Rating, Story
from onceupon.teacher.cache import RatingCache
from onceupon.teacher.policy import settle
from onceupon.teacher.rubric import Rubric, clean_story
from onceupon.words import count_words


class RubricTeacher:
    def __init__(
        self,
        backend: Backend,
        rubric: Rubric,
        *,
        invalid_policy: str = "exclude",
        invalid_retries: int = 2,
        min_words: int = 3,
        cache: RatingCache | None = None,
    ):
        self.backend = backend
        self.rubric = rubric
        self.identity = backend.identity
        self.invalid_policy = invalid_policy
        self.invalid_retries = invalid_retries
        self.min_words = min_words
        self.cache = cache
        self._lock = threading.Lock()

    def too_short(self, continuation: str) -> bool:
        n = count_words(continuation)
        return n == 0 or n < self.min_words or not any(ch.isalnum() for ch in continuation)

    def rate(self, stories: list[Story]) -> list[Rating]:
        with self._lock:
            cleaned = [clean_story(s) for s in stories]
            results: list[Rating | None] = [None] * len(cleaned)
            lowest = self.rubric.lowest()
            todo: list[int] = []
            for i, s in enumerate(cleaned):
                if self.too_short(s.continuation):
                    results[i] = self.rubric.rating(
                        self.rubric.answer(lowest), lowest, attempts=0, outcome=Outcome.RULE, extra={"rule": "too_short"}
                    )
                else:
                    todo.append(i)
            if self.cache is not None and todo:
                for i, hit in zip(todo, self.cache.get_many([cleaned[i] for i in todo])):
                    results[i] = hit
                todo = [i for i in todo if results[i] is None]
            if todo:
                asked = [cleaned[i] for i in todo]
                fresh = self.backend.rate(asked)
                if len(fresh) != len(asked):  # a backend bug, never a user error
                    raise RuntimeError(f"{self.identity} returned {len(fresh)} ratings for {len(asked)} stories")
                fresh = settle(asked, fresh, self.backend.rate, self.invalid_policy, self.invalid_retries, self.rubric)
                if self.cache is not None:
                    self.cache.put_many(asked, fresh)
                for i, r in zip(todo, fresh):
                    results[i] = r
            return results  # type: ignore[return-value]  # every slot is filled above

    def close(self) -> None:
        self.backend.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> "RubricTeacher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
