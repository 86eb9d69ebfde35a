"""Constrained answers: the rubric's format as a regex, a JSON schema and a logits processor
that makes every answer of a real (even random) transformers chat model parse."""

import json
import re

import pytest

from onceupon.config import CriterionConfig, TeacherConfig
from onceupon.teacher.base import Story
from onceupon.teacher.constrain import AnswerFormat
from onceupon.teacher.factory import build_teacher
from onceupon.teacher.parsing import parse_answer
from onceupon.teacher.rubric import Rubric

PROMPT = "Once upon a time, in a faraway land,"
CUSTOM = [
    CriterionConfig(name="fluency", description="d", levels={k: str(k) for k in range(1, 11)}),
    CriterionConfig(name="plot", description="d", levels={0: "a", 1: "b"}),
]


def stories(n):
    return [Story(PROMPT, f"there lived fox number {i}. It found a key and opened door {i}.", id=str(i)) for i in range(n)]


def test_format_regex_schema_and_prefixes_follow_the_rubric():
    paper = AnswerFormat(Rubric())
    assert paper.regex() == "(0|1|2|3) (0|1|2|3) (0|1|2|3)"
    assert re.fullmatch(paper.regex(), "2 3 1") and not re.fullmatch(paper.regex(), "2 3 4")
    assert [paper.is_prefix(t) for t in ["", "2", "2 ", "2 3 1", "2  ", "4", "2 3 1 "]] == [True, True, True, True, False, False, False]
    assert paper.is_complete("0 0 0") and not paper.is_complete("0 0")
    custom = AnswerFormat(Rubric.from_config(TeacherConfig(criteria=CUSTOM)))
    assert re.fullmatch(custom.regex(), "10 1") and not re.fullmatch(custom.regex(), "0 1")
    assert custom.is_prefix("1") and custom.is_complete("1 0") and custom.max_chars == 4
    schema = custom.json_schema()
    assert schema["required"] == ["fluency", "plot"]
    assert schema["properties"]["fluency"] == {"type": "integer", "minimum": 1, "maximum": 10}
    # a JSON answer that fits the schema parses as a labelled answer
    rubric = Rubric.from_config(TeacherConfig(criteria=CUSTOM))
    assert parse_answer(json.dumps({"fluency": 7, "plot": 1}), rubric).scores == {"fluency": 7, "plot": 1}


@pytest.fixture(scope="module")
def random_chat_model(tiny_teacher_model, tmp_path_factory):
    """An untrained chat model on the tiny teacher's tokenizer: its free answers are noise."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_teacher_model)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    directory = tmp_path_factory.mktemp("random") / "random-chat"
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _rate(model, n=12, **settings):
    cfg = TeacherConfig(backend="transformers", model=str(model), device="cpu", batch_size=6, temperature=1.0, **settings)
    with build_teacher(cfg) as teacher:
        return teacher.identity, teacher.rate(stories(n))


def test_constrained_answers_of_a_random_model_all_parse(random_chat_model):
    identity, free = _rate(random_chat_model, constrained="off")
    assert "constrained" not in identity
    assert sum(r.valid for r in free) <= 2, [r.raw for r in free]  # noise rarely fits the format
    identity, constrained = _rate(random_chat_model)  # constrained: auto is the default
    assert identity.endswith("|constrained")  # cached ratings of the two modes never mix
    assert all(r.valid for r in constrained), [(r.raw, r.error) for r in constrained]
    assert all(re.fullmatch(r"[0-3] [0-3] [0-3]", r.raw) for r in constrained), [r.raw for r in constrained]
    assert len({r.raw for r in constrained}) > 1  # the model's own (random) choice, not a fixed answer


def test_constrained_multi_digit_scales(random_chat_model):
    _, ratings = _rate(random_chat_model, criteria=CUSTOM)
    assert all(r.valid and 1 <= r.scores["fluency"] <= 10 and r.scores["plot"] in (0, 1) for r in ratings), [r.raw for r in ratings]


def test_expected_score_mode_works_constrained(random_chat_model, tiny_teacher_model):
    _, ratings = _rate(random_chat_model, n=6, expected_score=True)
    for r in ratings:
        assert r.valid and r.extra["expected"] is True, (r.raw, r.extra)
        # the random model's digit distribution, renormalised over 0..3: a mean strictly inside
        assert all(0.0 < v < 3.0 and not float(v).is_integer() for v in r.scores.values()), r.scores
    # a trained judge keeps its answer constrained, with most mass on the digits it chose
    cfg = TeacherConfig(backend="transformers", model=str(tiny_teacher_model), device="cpu", temperature=0, expected_score=True)
    with build_teacher(cfg) as teacher:
        (r,) = teacher.rate(stories(1))
    assert r.raw == "2 3 1" and r.extra["sampled"] == {"readability": 2, "coherence": 3, "creativity": 1}
    assert all(abs(r.scores[k] - v) < 0.5 for k, v in r.extra["sampled"].items()), r.scores
