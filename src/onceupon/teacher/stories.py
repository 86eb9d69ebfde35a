"""Reading a JSONL file of stories to rate: ``onceupon rate``, the annotation sample and the
teacher check's user stories all read stories this one way (with the same errors).

One JSON object per line: ``continuation`` (the student's text to rate; or ``text``: a whole
story, from which a leading ``prompt`` is removed), ``prompt`` (optional, default ""), ``id``
(optional, default the line number). Anthology files of an interaction run are valid input.
Ids must be unique (a file that repeats one is refused, naming both lines), so ratings can be
matched to other raters' by id.
"""

from __future__ import annotations

from pathlib import Path

from onceupon.errors import UserError
from onceupon.files import read_jsonl
from onceupon.teacher.base import Story


def read_stories(path: str | Path) -> list[Story]:
    stories = []
    first_line: dict[str, int] = {}
    for lineno, record in enumerate(read_jsonl(path), 1):
        prompt = record.get("prompt") or ""
        if not isinstance(prompt, str):
            raise UserError(f"{path}, story {lineno}: 'prompt' must be a string.")
        if isinstance(record.get("continuation"), str):
            continuation = record["continuation"]
        elif isinstance(record.get("text"), str):
            text = record["text"]
            continuation = text[len(prompt) :] if prompt and text.startswith(prompt) else text
        else:
            raise UserError(f"{path}, story {lineno}: needs a 'continuation' (or 'text') string.")
        rid = record.get("id")
        rid = str(rid) if rid is not None else str(lineno)
        if rid in first_line:
            raise UserError(
                f"{path}: stories {first_line[rid]} and {lineno} both have the id '{rid}' (a story without an id "
                "gets its line number); give every story its own id so ratings can be matched."
            )
        first_line[rid] = lineno
        stories.append(Story(prompt=prompt, continuation=continuation, id=rid))
    if not stories:
        raise UserError(f"{path} holds no stories.")
    return stories
