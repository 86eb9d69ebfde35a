"""Small file helpers: atomic writes, durable JSONL appends, JSONL reading with clear errors.

Writes that matter go through here so that a crash never leaves a half-written file that
looks complete (write to a temporary name, fsync, rename).

Every JSON or JSONL file onceupon reads goes through :func:`json_object` (the config's YAML
through :func:`checked_value` too), which bounds what a file may hold before anything trusts
it: a document larger than the kind of file ever holds, a value nested deeper than
:data:`MAX_DEPTH`, a key given twice, a lone surrogate escape (``"\\ud800"``: valid JSON but
not text, which fails only later, when it is written or tokenized). Each is one sentence
naming the file (and line).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from onceupon.errors import UserError


#: how a full disk (or a spent quota) reads when a library reports it as text: safetensors
#: ("I/O error: No space left on device (os error 28)"), tokenizers (a bare Exception with the
#: same words) and Rust code in general ("os error 28")
_DISK_FULL_WORDS = (
    os.strerror(errno.ENOSPC),
    os.strerror(errno.EDQUOT),
    f"os error {errno.ENOSPC})",
    f"os error {errno.EDQUOT})",
)


#: The bounds on what a JSON, JSONL or YAML file may hold. Nothing onceupon writes comes near
#: them (its files nest 6 deep at most; a story line is a few KB); past them, parsing alone
#: would take minutes, the memory, or the stack (a document nested thousands deep) before a
#: word could be said.
MAX_DEPTH = 64
MAX_LINE_CHARS = 1024**2  # one JSONL line
MAX_JSON_CHARS = 64 * 1024**2  # one JSON document
_SURROGATE = re.compile("[\ud800-\udfff]")


class _TwiceGiven(Exception):
    def __init__(self, key: str):
        self.key = key


def _no_key_twice(pairs: list[tuple[str, Any]]) -> dict:
    result = dict(pairs)
    if len(result) < len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _TwiceGiven(key)
            seen.add(key)
    return result


def _size(chars: int) -> str:
    return f"{chars / 1024**2:,.0f} MiB" if chars >= 1024**2 else f"{chars / 1024:,.0f} KiB"


def checked_value(value: Any, where: str) -> Any:
    """``value`` (parsed JSON or YAML), unless it nests deeper than :data:`MAX_DEPTH` or holds
    a lone surrogate (a UserError saying ``where``). Iterative: a deep value cannot exhaust
    the stack here."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            bad = _SURROGATE.search(item)
            if bad:
                raise UserError(f"{where}: holds a lone surrogate escape (\\u{ord(bad.group()):04x}), which is not text.")
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise UserError(f"{where}: values are nested more than {MAX_DEPTH} deep.")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value


def is_disk_full(error: BaseException | None) -> bool:
    """Whether an exception says the disk is full: errno ENOSPC or EDQUOT, or those errors'
    words in its message, on it or on an exception it was raised from. One test for every
    place a save can fail, whichever library did the writing."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(error) for words in _DISK_FULL_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> None:
    """Move a fully written ``tmp_dir`` to ``final_dir``, replacing an older one."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if final_dir.exists():
        old = final_dir.with_name(final_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)


def append_jsonl(path: str | Path, records: Iterable[dict], *, durable: bool = True) -> None:
    """Append records as JSON lines; with ``durable`` flush and fsync before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        if durable:
            os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield the objects of a JSONL file; a bad line is a UserError naming file and line."""
    for _, obj in read_jsonl_lines(path):
        yield obj


def json_object(text: str, where: str, hint: str = "", limit: int = MAX_JSON_CHARS) -> dict:
    """The JSON object ``text`` holds; anything else is a UserError saying ``where`` it was
    (and ``hint``, what to give instead, after a semicolon): not JSON, not an object, longer
    than ``limit`` characters, or outside the bounds above."""
    if len(text) > limit:
        raise UserError(f"{where}: {_size(len(text))} of JSON, more than such a file ever holds ({_size(limit)}){hint}.")
    try:
        obj = json.loads(text, object_pairs_hook=_no_key_twice)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg}){hint}.") from None
    except RecursionError:
        raise UserError(f"{where}: values are nested more than {MAX_DEPTH} deep{hint}.") from None
    except _TwiceGiven as e:
        raise UserError(f"{where}: the key {json.dumps(e.key)} is given twice{hint}.") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, not a {type(obj).__name__}{hint}.")
    return checked_value(obj, where)


def read_jsonl_lines(path: str | Path) -> Iterator[tuple[int, dict]]:
    """:func:`read_jsonl` with each object's line number (blank lines are skipped but counted)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file.")
    try:
        with open(path, encoding="utf-8") as f:
            # readline with a bound: a line of gigabytes is refused after reading the bound, not all of it
            for lineno, line in enumerate(iter(lambda: f.readline(MAX_LINE_CHARS + 1), ""), 1):
                if len(line) > MAX_LINE_CHARS:
                    raise UserError(f"{path}, line {lineno}: longer than {_size(MAX_LINE_CHARS)}, more than one record ever holds.")
                if not line.strip():
                    continue
                yield lineno, json_object(line, f"{path}, line {lineno}")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not valid UTF-8 text.") from None


def read_text_file(path: str | Path) -> str:
    """The file's text, strictly UTF-8 (a BOM is dropped); a missing file or bad bytes are a
    UserError naming the file (and the offset)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file.")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not valid UTF-8 text (undecodable byte at offset {e.start}).") from None


def truncate_jsonl(path: str | Path, keep: int) -> None:
    """Keep the first ``keep`` complete lines of a JSONL file (used when resuming a run so
    the file matches the last checkpoint exactly); a torn last line is dropped too."""
    path = Path(path)
    if not path.exists():
        return
    kept: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(kept) == keep:
                break
            if not line.endswith("\n"):
                break
            kept.append(line)
    atomic_write_text(path, "".join(kept))
