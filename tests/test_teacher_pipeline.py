"""The teacher pipeline: invalid-answer policies, the cache, one rating per story in order.

The policy logic is exercised here with ``ScriptedBackend``, a tiny real backend whose
answers are fixed strings run through the real parser; the same logic against a real HTTP
model server is covered in test_teacher_openai.py.
"""

import json
import sqlite3
import threading

import pytest

from onceupon.config import TeacherConfig
from onceupon.teacher.base import Outcome, Rating, Story
from onceupon.teacher.cache import RatingCache
from onceupon.teacher.factory import build_teacher
from onceupon.teacher.judges import FINGERPRINT_SETTINGS, OPERATIONAL, fingerprint, same_judge
from onceupon.teacher.parsing import parse_answer
from onceupon.teacher.pipeline import RubricTeacher
from onceupon.teacher.rubric import Rubric

PROMPT = "Once upon a time,"


class ScriptedBackend:
    """Answers each story with the next string of its script (by continuation)."""

    def __init__(self, rubric, scripts: dict[str, list[str]], fail: set[str] = frozenset()):
        self.rubric, self.scripts, self.fail = rubric, {k: list(v) for k, v in scripts.items()}, fail
        self.identity = "scripted:v1"
        self.asked: list[str] = []

    def rate(self, stories):
        out = []
        for s in stories:
            self.asked.append(s.continuation)
            if s.continuation in self.fail:
                out.append(self.rubric.invalid("", "server error 503", outcome=Outcome.FAILED, attempts=6))
                continue
            raw = self.scripts[s.continuation].pop(0)
            p = parse_answer(raw, self.rubric)
            out.append(self.rubric.rating(raw, p.scores) if p.valid else self.rubric.invalid(raw, p.error))
        return out

    def close(self):
        pass


STORIES = ["the fox ran home.", "the owl sang a song.", "the bear slept all day."]


def judge(identity: str, rubric_hash: str) -> dict:
    """The fingerprint of a teacher with the default pipeline settings."""
    return fingerprint(identity, rubric_hash, TeacherConfig().model_dump())


def make(policy, scripts, fail=frozenset(), cache=None, retries=2):
    rubric = Rubric()
    backend = ScriptedBackend(rubric, scripts, fail)
    return RubricTeacher(backend, rubric, invalid_policy=policy, invalid_retries=retries, cache=cache), backend


def test_exclude_keeps_the_invalid_rating_with_its_raw_answer():
    teacher, backend = make("exclude", {STORIES[0]: ["2 3 1"], STORIES[1]: ["lovely story!"], STORIES[2]: ["1 1"]})
    a, b, c = teacher.rate([Story(PROMPT, s) for s in STORIES])
    assert a.valid and a.scores == {"readability": 2, "coherence": 3, "creativity": 1}
    assert not b.valid and b.raw == "lovely story!" and b.score is None and b.scores is None and b.total is None
    assert "no numbers" in b.error
    assert not c.valid and "too few" in c.error
    assert backend.asked == STORIES  # asked once each


def test_retry_asks_again_until_valid_and_counts_attempts():
    teacher, backend = make("retry", {STORIES[0]: ["2 3 1"], STORIES[1]: ["?", "3 3", "1 2 0"], STORIES[2]: ["x", "y", "z"]})
    a, b, c = teacher.rate([Story(PROMPT, s) for s in STORIES])
    assert a.valid and a.attempts == 1
    assert b.valid and b.scores["creativity"] == 0 and b.attempts == 3
    assert b.answers == ["?", "3 3", "1 2 0"]  # every answer, the replaced ones first
    assert not c.valid and c.attempts == 3 and c.score is None  # still invalid: excluded
    assert backend.asked.count(STORIES[0]) == 1 and backend.asked.count(STORIES[1]) == 3


def test_zero_scores_unparseable_answers_but_never_failed_requests():
    teacher, _ = make("zero", {STORIES[0]: ["2 3 1"], STORIES[1]: ["no idea"]}, fail={STORIES[2]})
    a, b, c = teacher.rate([Story(PROMPT, s) for s in STORIES])
    assert a.score == pytest.approx(6 / 9)
    assert not b.valid and b.score == 0.0 and b.total == 0 and b.extra["policy"] == "zero" and b.raw == "no idea"
    assert not c.valid and c.score is None and c.request_failed and c.answers == []


def test_retry_policy_does_not_repeat_failed_requests():
    teacher, backend = make("retry", {}, fail={STORIES[0]})
    (r,) = teacher.rate([Story(PROMPT, STORIES[0])])
    assert not r.valid and backend.asked == [STORIES[0]]


def test_cache_answers_repeats_and_only_stores_valid_ratings(tmp_path):
    path = tmp_path / "ratings.sqlite"
    rubric = Rubric()
    cache = RatingCache(path, judge("scripted:v1", rubric.hash))
    teacher, backend = make("exclude", {STORIES[0]: ["2 3 1", "0 0 0"], STORIES[1]: ["bad", "1 1 1"]}, cache=cache)
    first = teacher.rate([Story(PROMPT, s) for s in STORIES[:2]])
    second = teacher.rate([Story(PROMPT, s) for s in STORIES[:2]])
    assert first[0].scores == second[0].scores and second[0].attempts == 0 and second[0].outcome is Outcome.CACHED
    assert not first[1].valid and second[1].valid  # the invalid one was asked again
    assert backend.asked == [STORIES[0], STORIES[1], STORIES[1]]
    assert len(cache) == 2
    # WAL mode, readable by another connection while this one is open
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 2
    other.close()
    teacher.close()


def test_cache_key_depends_on_teacher_rubric_and_text(tmp_path):
    rubric = Rubric()
    a = RatingCache(tmp_path / "c.sqlite", judge("t1", rubric.hash))
    story = Story(PROMPT, "the fox ran.")
    a.put_many([story], [rubric.rating("1 1 1", {"readability": 1, "coherence": 1, "creativity": 1})])
    assert a.get_many([story])[0].total == 3
    assert a.get_many([Story(PROMPT, "the fox ran!")]) == [None]
    assert a.get_many([Story("Long ago,", "the fox ran.")]) == [None]
    b = RatingCache(tmp_path / "c.sqlite", judge("t2", rubric.hash))
    c = RatingCache(tmp_path / "c.sqlite", judge("t1", "otherhash"))
    assert b.get_many([story]) == [None] and c.get_many([story]) == [None]
    for x in (a, b, c):
        x.close()


def test_cache_is_safe_with_many_connections_at_once(tmp_path):
    # four teachers, each with its own SQLite connection, reading and writing concurrently
    path = tmp_path / "c.sqlite"
    cfg = TeacherConfig(cache=str(path))
    stories = [Story(PROMPT, f"the fox number {i} ran home to its den.") for i in range(200)]
    errors: list[BaseException] = []

    def work(part):
        try:
            with build_teacher(cfg) as t:
                for _ in range(3):
                    assert len(t.rate(part)) == len(part)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(stories[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with build_teacher(cfg) as t:
        ratings = t.rate(stories)
    assert all(r.outcome is Outcome.CACHED for r in ratings)
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 200


def test_corrupt_cache_file_is_a_user_error(tmp_path):
    from onceupon.errors import UserError

    bad = tmp_path / "c.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(UserError, match="rating cache"):
        build_teacher(TeacherConfig(cache=str(bad)))


def test_rating_round_trips_through_dict():
    r = Rating(valid=True, raw="2 3 1", scores={"a": 2, "b": 3}, score=0.5, attempts=2)
    d = r.to_dict()
    assert d["total"] == 5
    assert Rating.from_dict(d).to_dict() == d


def test_typed_fields_round_trip_and_old_records_still_load(tmp_path):
    r = Rating(valid=False, raw="", error="no answer after 3 attempts: timed out", attempts=3, outcome=Outcome.FAILED)
    assert r.answers == [] and r.request_failed
    d = r.to_dict()
    assert d["outcome"] == "failed" and d["answers"] == []
    assert Rating.from_dict(d).outcome is Outcome.FAILED
    # a record written before outcome/answers existed (old ratings files, old cache rows)
    old = Rating.from_dict({"valid": True, "raw": "2 3 1", "scores": {"a": 2}, "score": 0.5, "attempts": 1, "extra": {"cached": True}})
    assert old.outcome is Outcome.ANSWERED and old.answers == ["2 3 1"] and not old.request_failed
    # an old cache row, stored with the old extra keys, is served as a cache hit
    rubric = Rubric()
    cache = RatingCache(tmp_path / "c.sqlite", judge("scripted:v1", rubric.hash))
    story = Story(PROMPT, STORIES[0])
    legacy = {"valid": True, "raw": "1 2 3", "scores": {"readability": 1, "coherence": 2, "creativity": 3}, "score": 0.6, "total": 6,
              "error": None, "attempts": 1, "extra": {"expected": False}}
    cache._db.execute("INSERT INTO ratings VALUES (?, ?, ?, ?, ?)", (cache.key(story), "scripted:v1", rubric.hash, json.dumps(legacy), 0.0))
    (hit,) = cache.get_many([story])
    assert hit.outcome is Outcome.CACHED and hit.total == 6 and hit.answers == ["1 2 3"] and hit.attempts == 0
    cache.close()


def test_outcome_says_how_each_rating_came_about(tmp_path):
    cache = RatingCache(tmp_path / "c.sqlite", judge("scripted:v1", Rubric().hash))
    teacher, backend = make("exclude", {STORIES[0]: ["2 3 1"], STORIES[1]: ["nonsense"]}, fail={STORIES[2]}, cache=cache)
    stories = [Story(PROMPT, s) for s in STORIES] + [Story(PROMPT, "ok.")]
    a, b, c, short = teacher.rate(stories)
    assert (a.outcome, b.outcome, c.outcome, short.outcome) == (Outcome.ANSWERED, Outcome.ANSWERED, Outcome.FAILED, Outcome.RULE)
    assert a.answers == ["2 3 1"] and b.answers == ["nonsense"] and c.answers == [] and short.attempts == 0
    (again,) = teacher.rate(stories[:1])
    assert again.outcome is Outcome.CACHED and backend.asked.count(STORIES[0]) == 1
    teacher.close()


def test_an_old_cache_file_is_still_used(tmp_path):
    """The key of a cache row has been SHA-256 of [identity, rubric hash, prompt, continuation]
    since the cache began; the fingerprint keeps it, so no cache file goes stale."""
    import hashlib

    rubric = Rubric()
    story = Story(PROMPT, STORIES[0])
    old_key = hashlib.sha256(json.dumps(["scripted:v1", rubric.hash, PROMPT, STORIES[0]]).encode("utf-8")).hexdigest()
    row = rubric.rating("1 2 3", {"readability": 1, "coherence": 2, "creativity": 3}).to_dict()
    db = sqlite3.connect(tmp_path / "c.sqlite")
    db.execute("CREATE TABLE ratings (key TEXT PRIMARY KEY, teacher TEXT NOT NULL, rubric TEXT NOT NULL, rating TEXT NOT NULL, created REAL NOT NULL)")
    db.execute("INSERT INTO ratings VALUES (?, ?, ?, ?, ?)", (old_key, "scripted:v1", rubric.hash, json.dumps(row), 0.0))
    db.commit()
    db.close()
    teacher, backend = make("exclude", {}, cache=RatingCache(tmp_path / "c.sqlite", judge("scripted:v1", rubric.hash)))
    (hit,) = teacher.rate([story])
    assert hit.outcome is Outcome.CACHED and hit.total == 6 and backend.asked == []
    teacher.close()


def test_every_teacher_setting_decides_ratings_or_only_how_requests_go():
    """A new teacher setting must be put in one of the two lists, or same_judge and the
    fingerprint would silently disagree about it."""
    assert FINGERPRINT_SETTINGS.isdisjoint(OPERATIONAL)
    assert FINGERPRINT_SETTINGS | OPERATIONAL == set(TeacherConfig.model_fields)


@pytest.mark.parametrize(
    "change, same",
    [({"concurrency": 9, "timeout": 5.0, "cache": None}, True), ({"min_words": 9}, False), ({"invalid_policy": "zero"}, False),
     ({"expected_words": 40}, False), ({"prompt": "example"}, False)],
)
def test_same_judge_agrees_with_the_fingerprint(change, same):
    """Two saved configs are the same judge exactly when the teachers built from them have one
    fingerprint (here with the heuristic backend, which needs no server)."""
    a, b = TeacherConfig(), TeacherConfig(**change)
    with build_teacher(a) as ta, build_teacher(b) as tb:
        assert (ta.fingerprint == tb.fingerprint) is same
    assert same_judge(a.model_dump(mode="json"), b.model_dump(mode="json")) is same
