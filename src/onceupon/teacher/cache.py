"""A SQLite cache of ratings, so rating the same story twice with the same teacher is free.

Key: SHA-256 of (teacher identity, rubric hash, cleaned prompt, cleaned continuation): the
first two parts of the teacher's fingerprint (:mod:`onceupon.teacher.judges`). The identity
names the backend, model and sampling settings, and the rubric hash covers criteria and
template, so changing any of them misses the cache instead of returning a stale rating.
Only valid ratings are stored: an invalid answer or a failed request is worth asking again.
So the fingerprint's pipeline settings (what becomes of invalid answers and too-short
stories) are not in the key: they change no stored rating. The key has been the same since
the cache began, so a cache file of any earlier version is still used.

The database runs in WAL mode, so many processes can read while one writes (evaluation
workers sharing one cache file, for example); writers wait up to ``busy_timeout`` for each
other instead of failing. Within a process one connection is shared under a lock.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from onceupon.errors import UserError
from onceupon.teacher.base import Outcome, Rating, Story

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    rubric TEXT NOT NULL,
    rating TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class RatingCache:
    def __init__(self, path: str | Path, fingerprint: dict):
        self.path = Path(path)
        self.identity = fingerprint["teacher"]
        self.rubric_hash = fingerprint["rubric"]
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._setup()
        except sqlite3.DatabaseError as e:
            raise UserError(f"Cannot use {self.path} as a rating cache: {e}.") from None

    def _setup(self) -> None:
        """WAL mode, the busy timeout and the table. Switching to WAL while another connection
        opens the same new file can answer "database is locked" at once, without waiting for
        the busy timeout (SQLite does not wait there, to avoid a deadlock): retried for up to
        30 s, as a busy write would wait."""
        deadline = time.monotonic() + 30
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def key(self, story: Story) -> str:
        payload = json.dumps([self.identity, self.rubric_hash, story.prompt, story.continuation], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get_many(self, stories: list[Story]) -> list[Rating | None]:
        """Cached ratings (attempts 0, ``outcome`` CACHED) or None per story, in order."""
        keys = [self.key(s) for s in stories]
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):  # SQLite limits bound parameters per query
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(self._db.execute(f"SELECT key, rating FROM ratings WHERE key IN ({marks})", chunk).fetchall())
        result: list[Rating | None] = []
        for k in keys:
            if k not in found:
                result.append(None)
                continue
            rating = Rating.from_dict(json.loads(found[k]))
            rating.attempts = 0
            rating.outcome = Outcome.CACHED
            result.append(rating)
        return result

    def put_many(self, stories: list[Story], ratings: list[Rating]) -> None:
        rows = [
            (self.key(s), self.identity, self.rubric_hash, json.dumps(r.to_dict() | {"extra": _plain(r.extra)}), time.time())
            for s, r in zip(stories, ratings)
            if r.valid and r.outcome is not Outcome.CACHED
        ]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO ratings VALUES (?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM ratings").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _plain(extra: dict) -> dict:
    """The JSON-serialisable part of ``extra``."""
    out = {}
    for k, v in extra.items():
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out
