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

from onceupon.schemas.stories import read_story_records
from onceupon.teacher.base import Story


def read_stories(path: str | Path) -> list[Story]:
    """Every story of the file, checked as a whole first (:mod:`onceupon.schemas.stories`)."""
    return [Story(prompt=r.story_prompt, continuation=r.story_continuation, id=rid) for rid, r in read_story_records(path)]
