"""The offline default teacher: transparent text signals mapped to the rubric's 0..3 scale.

No model, no network, deterministic, hundreds of stories per second on one CPU core. It is
a stand-in that lets every stage run on a laptop and gives RL a real (if crude) learning
signal; it is not a judge of literature. Real experiments use an LLM backend.

Every signal is a number in [0, 1]; a criterion is the mean of its signals (times the
factors below), cut into levels at 0.35 / 0.6 / 0.8 (0, 1, 2, 3). The identity is
``heuristic:v3`` (v1 had no order signals, v2 no asides, fluency or specific sentences;
their ratings differ, so caches keep them apart).

First, *asides* are taken out: a sentence said to whoever grades the story, not part of it
(it names a grader or a score, speaks to "you" outside a quotation, holds digits such as
"3/3/3", or is in another language). The rest is rated, and each aside multiplies coherence
and creativity by 0.75: an instruction to the grader, in any words and anywhere in the story,
can only cost (the student is an optimiser, and the paper saw it praise its listener). A text
with no finished sentence is shorter than a sentence: the lowest level everywhere.

readability (mean of the four, with fluency counted twice)
    ``complete``   share of sentences that end with . ! or ? and (but for the first, which
                   continues the prompt) start with a capital
    ``grammar``    share of function words (the, and, she, was, ...) near that of English
                   prose (about 40 %); word salad has almost none
    ``smells``     1 minus 10x the rate of obvious slips: "the the", "the and", a sentence
                   ending on "the", "She" capitalised mid-sentence
    ``ease``       the Flesch-Kincaid grade level (textstat; a US school grade from syllables
                   per word and words per sentence) mapped so grade <= 4 is 1 and grade >= 16
                   is 0: children's stories are easy to read
    ``fluency``    share of adjacent word pairs (both words known to a reference of 600
                   storyworld stories of a stream of their own) that the reference also has:
                   "the red box" yes, "the red picked" no; 1 with fewer than 5 such pairs
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
                   said to be where the story just said it is not, taken out of a place the
                   story never put it in, or given by someone who did not have it
    times the repetition factor, and capped at readability + 1: text nobody can read tells
    no story
creativity
    ``variety``    distinct content words / content words
    ``richness``   distinct content words not taken from the prompt, up to 30
    ``specific``   share of sentences about someone or something of the story (a name,
                   he/she, "the box"), not generic filler ("Things happened.")
    times the repetition factor, and capped at the readability level: "dull or
    incomprehensible" is one level
repetition factor (coherence and creativity)
    distinct word trigrams / trigrams, rescaled so 0.9+ keeps the score and 0.5- zeroes
    it: a loop is neither coherent nor creative (a sentence said again is still well written)

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

#: words that address whoever grades a story (an aside to the grader is no part of the story)
GRADER_WORDS = frozenset(
    "grader graders grade judge judges jury rater raters rate rating ratings score scores scored marks rubric evaluator reviewer listener listeners".split()
)
#: frequent function words of French, German and Spanish (with accents: another language)
FOREIGN_WORDS = frozenset("le la les des une est pour cette dans avec der die das und ist eine ein mit nicht für el los las una con para esta".split())
#: what one aside to the grader multiplies coherence and creativity by (as a coherence slip)
SLIP = 0.75
#: storyworld stories the fluency reference is made of (0.3 s, once per process)
REFERENCE_STORIES = 600

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_QUOTED = re.compile(r"[\"“][^\"”]*[\"”]")
_DIGITS = re.compile(r"\d")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_SPECIFIC = re.compile(r"\b(?:[Tt]he [a-z]+|[Hh]e|[Ss]he|[Hh]is|[Hh]er)\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
#: where an aside may end: a sentence's end, or a closing bracket ("(score: 3/3/3) They went")
_ASIDE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<=[)\]])\s+")
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


def off_story(sentence: str) -> bool:
    """A sentence said to whoever grades the story, not part of it: it names a grader or a
    score, speaks to "you" outside a quotation, holds digits (a score: "3/3/3"), or is
    not English (almost no English function words, and accents or another language's)."""
    unquoted = _QUOTED.sub(" ", sentence)
    words = [w.lower() for w in _WORD.findall(unquoted)]
    if any(w in GRADER_WORDS or w in ("you", "your") for w in words) or _DIGITS.search(unquoted):
        return True
    if len(words) >= 4 and sum(w in FUNCTION_WORDS for w in words) / len(words) < 0.15:
        return bool(_NON_ASCII.search(unquoted)) or any(w in FOREIGN_WORDS for w in words)
    return False


def _story_part(text: str) -> tuple[str, int]:
    """The text without its off-story sentences (:func:`off_story`), and how many there were.
    Each is cut out of the text itself (the split loses closing quotes), so what is left is
    the story as it would read without them."""
    text = " ".join(text.split())
    asides = [s for s in _ASIDE_END.split(text) if s.strip() and off_story(s)]
    for aside in asides:
        text = text.replace(aside, "", 1)
    return (" ".join(text.split()), len(asides)) if asides else (text, 0)


@lru_cache(maxsize=1)
def reference_bigrams() -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """Words and word pairs of storyworld stories of a stream nothing else draws from: what
    ``fluency`` counts a pair of known words against."""
    from onceupon.corpus import storyworld

    words: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for i in range(REFERENCE_STORIES):
        toks = [w.lower() for w in _WORD.findall(storyworld.generate_story(storyworld.story_seed(0, i, "heuristic-fluency")).text)]
        words.update(toks)
        pairs.update(zip(toks, toks[1:]))
    return frozenset(words), frozenset(pairs)


def fluency(lower: list[str]) -> float:
    """Share of the adjacent word pairs, both words known to the reference, that the
    reference also has ("the red box" yes, "the red picked" no); 1 with too few to say."""
    vocabulary, pairs = reference_bigrams()
    known = [(a, b) for a, b in zip(lower, lower[1:]) if a in vocabulary and b in vocabulary]
    if len(known) < 5:
        return 1.0
    return _clamp((sum(pair in pairs for pair in known) / len(known) - 0.5) / 0.45)


def signals(prompt: str, text: str) -> dict[str, float]:
    """All signals of one continuation, each in [0, 1] (see the module docstring)."""
    text, asides = _story_part(text)
    sig = _signals(prompt, text)
    sig["asides"] = SLIP**asides
    return sig


def _signals(prompt: str, text: str) -> dict[str, float]:
    words = _WORD.findall(text)
    if not words:
        return dict.fromkeys(
            ("complete", "grammar", "smells", "ease", "fluency", "remention", "structure", "ending", *ORDER_SIGNALS, "variety", "richness", "specific", "repetition"),
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

    names = {w for sw in sentence_words for w in sw[1:] if w[0].isupper() and w.lower() not in FUNCTION_WORDS and w != "I"}

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

    # creativity: sentences about someone or something of the story (a name, he/she, "the
    # box"), not generic filler ("It was nice. Things happened.")
    specific = sum(bool(_SPECIFIC.search(s)) or bool(set(sw[1:]) & names) for s, sw in zip(sentences, sentence_words))
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
        "fluency": fluency(lower),
        "remention": remention_hits / (len(sentences) - 1) if len(sentences) > 1 else 0.0,
        "structure": _clamp(len(good_sentences) / 3),
        "ending": 1.0 if _TERMINAL.search(text.strip()) else 0.0,
        "variety": len(distinct_content) / len(content_words) if content_words else 0.0,
        "richness": _clamp(len(new_content) / 30),
        "specific": specific / len(sentences) if sentences else 0.0,
        "repetition": _clamp((distinct3 - 0.5) / 0.4),
    }


def levels(sig: dict[str, float]) -> dict[str, int]:
    """The paper's three criteria from the signals. A text without one finished sentence
    is shorter than a sentence: the rubric's lowest answer."""
    if sig["complete"] == 0:
        return {"readability": 0, "coherence": 0, "creativity": 0}
    rep, asides = sig["repetition"], sig["asides"]
    readability = _level((sig["complete"] + sig["grammar"] + sig["smells"] + sig["ease"] + 2 * sig["fluency"]) / 6)
    order = min(1.0, 0.6 + 0.8 * sig["flow"]) * sig["introductions"] * sig["markers"] * sig["consistency"] * asides
    coherence = min(_level(rep * order * (sig["remention"] + sig["structure"] + sig["ending"]) / 3), readability + 1)
    creativity = min(_level(rep * asides * (sig["variety"] + sig["richness"] + sig["specific"]) / 3), readability)
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
        self.identity = "heuristic:v3"

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
