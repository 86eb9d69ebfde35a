"""Stories (what ``onceupon rate`` and ``annotate`` read) and probes (``check-teacher --probes``).

A story line: ``continuation`` (the text to rate; or ``text``, a whole story from which a
leading ``prompt`` is removed), ``prompt`` (optional; null or missing: ""), ``id`` (optional,
a string or a whole number; missing: the line number). Anthologies, ratings files and
evaluation stories are stories too: the fields they add are kept, unread.

A sample line (``OUT.sample.jsonl`` of ``onceupon annotate``): a story as above with its ``id``,
``prompt`` and ``continuation``, plus ``origin`` (where it came from), ``shared`` (shown to every
annotator), and the source's own ``valid`` and ``scores`` (may be null).

A prompts file (``interact.prompts_file``, ``evaluate.story_prompts_file``) is plain UTF-8 text,
one prompt per non-empty line (surrounding spaces dropped).

A probe line (``OUT/probes.jsonl`` of a check): ``id``, ``story`` (the clean story it comes
from), ``kind`` (one of :data:`onceupon.teacher.probes.KINDS`), ``targets`` (the criteria its
damage must lower; a list of names, may be missing), ``prompt`` (optional), ``continuation``,
and where they apply ``base`` (the probe it is compared with; missing: its clean story),
``grade`` (a graded copy's damaged share, 0..1), ``wording`` and ``place`` (an injection's).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator, model_validator

from onceupon.errors import UserError
from onceupon.files import read_text_file
from onceupon.schemas.base import Id, Record, read_records


class StoryRecord(Record):
    id: Id | None = None
    prompt: str | None = None
    continuation: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _has_text(self) -> "StoryRecord":
        if self.continuation is None and self.text is None:
            raise ValueError("a story needs a 'continuation' (or 'text') string")
        return self

    @property
    def story_prompt(self) -> str:
        return self.prompt or ""

    @property
    def story_continuation(self) -> str:
        """The text to rate: ``continuation``, else ``text`` without a leading ``prompt``."""
        if self.continuation is not None:
            return self.continuation
        prompt = self.story_prompt
        return self.text[len(prompt) :] if prompt and self.text.startswith(prompt) else self.text


def read_story_records(path: str | Path) -> list[tuple[str, StoryRecord]]:
    """(id, record) for every story of a stories file, ids unique (a story without an id
    gets its line number); a UserError for an empty file, a bad line or a repeated id."""
    first_line: dict[str, int] = {}
    found = []
    for lineno, record in read_records(path, StoryRecord, holding="stories"):
        rid = record.id if record.id is not None else str(lineno)
        if rid in first_line:
            raise UserError(
                f"{path}: lines {first_line[rid]} and {lineno} both have the id '{rid}' (a story without an id "
                "gets its line number); give every story its own id so ratings can be matched."
            )
        first_line[rid] = lineno
        found.append((rid, record))
    return found


class SampleRecord(Record):
    id: Id
    prompt: str
    continuation: str
    origin: str
    shared: bool = False
    valid: bool | None = None
    scores: dict | None = None


def read_sample_records(path: str | Path) -> list[SampleRecord]:
    """The stories of an annotation sample, in the order shown."""
    return [r for _, r in read_records(path, SampleRecord, holding="stories")]


class ProbeRecord(Record):
    id: Id
    story: Id
    kind: str
    targets: list[str] | None = Field(None, description="criteria the damage must lower")
    prompt: str | None = None
    continuation: str
    base: Id | None = Field(None, description="the probe it is compared with (missing: its clean story)")
    grade: float | None = Field(None, ge=0, le=1, description="a graded copy's damaged share")
    wording: str | None = None
    place: str | None = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str, info: ValidationInfo) -> str:
        kinds = info.context["kinds"]
        if kind not in kinds:
            raise ValueError(f"unknown probe kind (known: {', '.join(kinds)})")
        return kind


def read_probe_records(path: str | Path, kinds: tuple[str, ...]) -> list[ProbeRecord]:
    """The probes of a ``probes.jsonl`` written by check-teacher, ids unique; ``kinds``: the
    probe kinds there are (the teacher check's, :data:`onceupon.teacher.probes.KINDS`)."""
    records = [r for _, r in read_records(path, ProbeRecord, context={"kinds": kinds}, holding="probes")]
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path} has a probe id twice; give a probes.jsonl written by check-teacher.")
    return records


def read_prompts_file(path: str | Path, what: str = "Prompts file") -> list[str]:
    """The prompts of a prompts file; ``what`` names the file in the sentence an empty,
    missing or undecodable one gets."""
    try:
        prompts = [line.strip() for line in read_text_file(path).splitlines() if line.strip()]
    except UserError as e:
        raise UserError(f"{what} {e}") from None
    if not prompts:
        raise UserError(f"{what} {path} holds no prompt (one prompt per non-empty line).")
    return prompts
