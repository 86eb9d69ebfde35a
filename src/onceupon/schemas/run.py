"""Files inside a run directory that a resume, ``evaluate`` or ``report`` reads back:
``state.json`` (an interaction run's counters), ``onceupon.json`` (a checkpoint's metadata).
Written by onceupon itself, but a copied, hand-edited or damaged file must still be one
sentence: these schemas say what a readable one holds."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from onceupon.schemas.base import Count, Record, read_json


class InteractState(Record):
    """``RUN/state.json``: where an interaction run stands (rewritten after every step)."""

    start_checkpoint: str
    algorithm: str
    step: Count
    stories: Count
    input_words: Count
    generated_words: Count
    checkpoint: str | None = None
    done: bool = False


def read_interact_state(path: str | Path) -> InteractState:
    return read_json(path, InteractState, what="the state.json an interaction run writes (restore it, or start a new run)")


class CheckpointMetaRecord(Record):
    """``onceupon.json`` in a checkpoint (see :mod:`onceupon.student.checkpoints`)."""

    name: str = Field(min_length=1)
    stage: str = Field(pattern="^(pretrain|interact)$")
    pretrain_words: Count
    interact_words: Count = 0
    generated_words: Count = 0
    step: Count = 0
    start_checkpoint: str | None = None
    extra: dict = {}


def read_checkpoint_meta(path: str | Path) -> CheckpointMetaRecord:
    return read_json(path, CheckpointMetaRecord, what="a checkpoint's onceupon.json (copy or save that checkpoint again)")
