"""The answers file, and what each annotator has answered and sees next.

One JSON line per answer, appended and fsynced the moment it is given: ``id`` (the story's id
in the sample), ``annotator``, ``scores`` ({criterion: level}, or null when skipped),
``skipped``, ``flagged``, ``comment`` (the flag's comment, "" without one), ``time`` (UTC).

The file is a log: going back and changing an answer appends a new record, and the last record
per (annotator, story) is the answer (:func:`latest`). Several annotators share one file: a
thread lock serialises this process's appends and ``fcntl.flock`` serialises processes, so
lines never interleave. Nothing is kept only in memory except which story an annotator is
looking at, so stopping the server at any moment loses nothing that was answered.

Who sees what (:class:`Desk`): every annotator walks the sample in its shuffled order. Shared
stories are shown to everyone (for inter-annotator agreement); any other story goes to the
first annotator who reaches it and is then skipped for the others.
"""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

from onceupon.annotate.sample import Item
from onceupon.files import append_jsonl, read_jsonl, truncate_jsonl
from onceupon.teacher.rubric import Rubric
from onceupon.text import printable


class AnswersFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        with self._lock, open(self.path, "a", encoding="utf-8") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # released when `held` closes
            append_jsonl(self.path, [record], durable=True)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as held:
            fcntl.flock(held, fcntl.LOCK_SH)  # no half-written line from another process
            return list(read_jsonl(self.path))

    def drop_torn_line(self) -> bool:
        """Cut a last line left unfinished by a crash (a later append would glue onto it)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        with open(self.path, "rb") as f:
            f.seek(-1, 2)
            if f.read(1) == b"\n":
                return False
            f.seek(0)
            complete = f.read().count(b"\n")
        truncate_jsonl(self.path, complete)
        return True


def latest(records: list[dict]) -> dict[tuple[str, str], dict]:
    """The answer of each (annotator, story id): its last record."""
    return {(str(r.get("annotator")), str(r.get("id"))): r for r in records}


def check_scores(scores: dict | None, rubric: Rubric) -> dict | None:
    """The scores in criterion order, or ValueError naming what is wrong."""
    if scores is None:
        return None
    if set(scores) != set(rubric.names):
        raise ValueError(f"scores must name exactly the criteria {rubric.names}")
    for c in rubric.criteria:
        value = scores[c.name]
        if not isinstance(value, int) or isinstance(value, bool) or not c.low <= value <= c.high:
            raise ValueError(f"{c.name} must be a whole number from {c.low} to {c.high}")
    return {c.name: scores[c.name] for c in rubric.criteria}


class Desk:
    """Hands out stories and takes answers; the answers file is the state (re-read on each
    call, so answers written by another process on the same file count too)."""

    def __init__(self, items: list[Item], answers: AnswersFile, rubric: Rubric):
        self.items = items
        self.answers = answers
        self.rubric = rubric
        self._key = {item.id: key for key, item in enumerate(items)}
        self._looking_at: dict[str, int] = {}  # annotator -> key shown but not answered yet
        self._lock = threading.Lock()

    def _state(self, annotator: str) -> tuple[list[int], dict[int, dict], list[int]]:
        """(keys this annotator answered, in first-answer order; their last answers; keys
        still available to them, in sample order)."""
        records = self.answers.records()
        history: list[int] = []
        taken: set[int] = set()
        for r in records:
            key = self._key.get(str(r.get("id")))
            if key is None:
                continue
            if r.get("annotator") == annotator:
                if key not in history:
                    history.append(key)
            else:
                taken.add(key)
        taken |= {k for who, k in self._looking_at.items() if who != annotator}
        mine = {
            self._key[sid]: r for (who, sid), r in latest(records).items() if who == annotator and sid in self._key
        }
        done = set(history)
        available = [k for k, item in enumerate(self.items) if k not in done and (item.shared or k not in taken)]
        return history, mine, available

    def view(self, annotator: str) -> dict:
        with self._lock:
            history, _, available = self._state(annotator)
        return {"history": history, "total": len(history) + len(available)}

    def story(self, annotator: str, key: int) -> dict:
        with self._lock:
            _, mine, _ = self._state(annotator)
        item = self.items[key]
        answer = mine.get(key)
        return {
            "key": key,
            "prompt": printable(item.prompt),  # control characters marked, as the teacher and the report see them
            "continuation": printable(item.continuation),
            "answer": None if answer is None else {k: answer.get(k) for k in ("scores", "skipped", "flagged", "comment")},
        }

    def next(self, annotator: str) -> dict | None:
        """The story this annotator sees next (kept for them until they answer it), or None."""
        with self._lock:
            _, _, available = self._state(annotator)
            if not available:
                self._looking_at.pop(annotator, None)
                return None
            key = self._looking_at.get(annotator)
            if key not in available:
                key = self._looking_at[annotator] = available[0]
        return self.story(annotator, key)

    def answer(self, annotator: str, key: int, scores: dict | None, flagged: bool, comment: str) -> dict:
        """Append the answer (unless it repeats this annotator's last answer to the story)."""
        scores = check_scores(scores, self.rubric)
        record = {
            "id": self.items[key].id,
            "annotator": annotator,
            "scores": scores,
            "skipped": scores is None,
            "flagged": bool(flagged),
            "comment": comment if flagged else "",
        }
        with self._lock:
            _, mine, _ = self._state(annotator)
            last = mine.get(key)
            if last is None or any(last.get(k) != v for k, v in record.items()):
                self.answers.append({**record, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            if self._looking_at.get(annotator) == key:
                del self._looking_at[annotator]
        return self.view(annotator)
