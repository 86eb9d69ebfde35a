"""Files inside a run directory that a resume, ``evaluate`` or ``report`` reads back:
``state.json`` (an interaction run's counters), ``onceupon.json`` (a checkpoint's metadata),
``metrics.csv`` (one row per logged step).
Written by onceupon itself, but a copied, hand-edited or damaged file must still be one
sentence: these schemas say what a readable one holds."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from pydantic import Field

from onceupon.errors import UserError
from onceupon.files import read_text_file
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
    shape: dict | None = None  # the model as written (student.checkpoints.model_shape); absent in older checkpoints


def read_checkpoint_meta(path: str | Path) -> CheckpointMetaRecord:
    return read_json(path, CheckpointMetaRecord, what="a checkpoint's onceupon.json (copy or save that checkpoint again)")


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """``metrics.csv`` as rows of {column: value}: a cell that is not a finite number (empty,
    a name, nan) is left out of its row, a last row torn by a crash is dropped, and ``step``,
    where a row has one, is a whole number of 0 or more. Text that is not a CSV file is one
    sentence naming the file and line."""
    path = Path(path)
    lines = read_text_file(path).splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    rows = []
    try:
        for row in csv.DictReader(lines):
            numbers = {}
            for key, cell in row.items():
                try:
                    value = float(cell)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value) and isinstance(key, str):
                    numbers[key] = value
            if "step" in numbers and (numbers["step"] < 0 or numbers["step"] != int(numbers["step"])):
                raise UserError(f"{path}, line {len(rows) + 2}, field 'step': must be a whole number of 0 or more (got {row['step']}).")
            rows.append(numbers)
    except csv.Error as e:
        raise UserError(f"{path} is not a CSV file ({e}).") from None
    return rows
