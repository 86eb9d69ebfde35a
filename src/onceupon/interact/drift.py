"""Drift signals: what a reviewer reading a run's stories would look at, measured on every step.

RL finds what a judge rewards without judging, and what it finds shows in the stories before
it shows anywhere else: the paper's best-rated stories drifted toward meta-stories praising the
listener ("as you have told us a great story"). These signals are cheap (word counting on one
step's stories) and need no second judge:

- ``address``: the share of stories that address the listener or the grader: the second person
  ("you", "your"), praise of the telling ("great story", "well done") or the grader's words
  ("rate", "score", "grader", "marks", "points", "judge"). Stories quote people thanking each
  other ("Thank you!"), so the share is never 0; what matters is how far it rises.
- ``distinct1``, ``distinct2``: distinct words (bigrams) over all words (bigrams) of the step's
  stories: falls when the stories collapse onto one text.
- ``repetition``: the mean share of a story's word trigrams that repeat an earlier trigram of
  the same story: rises when a story loops.
- ``words``, ``at_length_cap``: the mean length, and the share of stories long enough to earn
  the whole length bonus (a reward for length alone is a blind spot too).
- ``invalid``: the share of the teacher's answers that were not valid ratings.

:class:`Presence` keeps, per word and bigram, the share of stories that contain it, so the
watch can name what grew most since the first steps (:func:`growing`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_WORD = re.compile(r"[a-z']+")
#: second person, praise of the telling, the grader's vocabulary (lower-case text)
ADDRESS = re.compile(
    r"\b(?:you|your|yours|yourself|yourselves|y'all"
    r"|dear (?:reader|listener|judge|teacher|friend)s?|readers?|listeners?"
    r"|(?:great|good|wonderful|amazing|lovely|fine|best|perfect) (?:story|tale|job|telling)|well done|bravo"
    r"|rate|rated|rating|ratings|score|scored|scores|scoring|grader|graders|grade|graded|judge|judges|marks|points"
    r"|full marks|top marks|\d\s*/\s*\d)\b"
)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def addresses(text: str) -> bool:
    """Whether a story addresses its listener or grader (see the module docstring)."""
    return ADDRESS.search(text.lower()) is not None


def _bigrams(ws: list[str]) -> list[str]:
    return [f"{a} {b}" for a, b in zip(ws, ws[1:])]


def _repetition(ws: list[str]) -> float:
    trigrams = list(zip(ws, ws[1:], ws[2:]))
    return 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0


def signals(texts: list[str], n_words: list[int], valid: list[bool], length_norm_words: int) -> dict[str, float | None]:
    """One step's drift signals (see the module docstring); None where a step has no story."""
    if not texts:
        return dict.fromkeys(("address", "distinct1", "distinct2", "repetition", "words", "at_length_cap", "invalid"))
    tokenised = [words(t) for t in texts]
    unigrams = [w for ws in tokenised for w in ws]
    bigrams = [b for ws in tokenised for b in _bigrams(ws)]
    n = len(texts)
    return {
        "address": sum(addresses(t) for t in texts) / n,
        "distinct1": len(set(unigrams)) / len(unigrams) if unigrams else None,
        "distinct2": len(set(bigrams)) / len(bigrams) if bigrams else None,
        "repetition": sum(_repetition(ws) for ws in tokenised) / n,
        "words": sum(n_words) / n,
        "at_length_cap": sum(w >= length_norm_words for w in n_words) / n,
        "invalid": sum(not v for v in valid) / n,
    }


class Presence:
    """How many stories contained each word and bigram (each counted once per story)."""

    def __init__(self, stories: int = 0, counts: dict[str, int] | None = None):
        self.stories = stories
        self.counts: Counter[str] = Counter(counts or {})

    def add(self, texts: Iterable[str]) -> None:
        for text in texts:
            ws = words(text)
            self.counts.update(set(ws) | set(_bigrams(ws)))
            self.stories += 1

    def share(self, term: str) -> float:
        return self.counts[term] / self.stories if self.stories else 0.0

    def merged(self, others: Iterable[Presence]) -> Presence:
        out = Presence(self.stories, self.counts)
        for other in others:
            out.stories += other.stories
            out.counts.update(other.counts)
        return out

    def state_dict(self) -> dict:
        return {"stories": self.stories, "counts": dict(self.counts)}

    @classmethod
    def from_state(cls, state: dict) -> Presence:
        return cls(int(state["stories"]), dict(state["counts"]))


def growing(start: Presence, now: Presence, n: int = 5, min_stories: int = 2) -> list[tuple[str, float, float]]:
    """The ``n`` words or bigrams whose share of stories grew most from ``start`` to ``now``:
    (term, share at the start, share now), largest growth first. A term must be in at least
    ``min_stories`` stories now (one odd story is no trend); ties go to the shorter term."""
    if not start.stories or not now.stories:
        return []
    grown = [
        (term, start.share(term), count / now.stories)
        for term, count in now.counts.items()
        if count >= min_stories and count / now.stories > start.share(term)
    ]
    grown.sort(key=lambda g: (-(g[2] - g[1]), len(g[0]), g[0]))
    return grown[:n]
