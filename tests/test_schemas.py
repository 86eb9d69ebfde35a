"""Every file format onceupon reads, and the config, fed valid, random, truncated and
type-confused input: each reader returns or raises one ``UserError`` sentence naming the file
(and line and field), never another exception. The regression cases are the ones found by
hand (issue: every file and number a user gives is read through one schema).

The fuzz tests are property-based (hypothesis) with few examples each, so the whole file runs
in seconds; the same cases through the real command are in test_bad_input.py.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.files import read_text_file
from onceupon.schemas.ratings import read_answer_records, read_rating_records
from onceupon.schemas.results import read_check_result, read_people_agreement
from onceupon.schemas.run import read_checkpoint_meta, read_interact_state, read_metrics
from onceupon.schemas.stories import read_probe_records, read_sample_records, read_story_records
from onceupon.teacher.probes import KINDS
from onceupon.teacher.rubric import Rubric

RUBRIC = Rubric.from_config(ExperimentConfig().teacher)  # the paper's: three criteria, 0..3
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- valid files
STORY = {"id": "s1", "prompt": "Once upon a time,", "continuation": "there was a fox. She ran home."}
RATING = {"id": "s1", "valid": True, "scores": {"readability": 2, "coherence": 3, "creativity": 1}, "total": 6}
ANSWER = {"id": "s1", "annotator": "ada", "scores": {"readability": 2, "coherence": 3, "creativity": 1},
          "skipped": False, "flagged": False, "comment": "", "time": "2026-01-01T00:00:00Z"}  # fmt: skip
SAMPLE = {**STORY, "origin": "runs/a/anthology.jsonl 3", "shared": True, "valid": True, "scores": {"coherence": 2}}
PROBE = {"id": "s1-shuffled", "story": "s1", "kind": "shuffled", "targets": ["coherence"], "prompt": "", "continuation": "x."}
STATE = {"start_checkpoint": "/runs/p/checkpoints/chck_1M", "algorithm": "ppo", "step": 3, "stories": 24,
         "input_words": 120, "prompt_words": 40, "teacher_words": 80, "generated_words": 900,
         "input_budget": 1000, "generation_budget": 100000, "checkpoint": None, "done": False}  # fmt: skip
META = {"name": "chck_1M", "stage": "pretrain", "pretrain_words": 1000000, "interact_words": 0,
        "generated_words": 0, "step": 10, "start_checkpoint": None, "extra": {}}  # fmt: skip
_STATS = {"n": 4, "spearman": 0.5, "kappa": 0.4, "exact": 0.5, "mean_abs_diff": 0.5}
_PAIR = {"both_valid": 4, "criteria": {n: _STATS for n in RUBRIC.names}, "total": _STATS}
AGREEMENT = {"a": "t.jsonl", "b": "h.jsonl", "annotators": {"ada": 4, "bob": 4}, "teacher_vs": {"ada": _PAIR, "bob": _PAIR},
             "teacher_vs_mean": _PAIR, "between": {"ada ~ bob": _PAIR},
             "between_mean": {"pairs": 1, "criteria": {n: _STATS for n in RUBRIC.names}, "total": _STATS}}  # fmt: skip
_CRIT = {"pairs": 30, "higher": 21, "lower": 0, "tied": 9, "discrimination": 0.7, "interval": [0.52, 0.83],
         "chance": 0.35, "verdict": "discriminates", "text": "readability: discriminates"}  # fmt: skip
CHECK = {"teacher": "heuristic:v1", "probes": {"n": 110, "stories": 10}, "criteria": {"readability": _CRIT, "overall": _CRIT},
         "diversity": {"answer": {"n": 110, "entropy_bits": 2.5, "most_frequent": "3 3 3", "most_frequent_share": 0.34}},
         "answers": {"invalid_rate": 0.0, "shown_example": None, "example_copy_rate": None},
         "fragments": {"n": 10, "lowest": 0}, "injection": {"lift": 0.04, "verdict": "raises the score"},
         "speed": {"ratings_per_s": 55.9}, "warnings": [], "verdict": {"discriminates": True, "text": "PASS"}}  # fmt: skip

JSONL_READERS = {
    "stories": (read_story_records, STORY),
    "ratings": (lambda p: read_rating_records(p, RUBRIC), RATING),
    "annotations": (lambda p: read_answer_records(p, RUBRIC), ANSWER),
    "probes": (lambda p: read_probe_records(p, KINDS), PROBE),
    "annotation sample": (read_sample_records, SAMPLE),
}
JSON_READERS = {
    "state.json": (read_interact_state, STATE),
    "onceupon.json": (read_checkpoint_meta, META),
    "agreement": (read_people_agreement, AGREEMENT),
    "check.json": (read_check_result, CHECK),
}


def _write(text: str | bytes, name: str = "f.jsonl") -> Path:
    path = Path(tempfile.mkdtemp(prefix="onceupon-schema-")) / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _jsonl(*records) -> Path:
    return _write("".join(json.dumps(r) + "\n" for r in records))


def _refused(read, path: Path, *needles: str) -> str:
    """``read(path)`` raises a UserError of one sentence naming the file and every needle."""
    with pytest.raises(UserError) as caught:
        read(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def _one_sentence_or_success(read, path: Path) -> None:
    try:
        read(path)
    except UserError as e:
        assert str(e).strip() and "\n" not in str(e), str(e)


# --------------------------------------------------------------------------- the valid files read
@pytest.mark.parametrize("name", JSONL_READERS)
def test_a_valid_jsonl_file_is_read(name):
    read, record = JSONL_READERS[name]
    assert len(read(_jsonl(record, {**record, "id": "s2"}))) == 2


@pytest.mark.parametrize("name", JSON_READERS)
def test_a_valid_json_file_is_read(name):
    read, data = JSON_READERS[name]
    read(_write(json.dumps(data), "f.json"))


# --------------------------------------------------------------------------- regression cases
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("layout", ["scores", "spreadsheet"])
def test_a_rating_that_is_not_a_finite_number_is_refused(bad, layout):
    """Python's json reads NaN and Infinity; they used to crash rate --compare later."""
    scores = {"readability": bad, "coherence": 1, "creativity": 1}
    record = {"id": "a", "scores": scores} if layout == "scores" else {"id": "a", **scores}
    field = "scores.readability" if layout == "scores" else "readability"
    _refused(lambda p: read_rating_records(p, RUBRIC), _jsonl(record), "line 1", field, "0 to 3")


@pytest.mark.parametrize("score", [7, -4, 1.5, "2", True])
def test_an_annotator_score_off_the_scale_is_refused(score):
    answer = {**ANSWER, "scores": {**ANSWER["scores"], "coherence": score}}
    _refused(lambda p: read_answer_records(p, RUBRIC), _jsonl(ANSWER, answer), "line 2", "scores.coherence", "0 to 3")


def test_an_annotator_given_as_a_list_is_refused_not_renamed():
    _refused(lambda p: read_answer_records(p, RUBRIC), _jsonl({**ANSWER, "annotator": ["ada"]}), "line 1", "annotator")


def test_an_answer_for_another_rubric_is_kept_but_not_rated():
    other = {**ANSWER, "scores": {"humour": 9}}
    (answer,) = read_answer_records(_jsonl(other), RUBRIC)
    assert answer.rated(RUBRIC) is None


def test_a_rating_with_a_criterion_missing_or_null_is_invalid_not_an_error():
    records = read_rating_records(_jsonl({"id": "a", "scores": {"readability": 1}}, {"id": "b", "scores": None}, RATING), RUBRIC)
    assert [r.rated(RUBRIC) for r in records][:2] == [None, None]
    assert records[2].rated(RUBRIC) == {"readability": 2.0, "coherence": 3.0, "creativity": 1.0}


def test_probe_targets_that_are_not_a_list_are_refused():
    _refused(lambda p: read_probe_records(p, KINDS), _jsonl({**PROBE, "targets": 5}), "line 1", "targets")
    _refused(lambda p: read_probe_records(p, KINDS), _jsonl({**PROBE, "kind": "shuffle"}), "line 1", "kind", "shuffled")


def test_a_story_needs_text_and_ids_stay_unique():
    _refused(read_story_records, _jsonl(STORY, {"id": "x", "prompt": "p"}), "line 2", "continuation")
    _refused(read_story_records, _jsonl(STORY, STORY), "lines 1 and 2", "s1")
    _refused(read_story_records, _jsonl({**STORY, "id": ["s"]}), "line 1", "field 'id'")
    (rid, story), = read_story_records(_jsonl({"text": "Once upon a time, a fox.", "prompt": "Once upon a time,"}))
    assert (rid, story.story_continuation) == ("1", " a fox.")


def test_line_numbers_count_blank_lines():
    path = _write(json.dumps(STORY) + "\n\n" + json.dumps({"id": 3}) + "\n")
    _refused(read_story_records, path, "line 3")


@pytest.mark.parametrize(
    "data, needle",
    [
        ({**CHECK, "criteria": {"readability": {"pairs": "many"}}}, "criteria.readability"),
        ({**CHECK, "verdict": "PASS"}, "verdict"),
        ([1, 2], "expected a JSON object, not a list"),
        ({"criteria": {}}, "missing"),
    ],
    ids=["criterion", "verdict", "list", "partial"],
)
def test_a_check_json_of_the_wrong_shape_is_refused(data, needle):
    _refused(read_check_result, _write(json.dumps(data), "check.json"), needle)


@pytest.mark.parametrize(
    "data, needle",
    [
        ({k: v for k, v in AGREEMENT.items() if k != "teacher_vs_mean"}, "teacher_vs_mean"),
        ({**AGREEMENT, "annotators": ["ada"]}, "annotators"),
        ({**AGREEMENT, "teacher_vs": {"ada": {**_PAIR, "total": 3}}}, "teacher_vs.ada.total"),
        ({"criteria": {}, "total": {}, "matched": 3}, "not an agreement with people"),
    ],
    ids=["partial", "annotators-list", "total-number", "two-raters"],
)
def test_an_agreement_file_of_the_wrong_shape_is_refused(data, needle):
    _refused(read_people_agreement, _write(json.dumps(data), "a.agreement.json"), needle)


def test_a_state_json_holding_a_list_is_refused():
    _refused(read_interact_state, _write("[1, 2]", "state.json"), "expected a JSON object, not a list")


def test_a_binary_template_is_one_sentence():
    _refused(read_text_file, _write(b"\xff\xfe\x00\x89PNG", "t.j2"), "UTF-8")


# --------------------------------------------------------------------------- fuzz: files
_SCALARS = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _paths(data, prefix=()):
    """Every key path in a nested JSON object."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


def _set(data, path, value):
    if not path:
        return value
    copy = dict(data)
    copy[path[0]] = _set(copy.get(path[0]) if isinstance(copy.get(path[0]), dict) else {}, path[1:], value) if len(path) > 1 else value
    return copy


@st.composite
def damaged(draw, valid: dict) -> str:
    """A valid record's JSON, then damaged: a field given a random value (or added, or taken
    away), the text cut short, or random text."""
    how = draw(st.sampled_from(["retype", "remove", "add", "truncate", "garbage"]))
    paths = list(_paths(valid))
    if how == "retype":
        data = _set(valid, draw(st.sampled_from(paths)), draw(JSON_VALUES))
    elif how == "remove":
        path = draw(st.sampled_from(paths))
        data = _set(valid, path[:-1], {k: v for k, v in _get(valid, path[:-1]).items() if k != path[-1]})
    elif how == "add":
        data = {**valid, draw(st.text(max_size=6)): draw(JSON_VALUES)}
    else:
        data = valid
    text = json.dumps(data)
    if how == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    if how == "garbage":
        text = draw(st.text(max_size=40))
    return text


def _get(data, path):
    for key in path:
        data = data[key]
    return data


@pytest.mark.parametrize("name", JSONL_READERS)
@FUZZ
@given(data=st.data())
def test_fuzz_jsonl_readers(name, data):
    read, valid = JSONL_READERS[name]
    lines = [json.dumps(valid), data.draw(damaged(valid)), json.dumps({**valid, "id": "s9"})]
    _one_sentence_or_success(read, _write("\n".join(lines) + data.draw(st.sampled_from(["\n", ""]))))


@pytest.mark.parametrize("name", JSON_READERS)
@FUZZ
@given(data=st.data())
def test_fuzz_json_readers(name, data):
    read, valid = JSON_READERS[name]
    _one_sentence_or_success(read, _write(data.draw(damaged(valid)), "f.json"))


@pytest.mark.parametrize("name", [*JSONL_READERS, *JSON_READERS])
@settings(max_examples=15, deadline=None)
@given(raw=st.binary(max_size=64))
def test_fuzz_readers_with_random_bytes(name, raw):
    read = {**JSONL_READERS, **JSON_READERS}[name][0]
    _one_sentence_or_success(read, _write(raw))


@pytest.mark.parametrize("text", ['["chck_1M"]', '{"name": "chck_1M", "stage": "pretrain"}', '{"name": "c", "stage": "x", "pretrain_words": 1}', "{"])
def test_a_damaged_checkpoint_metadata_is_one_sentence(text):
    """Read by evaluate, report and every resume: a list, a missing field, an unknown stage,
    a torn file (it was a TypeError or JSONDecodeError)."""
    from onceupon.lifecycle.checkpoints import read_meta

    directory = _write(text, "onceupon.json").parent
    with pytest.raises(UserError, match="onceupon.json"):
        read_meta(directory)
    assert read_meta(_write(json.dumps({**META, "later_field": 1}), "onceupon.json").parent).pretrain_words == 1_000_000


@pytest.mark.parametrize(
    "text, needle",
    [(b"step,loss\n\xff\xfe,1\n", "UTF-8"), (b"step,loss\n1.5,2\n", "line 2, field 'step'"), (b"step,loss\n-1,2\n", "field 'step'"),
     (b'step,loss\n1,"' + b"x" * 200_000 + b'"\n', "not a CSV")],
    ids=["binary", "fractional step", "negative step", "a cell beyond csv's field limit"],
)
def test_a_damaged_metrics_csv_is_one_sentence(text, needle):
    _refused(read_metrics, _write(text, "metrics.csv"), needle)


def test_metrics_keep_finite_numbers_and_drop_a_torn_row():
    rows = read_metrics(_write("step,loss,checkpoint\n1,2.5,chck_1M\n2,nan,\n3,inf\n4,1.0", "metrics.csv"))
    assert rows == [{"step": 1.0, "loss": 2.5}, {"step": 2.0}, {"step": 3.0}]


@FUZZ
@given(text=st.text(max_size=200))
def test_fuzz_metrics(text):
    _one_sentence_or_success(read_metrics, _write(text, "metrics.csv"))


def test_a_prompts_file_is_read_one_way_for_interaction_and_evaluation():
    """interact.prompts_file and evaluate.story_prompts_file: the same reader; a binary file was
    a UnicodeDecodeError in evaluation."""
    from onceupon.config import InteractConfig
    from onceupon.evaluate.stories import read_prompts
    from onceupon.interact.prompts import load_prompts

    good = _write(" Once there was a cat.\n\nA dog ran.\n", "p.txt")
    assert load_prompts(InteractConfig(prompts_file=str(good))) == read_prompts("x", str(good)) == ["Once there was a cat.", "A dog ran."]
    binary = _write(b"\x89PNG\r\n\x1a\n\xff", "p.txt")
    _refused(lambda p: read_prompts("x", str(p)), binary, "story prompts file", "UTF-8")
    _refused(lambda p: load_prompts(InteractConfig(prompts_file=str(p))), binary, "Prompts file", "UTF-8")


@pytest.mark.parametrize(
    "text, fits",
    [("step,loss\n1,2\n2,2\n3,2\n", True), ("step,loss\n1,2\n2,2\n3,2\n4,1", True), ("step,loss\n1,2\n3,2\n", False),
     ("loss\n2\n2\n2\n", False), (b"\xff\xfe", False)],
    ids=["every step", "a torn row after", "a step missing", "no step column", "binary"],
)
def test_a_resumed_interaction_checks_its_metrics_through_the_same_reader(text, fits):
    from onceupon.interact.record import check_metrics

    run = _write(text, "metrics.csv").parent
    if fits:
        check_metrics(run, run / "chck_1K", 3)
    else:
        with pytest.raises(UserError, match="no longer matches chck_1K"):
            check_metrics(run, run / "chck_1K", 3)
