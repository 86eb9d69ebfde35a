"""The heuristic teacher: good stories outrank broken ones on every criterion, deterministically."""

import random
import subprocess
import sys

import pytest

from onceupon.config import CriterionConfig, TeacherConfig
from onceupon.errors import UserError
from onceupon.teacher.base import Story
from onceupon.teacher.factory import build_teacher

PROMPT = "Let me tell you a long, magical tale. Once upon a time, in a faraway land,"
GOOD = (
    "there lived a little fox named Pip. Pip had a shiny red box that sang when the moon rose. "
    "One night the box fell silent, so Pip set out to find its lost song. He asked the old owl, "
    "who told him to listen to the river. At the river, Pip heard a gentle tune hidden in the water. "
    "He caught the tune in his box and carried it home. From then on, the box sang every night, "
    "and Pip was never lonely again."
)
SALAD = " ".join(
    random.Random(1).choices(
        "green quickly table moon sings purple jumping happily under cloud river bottle seven running softly window".split(), k=70
    )
)
SHUFFLED = " ".join(random.Random(0).sample(GOOD.split(), len(GOOD.split())))
LOOP = "the fox went to the river. " * 12
LOOP_CUT = "and the box and the box and the box " * 8
BROKEN = {"word salad": SALAD, "shuffled words": SHUFFLED, "repeated sentence": LOOP, "repeated phrase": LOOP_CUT, "empty": ""}


@pytest.fixture(scope="module")
def teacher():
    with build_teacher(TeacherConfig()) as t:
        yield t


def test_default_teacher_is_the_heuristic(teacher):
    assert teacher.identity.startswith("heuristic")
    assert teacher.rubric.names == ["readability", "coherence", "creativity"]


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_good_story_outranks_broken_text_on_every_criterion(teacher, kind):
    good, bad = teacher.rate([Story(PROMPT, GOOD), Story(PROMPT, BROKEN[kind])])
    assert good.valid and bad.valid
    for name in teacher.rubric.names:
        assert good.scores[name] > bad.scores[name], (kind, name, good.raw, bad.raw)
    assert good.score > bad.score


def test_ratings_are_deterministic_across_processes(teacher):
    texts = [GOOD, SALAD, SHUFFLED, LOOP, LOOP_CUT]
    here = [r.raw for r in teacher.rate([Story(PROMPT, t) for t in texts])]
    assert here == [r.raw for r in teacher.rate([Story(PROMPT, t) for t in texts])]
    code = (
        "import json,sys; from onceupon.teacher.factory import build_teacher; from onceupon.teacher.base import Story;"
        "texts=json.load(sys.stdin); t=build_teacher();"
        f"print(json.dumps([r.raw for r in t.rate([Story({PROMPT!r}, x) for x in texts])]))"
    )
    import json

    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == here


def test_raw_answer_is_in_the_strict_format_and_signals_are_exposed(teacher):
    (r,) = teacher.rate([Story(PROMPT, GOOD)])
    assert r.raw == " ".join(str(r.scores[n]) for n in teacher.rubric.names)
    assert set(r.extra["signals"]) >= {"complete", "remention", "variety", "repetition"}
    assert all(0.0 <= v <= 1.0 for v in r.extra["signals"].values())


def test_empty_and_too_short_continuations_get_zero_without_a_request(teacher):
    ratings = teacher.rate([Story(PROMPT, ""), Story(PROMPT, "</s><pad>"), Story(PROMPT, "the fox"), Story(PROMPT, "!!! ...")])
    for r in ratings:
        assert r.valid and r.total == 0 and r.score == 0.0
        assert r.extra["rule"] == "too_short" and r.attempts == 0


def test_special_tokens_do_not_change_the_rating(teacher):
    clean, dirty = teacher.rate([Story(PROMPT, GOOD), Story(PROMPT, "<s>" + GOOD.replace(". ", ".</s> ") + "<|endoftext|><pad>")])
    assert clean.scores == dirty.scores


def test_heuristic_rejects_unknown_criteria():
    cfg = TeacherConfig(criteria=[CriterionConfig(name="humour", description="d", levels={0: "a", 1: "b"})])
    with pytest.raises(UserError, match="heuristic"):
        build_teacher(cfg)


def test_a_batch_keeps_story_order(teacher):
    stories = [Story(PROMPT, GOOD if i % 3 else SALAD + f" {i}") for i in range(360)]
    ratings = teacher.rate(stories)
    assert len(ratings) == 360
    (good,) = teacher.rate([Story(PROMPT, GOOD)])
    assert [r.total == good.total for r in ratings] == [i % 3 != 0 for i in range(360)]


def test_ease_follows_the_textstat_reading_grade():
    from onceupon.readability import reading_grade
    from onceupon.teacher.backends.heuristic import signals

    easy = "The cat sat on a mat. It was a big cat. The cat was glad."
    hard = (
        "Notwithstanding considerable institutional apprehension, the extraordinarily meticulous administration "
        "systematically reconceptualised its organisational responsibilities regarding international environmental sustainability."
    )
    assert reading_grade(easy) <= 4 < 16 <= reading_grade(hard)
    assert signals("", easy)["ease"] == 1.0 and signals("", hard)["ease"] == 0.0
