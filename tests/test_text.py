"""Control characters and undecodable bytes from a student's byte-level output reach neither
the teacher's prompt, nor the annotation page, nor the report: one rule marks them visibly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from onceupon.text import SUBSTITUTE, printable

#: what must never be shown: control characters but newline and tab, and U+FFFD
NOT_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd]")
#: the same characters written as JSON escapes (a page decodes them back)
ESCAPED = re.compile(r"\\u00(?:[01][0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])|\\u[fF][fF][fF][dD]")


def test_printable_marks_control_characters_and_undecodable_bytes():
    assert printable("a\x03b\x15c") == "a\u2403b\u2415c"  # ␃ and ␕, the control pictures
    assert printable("\x00\x1f\x7f") == "\u2400\u241f\u2421"
    assert printable("x\ufffd\ufffd\ufffdy\ufffd") == f"x{SUBSTITUTE}y{SUBSTITUTE}"  # a run of U+FFFD is one mark
    assert printable("\x85") == SUBSTITUTE  # C1 controls have no picture
    text = "Once upon a time,\n\tthere lived a fox — “Pip” — naïve and 🦊."
    assert printable(text) == text  # text, newlines and tabs untouched
    assert printable(printable("a\x03\ufffd")) == printable("a\x03\ufffd")


@pytest.fixture(scope="module")
def student_stories(tiny_checkpoint) -> list[tuple[str, str]]:
    """What a real untrained byte-level student writes: (prompt, continuation) pairs."""
    from onceupon.evaluate.stories import sample_stories
    from onceupon.student.checkpoints import load_checkpoint_tokenizer, load_model

    model = load_model(tiny_checkpoint, "use a checkpoint written by onceupon")
    tokenizer = load_checkpoint_tokenizer(tiny_checkpoint, "use a checkpoint written by onceupon")
    samples = sample_stories(model, tokenizer, "Once upon a time,", 12, max_new_tokens=40, seed=0)
    stories = [(s.prompt, s.continuation) for s in samples]
    raw = "".join(c for _, c in stories)
    # the premise: the student does write control characters and undecodable bytes
    assert re.search("[\x00-\x08\x0b-\x1f]", raw) and "\ufffd" in raw
    return stories


def test_the_teacher_sees_them_marked(student_stories):
    from onceupon.teacher.base import Story
    from onceupon.teacher.rubric import Rubric, clean_story

    rubric = Rubric()
    prompts = [rubric.render(clean_story(Story(p, c))) for p, c in student_stories]
    assert not any(NOT_TEXT.search(text) for text in prompts)
    assert any(SUBSTITUTE in text for text in prompts)  # marked, not silently dropped


def test_the_annotation_page_gets_them_marked(student_stories, tmp_path):
    from onceupon.annotate.answers import AnswersFile, Desk
    from onceupon.annotate.sample import choose, collect
    from onceupon.teacher.rubric import Rubric

    source = tmp_path / "stories.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "prompt": p, "continuation": c}) + "\n" for i, (p, c) in enumerate(student_stories)))
    items = choose(collect([source]), len(student_stories), seed=0, share=0.0)
    desk = Desk(items, AnswersFile(tmp_path / "human.jsonl"), Rubric())
    shown = [desk.story("ada", key) for key in range(len(items))]
    for story in shown:
        assert not NOT_TEXT.search(story["prompt"] + story["continuation"])
    # what the page receives is the same text the teacher is shown
    assert sorted(s["continuation"] for s in shown) == sorted(printable(c) for _, c in student_stories)


def test_the_report_shows_them_marked(student_stories, tmp_path):
    from fake_runs import make_interaction_run

    from onceupon.analysis.report import build
    from onceupon.config import ReportConfig

    run = make_interaction_run(tmp_path, Path("/nowhere/chck_1K"), 1_000, 1.0, 2.0, "rl", steps=2, batch=6, invalid_every=0)
    lines = [json.loads(line) for line in (run / "anthology.jsonl").read_text().splitlines()]
    for line, (prompt, continuation) in zip(lines, student_stories, strict=True):
        line["prompt"], line["continuation"] = prompt, continuation
    lines[0]["raw"] = "3\x03 2 1"  # a teacher's answer can hold one too
    (run / "anthology.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    index, data = build(ReportConfig(bootstrap=0, stories_shown=100), [run], tmp_path / "report")
    html = index.read_text(encoding="utf-8")
    assert not NOT_TEXT.search(html) and not ESCAPED.search(html)
    stories = json.loads((index.parent / "report.json").read_text(encoding="utf-8"))["browser"]["stories"]
    assert len(stories) == len(lines)
    for story in stories:
        assert not NOT_TEXT.search(story["prompt"] + story["continuation"] + (story["raw"] or ""))
    assert SUBSTITUTE in "".join(s["continuation"] for s in stories)
