"""The rubric: criteria, their scales and weights, the prompt the teacher reads, the score.

Owns everything a rating means, whatever backend produced it:

- the criteria (names, per-level meanings, weights); the default is the paper's three,
  readability, narrative coherence and creativity, each 0..3, in our own words;
- the prompt: a Jinja2 template rendered in a *sandboxed* environment with the story prompt
  and the student's continuation passed separately; the continuation is cleaned of special
  tokens and of anything that could pass for our delimiters before it is shown. The default
  prompt describes the answer with placeholders (``<readability> <coherence> <creativity>``)
  and shows no concrete answer: a small judge shown ``Example answer: 1 2 3`` answered
  exactly that for 58 of 60 stories. That earlier prompt stays selectable
  (``teacher.prompt: example``), and :attr:`Rubric.shown_example` says whether the prompt in
  use shows an example, so a teacher check can count answers that copy it;
- :meth:`Rubric.normalise`: the weighted mean of the scores mapped to [0, 1] (with the
  paper's equal weights this is T = (r + c + k) / 9);
- :meth:`Rubric.rating`: the one place a valid :class:`Rating` is built from scores.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from onceupon.config import CriterionConfig, TeacherConfig
from onceupon.errors import UserError
from onceupon.files import read_text_file
from onceupon.teacher.base import Rating, Story
from onceupon.text import printable


@dataclass(frozen=True)
class Criterion:
    name: str
    title: str
    description: str
    #: (score, meaning) pairs, ascending, consecutive integers
    levels: tuple[tuple[int, str], ...]
    weight: float = 1.0

    @property
    def low(self) -> int:
        return self.levels[0][0]

    @property
    def high(self) -> int:
        return self.levels[-1][0]


def _criterion(name: str, title: str, description: str, levels: list[str]) -> Criterion:
    return Criterion(name, title, description, tuple(enumerate(levels)))


#: The paper's rubric (three criteria, each 0..3), reworded. Names are the keys of ``Rating.scores``.
PAPER_CRITERIA: tuple[Criterion, ...] = (
    _criterion(
        "readability",
        "Readability",
        "How well the continuation is written: grammar, word choice, and how easy it is to follow.",
        [
            "Many serious grammar mistakes; hard to understand.",
            "Clear mistakes, but the meaning mostly comes through.",
            "Only a few small mistakes.",
            "Grammatical and well written throughout.",
        ],
    ),
    _criterion(
        "coherence",
        "Narrative coherence",
        "Whether the continuation tells a story whose events follow from one another.",
        [
            "Not a story: incoherent, or too short to tell anything.",
            "Some story, but the events do not follow logically.",
            "Mostly coherent, and it does not stop abruptly.",
            "Coherent and logically structured from start to finish.",
        ],
    ),
    _criterion(
        "creativity",
        "Creativity",
        "How original, imaginative and engaging the continuation is.",
        [
            "Dull, or too garbled to tell.",
            "A little inventive, but mostly predictable.",
            "Fairly inventive and engaging.",
            "Highly original, imaginative and engaging.",
        ],
    ),
)

# Special tokens a student or teacher tokenizer may leave in decoded text: <s>, </s>, <pad>,
# <unk>, <mask>, <bos>, <eos>, <|endoftext|>, <|eot_id|>, <|im_end|>, [PAD], [SEP], ...
_SPECIAL = re.compile(
    r"<\|[^<>|\s]{1,40}\|>"
    r"|</?(?:s|pad|unk|mask|bos|eos|cls|sep)>"
    r"|\[(?:PAD|UNK|CLS|SEP|MASK|BOS|EOS)\]",
    re.IGNORECASE,
)
# Our own delimiters: a continuation must not be able to close the <story> block early.
_DELIMITER = re.compile(r"</?\s*(?:story|opening)\s*>", re.IGNORECASE)
_SPACES = re.compile(r"[ \t]+")


def clean_text(text: str, extra_tokens: tuple[str, ...] = ()) -> str:
    """Remove special tokens and our delimiters; mark control characters and undecodable
    bytes visibly, as the annotation page and the report do (onceupon.text.printable); tidy
    whitespace. Used on the continuation (and the prompt) before anything rates it, so every
    backend sees the same story."""
    text = printable(text)
    for token in extra_tokens:
        if token:
            text = text.replace(token, " ")
    text = _SPECIAL.sub(" ", text)
    text = _DELIMITER.sub(" ", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line).strip()


def clean_story(story: Story) -> Story:
    return Story(prompt=clean_text(story.prompt), continuation=clean_text(story.continuation), id=story.id)


#: Built-in prompts by ``teacher.prompt`` name.
BUILTIN_TEMPLATES = {"placeholders": "prompt_template.j2", "example": "prompt_template_example.j2"}
# Stands in for the example answer in one trial render, to see whether a template shows it.
_EXAMPLE_PROBE = "EXAMPLE-ANSWER-PROBE"


def default_template(name: str = "placeholders") -> str:
    """The text of a built-in prompt template (see BUILTIN_TEMPLATES)."""
    return resources.files("onceupon.teacher").joinpath(BUILTIN_TEMPLATES[name]).read_text(encoding="utf-8")


class Rubric:
    """Criteria + prompt template. Immutable once built; share one between threads freely."""

    def __init__(self, criteria: tuple[Criterion, ...] = PAPER_CRITERIA, template: str | None = None, expected_words: int = 80):
        if not criteria:
            raise UserError("The rubric needs at least one criterion.")
        names = [c.name for c in criteria]
        if len(set(names)) != len(names):
            raise UserError(f"Rubric criterion names must be unique, got {names}.")
        if sum(c.weight for c in criteria) <= 0:
            raise UserError("At least one rubric criterion needs a positive weight.")
        self.criteria = tuple(criteria)
        self.template_source = template if template is not None else default_template()
        self.expected_words = expected_words
        env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)
        try:
            self._template = env.from_string(self.template_source)
        except TemplateError as e:
            raise UserError(f"The teacher prompt template is not valid Jinja2: {e}.") from None
        # Render once so a template that uses an unknown variable fails at start, not mid-run.
        trial = Story(prompt="Once upon a time,", continuation="there was a fox.")
        self.render(trial)
        # The template shows the example if it uses the variable or writes the answer itself.
        # A one-criterion answer is one number, which every listing of the levels writes.
        probe = self._render(trial, _EXAMPLE_PROBE)
        literal = len(self.criteria) > 1 and re.search(rf"(?<![\d.]){re.escape(self.example_answer)}(?![\d.])", self.render(trial))
        #: the example answer if the prompt in use shows it, else None
        self.shown_example: str | None = self.example_answer if _EXAMPLE_PROBE in probe or literal else None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> "Rubric":
        criteria = PAPER_CRITERIA if not cfg.criteria else tuple(_from_config(c) for c in cfg.criteria)
        template = default_template(cfg.prompt)
        if cfg.template:
            path = Path(cfg.template)
            if not path.is_file():
                raise UserError(f"Teacher prompt template {path} does not exist.")
            template = read_text_file(path)  # a binary file is one sentence, not a UnicodeDecodeError
        return cls(criteria, template, cfg.expected_words)

    # ----------------------------------------------------------------- identity
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.criteria]

    @property
    def max_total(self) -> int:
        return sum(c.high for c in self.criteria)

    @property
    def hash(self) -> str:
        """Changes whenever anything that could change a rating changes (criteria, template)."""
        payload = json.dumps(
            {
                "criteria": [[c.name, c.title, c.description, list(c.levels), c.weight] for c in self.criteria],
                "template": self.template_source,
                "expected_words": self.expected_words,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # ----------------------------------------------------------------- prompt
    def answer(self, scores: dict[str, float]) -> str:
        """The strict answer format: the scores in criterion order, separated by spaces."""
        return " ".join(_fmt(scores[c.name]) for c in self.criteria)

    @property
    def example_answer(self) -> str:
        """The example answer a template may show (``example_answer``): 1 2 3 for the paper's
        rubric, each criterion one step higher than the last, wrapping within its scale."""
        example = {c.name: min(c.high, c.low + 1 + i % max(1, c.high - c.low)) for i, c in enumerate(self.criteria)}
        return self.answer(example)

    def render(self, story: Story) -> str:
        """The chat message for one (already cleaned) story."""
        return self._render(story, self.example_answer)

    def _render(self, story: Story, example_answer: str) -> str:
        try:
            return self._template.render(
                # Cleaned again here (idempotent) so no caller can skip the injection guard.
                prompt=clean_text(story.prompt),
                continuation=clean_text(story.continuation),
                criteria=[
                    {
                        "name": c.name,
                        "title": c.title,
                        "description": c.description,
                        "levels": list(c.levels),
                        "low": c.low,
                        "high": c.high,
                        "weight": c.weight,
                    }
                    for c in self.criteria
                ],
                expected_words=self.expected_words,
                lowest_answer=self.answer(self.lowest()),
                example_answer=example_answer,
            ).strip()
        except TemplateError as e:
            raise UserError(f"The teacher prompt template failed to render: {e}.") from None

    def messages(self, story: Story) -> list[dict[str, str]]:
        """One user message per story, as in the paper."""
        return [{"role": "user", "content": self.render(story)}]

    # ----------------------------------------------------------------- scores
    def lowest(self) -> dict[str, float]:
        return {c.name: c.low for c in self.criteria}

    def normalise(self, scores: dict[str, float]) -> float:
        """Weighted mean of each score's position on its scale, in [0, 1]."""
        weight = sum(c.weight for c in self.criteria)
        return sum(c.weight * (scores[c.name] - c.low) / (c.high - c.low) for c in self.criteria) / weight

    def rating(self, raw: str, scores: dict[str, float], **kwargs) -> Rating:
        """A valid rating: scores in criterion order and their normalised score."""
        ordered = {c.name: scores[c.name] for c in self.criteria}
        return Rating(valid=True, raw=raw, scores=ordered, score=self.normalise(ordered), **kwargs)

    def invalid(self, raw: str, error: str, **kwargs) -> Rating:
        return Rating(valid=False, raw=raw, scores=None, score=None, error=error, **kwargs)


def _from_config(c: CriterionConfig) -> Criterion:
    keys = sorted(c.levels)
    if len(keys) < 2 or keys != list(range(keys[0], keys[0] + len(keys))):
        raise UserError(f"Rubric criterion '{c.name}' needs at least two consecutive integer levels, got {keys}.")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c.name):
        raise UserError(f"Rubric criterion name '{c.name}' must be a simple identifier like 'coherence'.")
    return Criterion(c.name, c.title or c.name.replace("_", " ").capitalize(), c.description, tuple((k, c.levels[k]) for k in keys), c.weight)


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"
