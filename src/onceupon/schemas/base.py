"""What every schema shares: the record base, and reading a file through a schema.

A reader validates the whole file before it returns, so a command that reads its inputs first
fails before any work or write. A bad value is one :class:`UserError` naming the file, the line
(for JSONL) and the field: ``ratings.jsonl, line 7, field 'scores.coherence': must be from 0
to 3 (got 7).``
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from onceupon.errors import UserError
from onceupon.files import json_object, read_jsonl_lines, read_text_file

M = TypeVar("M", bound=BaseModel)


class Record(BaseModel):
    """Base of every schema: fields keep their JSON types (no "3" for 3, no 1 for true, no
    ['ada'] for "ada"), numbers are finite, and fields the schema does not name are kept as
    they are (an anthology line is a story too, with more fields than a story needs)."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True)


#: an id as JSON writes it: a string or a whole number (read back as a string)
Id = Annotated[StrictStr | StrictInt, AfterValidator(str)]
Count = Annotated[StrictInt, Field(ge=0)]
__all__ = ["Record", "Id", "Count", "StrictBool", "StrictStr", "read_records", "read_json", "explain"]


def explain(error: ValidationError, where: str) -> str:
    """The first problem of a validation error as one sentence, ``where`` saying which file
    (and line) it is in. A value that fits none of a field's types (a string or a whole
    number) gets one clause per type, joined by "or"."""
    errors = error.errors(include_url=False)
    field = _field(errors[0]["loc"])
    same = [e for e in errors if _field(e["loc"]) == field]
    first = same[0]
    message = " or ".join(dict.fromkeys(_message(e) for e in same))
    if first["type"] == "missing":
        return f"{where}: the field '{field}' is missing."
    if not field:  # a rule across fields: its message names them
        return f"{where}: {message}."
    return f"{where}, field '{field}': {message} (got {_shown(first.get('input'))})."


#: what pydantic adds to an error's location for a member of a union (``str``, ``int``,
#: ``list[str]``, ``function-after[...]``...): not a field of the file
_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\])$")


def _field(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and _TYPE_TAG.match(p)))


def _message(error: dict) -> str:
    text = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ").rstrip(".")
    return text.replace("Input should be", "should be")


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_records(
    path: str | Path, model: type[M], *, context: dict | None = None, holding: str | None = None
) -> list[tuple[int, M]]:
    """Every line of a JSONL file as ``(line number, model)``; the first bad line is a
    UserError naming the file, the line and the field. ``holding`` (e.g. "stories"): what the
    file must hold at least one of; an empty one is then "PATH holds no stories."."""
    path = Path(path)
    records = []
    for lineno, obj in read_jsonl_lines(path):
        try:
            records.append((lineno, model.model_validate(obj, context=context)))
        except ValidationError as e:
            raise UserError(explain(e, f"{path}, line {lineno}")) from None
    if holding and not records:
        raise UserError(f"{path} holds no {holding}.")
    return records


def read_json(path: str | Path, model: type[M], *, what: str, context: dict | None = None) -> M:
    """A JSON file through ``model``; ``what`` says what the file should be, for the sentence
    when it is missing or not JSON at all (e.g. "a teacher check's results (check.json)")."""
    path = Path(path)
    try:
        text = read_text_file(path)
    except UserError as e:  # missing, or not text
        raise UserError(f"{str(e).rstrip('.')}; give {what}.") from None
    data = json_object(text, str(path), f"; give {what}")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise UserError(explain(e, str(path))) from None
