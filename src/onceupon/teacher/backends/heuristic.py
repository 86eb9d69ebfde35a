"""The offline default teacher: transparent text signals mapped to the rubric's 0..3 scale.

No model, no network, deterministic, hundreds of stories per second on one CPU core. It is
a stand-in that lets every stage run on a laptop and gives RL a real (if crude) learning
signal; it is not a judge of literature. Real experiments use an LLM backend.

Every signal is a number in [0, 1]; a criterion is the mean of its signals times a
repetition factor, cut into levels at 0.35 / 0.6 / 0.8 (0, 1, 2, 3). The identity is
``heuristic:v2`` (v1 had no order signals; its ratings differ, so caches keep them apart):

readability
    ``complete``   share of sentences that end with . ! or ? and (but for the first, which
                   continues the prompt) start with a capital
    ``grammar``    share of function words (the, and, she, was, ...) near that of English
                   prose (about 40 %); word salad has almost none
    ``smells``     1 minus 10x the rate of obvious slips: "the the", "the and", a sentence
                   ending on "the", "She" capitalised mid-sentence
    ``ease``       the Flesch-Kincaid grade level (textstat; a US school grade from syllables
                   per word and words per sentence) mapped so grade <= 4 is 1 and grade >= 16
                   is 0: children's stories are easy to read
coherence
    ``remention``  share of sentences after the first that mention an earlier character or
                   thing again (a repeated content word or a pronoun)
    ``structure``  at least three complete sentences of 4..30 words
    ``ending``     the text ends on a finished sentence, not cut off
    times an *order* factor, since none of the three changes when the sentences are shuffled
    (teacher/backends/coherence.py explains each signal and its source in the literature):
    ``flow``       an entity grid's rank of the told order among random orders of the same
                   sentences (Barzilay and Lapata 2008); only an order no better than chance
                   (below 0.5) costs: the factor is min(1, 0.6 + 0.8 flow)
    ``introductions``, ``markers``, ``consistency``   0.75 per slip: a name or a thing
                   referred to before it is introduced, a closing line mid-story, an object
                   said to be where the story just said it is not
    and it is capped at readability + 1: text nobody can read tells no story
creativity
    ``variety``    distinct content words / content words
    ``richness``   distinct content words not taken from the prompt, up to 30
    and it is capped at the readability level: "dull or incomprehensible" is one level
repetition factor (all three)
    distinct word trigrams / trigrams, rescaled so 0.9+ keeps the score and 0.5- zeroes
    it: a loop is neither well written, coherent nor creative

Empty continuations and ones shorter than ``min_words`` never reach this backend (the
pipeline gives them the lowest scores, as the rubric says); a continuation reaching it
with no words at all still scores the lowest level everywhere.
"""

from __future__ import annotations

import re
from functools import lru_cache

from onceupon.errors import UserError
from onceupon.readability import reading_grade
from onceupon.teacher.backends import coherence
from onceupon.teacher.base import Rating, Story
from onceupon.teacher.rubric import Rubric

FUNCTION_WORDS = frozenset(
    """a an the and but or so because then when while if as than of in on at to from with by for
    into onto over under about after before up down out off through he she it they we i you him
    her them us me his its their our my your this that these those there here who which what
    where was were is are am be been being had has have did do does not no very all some any
    one said would could will can""".split()
)
DETERMINERS = frozenset("a an the his her its their our my your this these those every each".split())
PRONOUNS = frozenset("he she it they him her them his its their hers theirs".split())
# Words that cannot follow a determiner directly ("the and", "a she", "the was").
NOT_AFTER_DETERMINER = FUNCTION_WORDS - {"one", "very", "all", "some", "other"}
CUTS = (0.35, 0.6, 0.8)
ORDER_SIGNALS = ("flow", "introductions", "markers", "consistency")

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_TERMINAL = re.compile(r"[.!?][\"')\]]*$")


def _clamp(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def _level(x: float) -> int:
    return sum(x >= cut for cut in CUTS)


def _stem(word: str) -> str:
    word = word.lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


@lru_cache(maxsize=4096)
def _prompt_words(prompt: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in _WORD.findall(prompt))


def signals(prompt: str, text: str) -> dict[str, float]:
    """All signals of one continuation, each in [0, 1] (see the module docstring)."""
    words = _WORD.findall(text)
    if not words:
        return dict.fromkeys(
            ("complete", "grammar", "smells", "ease", "remention", "structure", "ending", *ORDER_SIGNALS, "variety", "richness", "repetition"),
            0.0,
        )
    lower = [w.lower() for w in words]
    sentences = [s.strip() for s in _SENTENCE_END.split(text) if _WORD.search(s)]
    sentence_words = [_WORD.findall(s) for s in sentences]  # each sentence's words, found once

    # readability
    # The first sentence continues the prompt ("... in a faraway land,") so it may start small.
    complete = [
        bool(_TERMINAL.search(s)) and (i == 0 or bool(re.match(r"[\"'(\[]*[A-Z]", s))) for i, s in enumerate(sentences)
    ]
    function_share = sum(w in FUNCTION_WORDS for w in lower) / len(lower)
    smells = 0
    for s, sw in zip(sentences, sentence_words):
        for a, b in zip(sw, sw[1:]):
            if a.lower() in DETERMINERS and (b.lower() in NOT_AFTER_DETERMINER or b.lower() == a.lower()):
                smells += 1
            if b[0].isupper() and b.lower() in FUNCTION_WORDS and b != "I":
                smells += 1  # "went to the forest She" — a function word capitalised mid-sentence
        if sw and sw[-1].lower() in DETERMINERS and _TERMINAL.search(s):
            smells += 1  # "... and the."
    grade = reading_grade(text) if len(words) >= 3 else 99.0

    # coherence
    seen: set[str] = set()
    remention_hits = 0
    for i, words_i in enumerate(sentence_words):
        sw = [w.lower() for w in words_i]
        content = {_stem(w) for w in sw if w not in FUNCTION_WORDS and len(w) > 2}
        if i > 0 and (content & seen or any(w in PRONOUNS for w in sw)):
            remention_hits += 1
        seen |= content
    good_sentences = [sw for sw, ok in zip(sentence_words, complete) if ok and 4 <= len(sw) <= 30]

    # creativity
    content_words = [_stem(w) for w in lower if w not in FUNCTION_WORDS and len(w) > 2]
    distinct_content = set(content_words)
    new_content = distinct_content - _prompt_words(prompt)

    trigrams = list(zip(lower, lower[1:], lower[2:]))
    distinct3 = len(set(trigrams)) / len(trigrams) if trigrams else 1.0

    return coherence.signals(prompt, text) | {
        "complete": sum(complete) / len(sentences) if sentences else 0.0,
        "grammar": _clamp((function_share - 0.1) / 0.3),
        "smells": _clamp(1 - 10 * smells / len(words)),
        "ease": _clamp((16 - grade) / 12),
        "remention": remention_hits / (len(sentences) - 1) if len(sentences) > 1 else 0.0,
        "structure": _clamp(len(good_sentences) / 3),
        "ending": 1.0 if _TERMINAL.search(text.strip()) else 0.0,
        "variety": len(distinct_content) / len(content_words) if content_words else 0.0,
        "richness": _clamp(len(new_content) / 30),
        "repetition": _clamp((distinct3 - 0.5) / 0.4),
    }


def levels(sig: dict[str, float]) -> dict[str, int]:
    """The paper's three criteria from the signals."""
    rep = sig["repetition"]
    readability = _level(rep * (sig["complete"] + sig["grammar"] + sig["smells"] + sig["ease"]) / 4)
    order = min(1.0, 0.6 + 0.8 * sig["flow"]) * sig["introductions"] * sig["markers"] * sig["consistency"]
    coherence = min(_level(rep * order * (sig["remention"] + sig["structure"] + sig["ending"]) / 3), readability + 1)
    creativity = min(_level(rep * (sig["variety"] + sig["richness"]) / 2), readability)
    return {"readability": readability, "coherence": coherence, "creativity": creativity}


class HeuristicBackend:
    """Rates with :func:`signals`; needs the paper's criterion names (or a subset of them)."""

    def __init__(self, rubric: Rubric):
        unknown = [c.name for c in rubric.criteria if c.name not in ("readability", "coherence", "creativity")]
        if unknown:
            raise UserError(
                f"The heuristic teacher only knows readability, coherence and creativity, not {', '.join(unknown)}; "
                "use an LLM backend for a custom rubric."
            )
        self.rubric = rubric
        self.identity = "heuristic:v2"

    def rate(self, stories: list[Story]) -> list[Rating]:
        ratings = []
        for story in stories:
            sig = signals(story.prompt, story.continuation)
            lv = levels(sig)
            # Scale each 0..3 level onto the criterion's own scale (identity for the paper's).
            scores = {}
            for c in self.rubric.criteria:
                scores[c.name] = c.low + round(lv[c.name] * (c.high - c.low) / 3)
            ratings.append(
                self.rubric.rating(self.rubric.answer(scores), scores, extra={"signals": {k: round(v, 3) for k, v in sig.items()}})
            )
        return ratings

    def close(self) -> None:
        pass
