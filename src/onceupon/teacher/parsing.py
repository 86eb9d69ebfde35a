"""Turning a teacher's answer into scores, or into a reason why it cannot be.

The strict format is the rubric's: one whole number per criterion, in order, separated by
spaces, nothing else (``2 3 1``). The parser tolerates the usual deviations of chat models:

- extra words around the numbers (``Scores: 2 3 1``, ``2 3 1. The story is ...``) as long
  as the answer *starts* with exactly one number per criterion or holds exactly that many;
- other separators (``2, 3, 1``, ``2-3-1``, ``2 | 3 | 1``, one per line);
- denominators (``2/3 3/3 1/3``, ``2 out of 3``);
- labelled answers in any order (``Creativity: 1, Readability: 2, Narrative coherence: 3``),
  including numbered lists of labels;
- a ``<think>...</think>`` block before the answer.

Anything else is invalid, with the reason: empty answer, too few or too many numbers, a
number outside the criterion's scale, a fraction. There is no default number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from onceupon.teacher.base import Rating
from onceupon.teacher.rubric import Criterion, Rubric

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
# A number not glued to a word or another number ("Llama3" and "v1.2" are not scores); a
# minus sign counts only when it is not a separator between two digits ("2-3-1").
_NUMBER = re.compile(r"(?:(?<![\w.\-])-?|(?<=\d-))\d+(?:\.\d+)?(?!\w)")
_SEPARATORS = r"[\s,;:|/\-–—.+&]*(?:and\s+)?"


@dataclass
class Parsed:
    #: criterion -> score, None when the answer is invalid
    scores: dict[str, int] | None
    error: str | None = None
    #: criterion names in the order their numbers appear in the answer (for expected scores)
    order: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.scores is not None


def parse_answer(raw: str, rubric: Rubric) -> Parsed:
    """Scores from a teacher answer; see the module docstring for what is accepted."""
    text = _THINK.sub(" ", raw or "").strip()
    if not text:
        return Parsed(None, "empty answer")
    text = _drop_denominators(text, rubric)

    labelled = _labelled(text, rubric)
    if labelled is not None:
        values, order = labelled
    else:
        found = list(_NUMBER.finditer(text))
        n = len(rubric.criteria)
        if not found:
            return Parsed(None, "no numbers in the answer")
        if len(found) > n and _leading_run(text, found[:n]) and not _leading_run(text, found[: n + 1]):
            found = found[:n]  # "2 3 1. Nice story with 3 bears": the answer, then talk
        if len(found) != n:
            many = "few" if len(found) < n else "many"
            return Parsed(None, f"too {many} numbers: found {len(found)}, expected {n}")
        values = {c.name: m.group() for c, m in zip(rubric.criteria, found)}
        order = [c.name for c in rubric.criteria]

    scores: dict[str, int] = {}
    for c in rubric.criteria:
        value = float(values[c.name])
        if not value.is_integer():
            return Parsed(None, f"{c.name} score {values[c.name]} is not a whole number")
        if not c.low <= value <= c.high:
            return Parsed(None, f"{c.name} score {values[c.name]} is outside {c.low}..{c.high}")
        scores[c.name] = int(value)
    return Parsed(scores, None, order)


def _drop_denominators(text: str, rubric: Rubric) -> str:
    highs = "|".join(sorted({str(c.high) for c in rubric.criteria}, key=len, reverse=True))
    return re.sub(rf"(?<=\d)\s*(?:/|out of)\s*(?:{highs})(?!\d)", " ", text, flags=re.IGNORECASE)


def _leading_run(text: str, numbers: list[re.Match]) -> bool:
    """True when the answer starts with these numbers, separated only by separators."""
    if text[: numbers[0].start()].strip(" \t\n\"'`*([{"):
        return False
    return all(re.fullmatch(_SEPARATORS, text[a.end() : b.start()], re.IGNORECASE) for a, b in zip(numbers, numbers[1:]))


def _aliases(c: Criterion) -> list[str]:
    names = {c.name.lower(), c.name.replace("_", " ").lower(), c.title.lower()}
    # "Narrative coherence" is often answered as just "Coherence".
    names |= {w for w in c.title.lower().split() if len(w) >= 5}
    return sorted(names, key=len, reverse=True)


def _labelled(text: str, rubric: Rubric) -> tuple[dict[str, str], list[str]] | None:
    """``Label: n`` for every criterion, or None when the answer is not labelled."""
    values: dict[str, str] = {}
    positions: dict[str, int] = {}
    for c in rubric.criteria:
        alias = "|".join(re.escape(a) for a in _aliases(c))
        m = re.search(rf"\b(?:{alias})\b\W{{0,6}}?(-?\d+(?:\.\d+)?)(?![\w.]\d)", text, re.IGNORECASE)
        if m is None:
            return None
        values[c.name] = m.group(1)
        positions[c.name] = m.start(1)
    if len(set(positions.values())) != len(positions):  # two labels claimed the same number
        return None
    return values, sorted(positions, key=positions.get)


# ------------------------------------------------------------------ expected scores
def expected_scores(
    tokens: list[tuple[str, float, dict[str, float]]], parsed: Parsed, rubric: Rubric
) -> dict[str, float] | None:
    """Probability-weighted mean score per criterion from per-token log-probabilities.

    ``tokens`` is the answer as (token text, its log-probability, {alternative token text:
    log-probability}), the shape OpenAI-compatible servers return with ``top_logprobs``.
    The answer's number tokens are matched, in order, to the criteria in the order they were
    answered; at each, the alternatives that are allowed scores are renormalised and
    averaged. Returns None (use the sampled scores) when the answer's number tokens do not
    line up one-to-one with the criteria, e.g. a tokenizer that splits numbers oddly.
    """
    if not parsed.valid:
        return None
    digit_positions = [i for i, (tok, _, _) in enumerate(tokens) if tok.strip().isdigit()]
    if len(digit_positions) != len(parsed.order):
        return None
    by_name = {c.name: c for c in rubric.criteria}
    result: dict[str, float] = {}
    for name, pos in zip(parsed.order, digit_positions):
        c = by_name[name]
        token, token_logprob, alternatives = tokens[pos]
        mass: dict[int, float] = {}
        for text, logprob in {**alternatives, token: token_logprob}.items():
            key = text.strip()
            if key.isdigit() and c.low <= int(key) <= c.high and logprob > -math.inf:
                mass[int(key)] = mass.get(int(key), 0.0) + math.exp(logprob)
        total = sum(mass.values())
        if total <= 0:
            return None
        result[name] = sum(score * p for score, p in mass.items()) / total
    return result


def rating_from_answer(
    raw: str,
    rubric: Rubric,
    logprobs: Callable[[], list[tuple[str, float, dict[str, float]]]] | None = None,
    **kwargs,
) -> Rating:
    """A backend's raw answer as a :class:`Rating`: invalid when it does not parse.

    In expected-score mode the backend passes ``logprobs``, called only for a valid answer,
    giving ``(token, logprob, {alternative: logprob})`` per generated token; the scores become
    probability-weighted means where those allow it and the sampled digits are kept in
    ``extra["sampled"]``. ``kwargs`` (e.g. ``attempts``) go to the Rating.
    """
    parsed = parse_answer(raw, rubric)
    if not parsed.valid:
        return rubric.invalid(raw, parsed.error or "invalid answer", **kwargs)
    scores: dict[str, float] = dict(parsed.scores or {})
    extra: dict = {}
    if logprobs is not None:
        expected = expected_scores(logprobs(), parsed, rubric)
        extra["expected"] = expected is not None
        if expected is not None:
            extra["sampled"], scores = scores, expected
    return rubric.rating(raw, scores, extra=extra, **kwargs)
