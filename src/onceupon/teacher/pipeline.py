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
(one call at a time per teacher). ``on_rated(i, rating)``, if given, receives each story's
final rating as soon as it is known, before ``rate`` returns: at once for the rule and the
cache, and story by story for a backend that rates concurrently (the openai backend, which
calls it from its own thread); other backends report when their batch is done. This is how
``onceupon rate`` shows progress per story and keeps every finished rating when stopped
(:meth:`RubricTeacher.cancel`).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable

from onceupon.teacher.base import Backend, Outcome, Rating, Story
from onceupon.teacher.cache import RatingCache
from onceupon.teacher.judges import fingerprint
from onceupon.teacher.policy import is_final, settle, settle_one
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
        #: whether the backend reports each rating as it comes (see the module docstring)
        self.streams = "on_rated" in inspect.signature(backend.rate).parameters

    @property
    def fingerprint(self) -> dict:
        """What decides this teacher's ratings: backend identity, rubric hash and the
        pipeline settings (:mod:`onceupon.teacher.judges`)."""
        return fingerprint(self.identity, self.rubric.hash, vars(self))

    def too_short(self, continuation: str) -> bool:
        n = count_words(continuation)
        return n == 0 or n < self.min_words or not any(ch.isalnum() for ch in continuation)

    def rate(self, stories: list[Story], on_rated: Callable[[int, Rating], None] | None = None) -> list[Rating]:
        with self._lock:
            cleaned = [clean_story(s) for s in stories]
            results: list[Rating | None] = [None] * len(cleaned)
            reported: set[int] = set()

            def report(i: int, rating: Rating) -> None:
                if on_rated is not None and i not in reported:
                    reported.add(i)
                    on_rated(i, rating)

            lowest = self.rubric.lowest()
            todo: list[int] = []
            for i, s in enumerate(cleaned):
                if self.too_short(s.continuation):
                    results[i] = self.rubric.rating(
                        self.rubric.answer(lowest), lowest, attempts=0, outcome=Outcome.RULE, extra={"rule": "too_short"}
                    )
                    report(i, results[i])
                else:
                    todo.append(i)
            if self.cache is not None and todo:
                for i, hit in zip(todo, self.cache.get_many([cleaned[i] for i in todo])):
                    results[i] = hit
                    if hit is not None:
                        report(i, hit)
                todo = [i for i in todo if results[i] is None]
            if todo:
                asked = [cleaned[i] for i in todo]
                fresh = self._ask(asked, lambda j, r: report(todo[j], r))
                fresh = settle(asked, fresh, self.backend.rate, self.invalid_policy, self.invalid_retries, self.rubric)
                if self.cache is not None:
                    self.cache.put_many(asked, fresh)
                for i, r in zip(todo, fresh):
                    results[i] = r
                    report(i, r)
            return results  # type: ignore[return-value]  # every slot is filled above

    def _ask(self, stories: list[Story], report: Callable[[int, Rating], None]) -> list[Rating]:
        """The backend's ratings; those already final are settled and reported as they come."""

        def arrived(j: int, rating: Rating) -> None:
            if is_final(rating, self.invalid_policy, self.invalid_retries):
                report(j, settle_one(rating, self.invalid_policy, self.rubric))

        fresh = self.backend.rate(stories, on_rated=arrived) if self.streams else self.backend.rate(stories)
        if len(fresh) != len(stories):  # a backend bug, never a user error
            raise RuntimeError(f"{self.identity} returned {len(fresh)} ratings for {len(stories)} stories")
        return fresh

    def cancel(self) -> None:
        """Stop a :meth:`rate` call running in another thread, where the backend can (openai:
        at once; the call raises ``concurrent.futures.CancelledError``). Ratings already given
        to ``on_rated`` stand; nothing of the stopped call is cached."""
        cancel = getattr(self.backend, "cancel", None)
        if cancel is not None:
            cancel()

    def status(self) -> str:
        """A short text for progress lines: requests in flight, retries and the seconds since
        the server last answered, where the backend tracks them (openai); "" otherwise."""
        status = getattr(self.backend, "status", None)
        return status() if status is not None else ""

    def close(self) -> None:
        self.backend.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> "RubricTeacher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
