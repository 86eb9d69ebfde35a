"""The answer parser: many answer shapes, each with the validity a user relies on."""

import math

import pytest

from onceupon.config import CriterionConfig, TeacherConfig
from onceupon.teacher.parsing import expected_scores, parse_answer
from onceupon.teacher.rubric import Rubric

RUBRIC = Rubric()
R, C, K = "readability", "coherence", "creativity"

VALID = [
    ("2 3 1", (2, 3, 1)),
    ("0 0 0", (0, 0, 0)),
    ("3 3 3\n", (3, 3, 3)),
    ("2, 3, 1", (2, 3, 1)),
    ("2-3-1", (2, 3, 1)),
    ("2 | 3 | 1", (2, 3, 1)),
    ("2\n3\n1", (2, 3, 1)),
    ("[2, 3, 1]", (2, 3, 1)),
    ("**2 3 1**", (2, 3, 1)),
    ("Scores: 2 3 1", (2, 3, 1)),
    ("2 3 1. The story has 3 bears and 2 cats.", (2, 3, 1)),
    ("2 3 1\nReason: short.", (2, 3, 1)),
    ("2/3 3/3 1/3", (2, 3, 1)),
    ("2 out of 3, 3 out of 3, 1 out of 3", (2, 3, 1)),
    ("2.0 3 1", (2, 3, 1)),
    ("Readability: 2, Narrative coherence: 3, Creativity: 1", (2, 3, 1)),
    ("Creativity: 1\nReadability: 2\nCoherence: 3", (2, 3, 1)),
    ("1. Readability: 2\n2. Coherence: 3\n3. Creativity: 1", (2, 3, 1)),
    ("readability=0 coherence=1 creativity=2", (0, 1, 2)),
    ("<think>Maybe 5 or 6.</think>2 3 1", (2, 3, 1)),
    ("Llama3 says: 2 3 1", (2, 3, 1)),
]

INVALID = [
    ("", "empty"),
    ("   \n", "empty"),
    ("<think>2 3 1</think>", "empty"),
    ("The story is lovely.", "no numbers"),
    ("2 3", "too few"),
    ("2", "too few"),
    ("2 3 1 0", "too many"),
    ("1 2 3 4 5 6", "too many"),
    ("2 3 4", "outside 0..3"),
    ("-1 2 3", "outside 0..3"),
    ("9 9 9", "outside 0..3"),
    ("2.5 3 1", "not a whole number"),
    ("Readability: 2, Coherence: 7, Creativity: 1", "outside 0..3"),
    ("I would say 2, maybe 3, then 1 or 2", "too many"),
]


@pytest.mark.parametrize("answer,expected", VALID)
def test_valid_answers_parse_to_their_scores(answer, expected):
    parsed = parse_answer(answer, RUBRIC)
    assert parsed.valid, parsed.error
    assert parsed.error is None
    assert parsed.scores == dict(zip((R, C, K), expected))


@pytest.mark.parametrize("answer,reason", INVALID)
def test_invalid_answers_are_invalid_with_a_reason(answer, reason):
    parsed = parse_answer(answer, RUBRIC)
    assert not parsed.valid
    assert parsed.scores is None
    assert reason in parsed.error


def test_labelled_answer_reports_answer_order():
    parsed = parse_answer("Creativity: 1, Readability: 2, Coherence: 3", RUBRIC)
    assert parsed.order == [K, R, C]


def test_custom_scale_and_criteria():
    cfg = TeacherConfig(
        criteria=[
            CriterionConfig(name="fluency", description="d", levels={1: "bad", 2: "ok", 3: "good", 4: "great", 5: "best"}),
            CriterionConfig(name="plot", description="d", levels={1: "none", 2: "some", 3: "a plot", 4: "good", 5: "best"}),
        ]
    )
    rubric = Rubric.from_config(cfg)
    assert parse_answer("5 1", rubric).scores == {"fluency": 5, "plot": 1}
    assert parse_answer("4/5 2/5", rubric).scores == {"fluency": 4, "plot": 2}
    assert "outside 1..5" in parse_answer("0 3", rubric).error
    assert "too many" in parse_answer("5 1 3", rubric).error


def test_expected_scores_are_probability_weighted_means():
    lp = math.log
    answer = "2 3 1"
    parsed = parse_answer(answer, RUBRIC)
    tokens = [
        ("2", lp(0.5), {"2": lp(0.5), "1": lp(0.25), "3": lp(0.25)}),
        (" ", lp(1.0), {" ": lp(1.0)}),
        ("3", lp(0.8), {"3": lp(0.8), " 2": lp(0.1), "hello": lp(0.1)}),  # non-digit mass is dropped
        (" ", lp(1.0), {}),
        ("1", lp(0.6), {"1": lp(0.6), "0": lp(0.2), "7": lp(0.2)}),  # 7 is off the scale
    ]
    got = expected_scores(tokens, parsed, RUBRIC)
    assert got[R] == pytest.approx(0.5 * 2 + 0.25 * 1 + 0.25 * 3)
    assert got[C] == pytest.approx((0.8 * 3 + 0.1 * 2) / 0.9)
    assert got[K] == pytest.approx((0.6 * 1 + 0.2 * 0) / 0.8)


def test_expected_scores_fall_back_when_tokens_do_not_line_up():
    parsed = parse_answer("2 3 1", RUBRIC)
    tokens = [("23", 0.0, {}), (" 1", 0.0, {})]  # a tokenizer merged two digits
    assert expected_scores(tokens, parsed, RUBRIC) is None
    assert expected_scores([], parse_answer("", RUBRIC), RUBRIC) is None
