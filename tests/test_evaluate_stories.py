"""Story quality: sampling, the teacher's ratings and the text statistics."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from onceupon.config import EvaluateConfig, TeacherConfig
from onceupon.evaluate.stories import distinct_n, evaluate_stories, repetition, sample_stories, summarize, Sample
from onceupon.teacher.base import Rating
from onceupon.teacher.factory import build_teacher


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_checkpoint):
    return AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval(), AutoTokenizer.from_pretrained(tiny_checkpoint)


def test_text_statistics():
    assert distinct_n(["the cat the dog", "a cat"], 1) == pytest.approx(4 / 6)  # the, cat, dog, a
    assert distinct_n(["the cat the cat"], 2) == pytest.approx(2 / 3)  # (the cat) twice, (cat the)
    assert distinct_n([""], 1) is None
    assert repetition("a b c a b c a b c") == pytest.approx(4 / 7)  # 7 trigrams, 3 distinct
    assert repetition("one two three four") == 0.0
    assert repetition("too short") is None


def test_summary_counts_invalid_ratings_apart():
    samples = [Sample("p", "the fox ran home", 5, 8.0), Sample("p", "the fox", 3, 4.0), Sample("p", "", 1, 2.0)]
    ratings = [
        Rating(True, "3 2 1", {"readability": 3, "coherence": 2, "creativity": 1}, 6 / 9),
        Rating(True, "1 1 1", {"readability": 1, "coherence": 1, "creativity": 1}, 3 / 9),
        Rating(False, "great story!", None, None, error="no numbers"),
    ]
    s = summarize(samples, ratings, ["readability", "coherence", "creativity"])
    assert s["n"] == 3
    assert s["invalid_rate"] == pytest.approx(1 / 3)
    assert s["mean_total"] == pytest.approx(4.5)  # invalid ones never become numbers
    assert s["mean_score"] == pytest.approx(0.5)
    assert s["criteria"] == {"readability": 2, "coherence": 1.5, "creativity": 1}
    assert s["distributions"]["readability"] == {"1": 1, "3": 1}
    assert s["words"] == pytest.approx(2.0)
    assert s["entropy_per_word"] == pytest.approx(14.0 / 6)


def test_sampling_is_seeded_and_bounded(model_and_tokenizer):
    model, tok = model_and_tokenizer
    a = sample_stories(model, tok, "Once upon a time,", 5, max_new_tokens=12, batch_size=2, seed=3)
    b = sample_stories(model, tok, "Once upon a time,", 5, max_new_tokens=12, batch_size=2, seed=3)
    c = sample_stories(model, tok, "Once upon a time,", 5, max_new_tokens=12, batch_size=2, seed=4)
    assert [s.continuation for s in a] == [s.continuation for s in b]
    assert [s.continuation for s in a] != [s.continuation for s in c]
    assert len(a) == 5 and all(1 <= s.n_tokens <= 12 for s in a)
    assert all(s.prompt == "Once upon a time," and "<s>" not in s.continuation for s in a)


def test_entropy_is_the_models_predictive_entropy(model_and_tokenizer):
    """With one new token, every story's entropy is H(next token | prompt), in bits."""
    model, tok = model_and_tokenizer
    ids = tok("Once upon a time,", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, -1], dim=-1)
    expected_bits = -(logp.exp() * logp).sum().item() / math.log(2)
    samples = sample_stories(model, tok, "Once upon a time,", 3, max_new_tokens=1)
    assert [s.entropy_bits for s in samples] == pytest.approx([expected_bits] * 3, rel=1e-5)


def test_stories_rated_by_teacher(model_and_tokenizer):
    model, tok = model_and_tokenizer
    cfg = EvaluateConfig(stories=6, story_max_new_tokens=16, story_batch_size=4)
    teacher = build_teacher(TeacherConfig())
    summary, records = evaluate_stories(model, tok, cfg, teacher)
    teacher.close()
    assert summary["n"] == 6 and len(records) == 6
    assert set(summary["criteria"]) == {"readability", "coherence", "creativity"}
    valid = [r for r in records if r["valid"]]
    assert len(valid) == 6  # the heuristic teacher always answers in the strict format
    assert summary["invalid_rate"] == pytest.approx(1 - len(valid) / 6)
    assert summary["mean_total"] == pytest.approx(sum(r["total"] for r in valid) / len(valid))
    assert 0 <= summary["mean_score"] <= 1
    assert all(r["prompt"] == cfg.story_prompt for r in records)


def test_a_second_judge_rates_the_same_stories_and_is_kept_beside_the_first(tmp_path):
    from fake_runs import make_interaction_run

    from onceupon.config import ExperimentConfig
    from onceupon.evaluate.stories import judge_run, judges_for

    run = make_interaction_run(tmp_path, tmp_path / "nowhere", 1_000, 1.0, 2.0, "rl", steps=2, n_stories=5)
    before = (run / "results.json").read_text()
    results = judge_run(ExperimentConfig(), run)
    for row in results["rows"]:
        (judge,) = row["judges"].values()
        assert judge["teacher"] == "heuristic:v3" and judge["n"] == 5
        assert row["stories"] == next(r for r in json.loads(before)["rows"] if r["checkpoint"] == row["checkpoint"])["stories"]
    assert json.loads((run / "results.json").read_text()) == results
    assert "judge: 10/10 stories (100%)" in (run / "log.txt").read_text()  # the run log shows the judge's work

    # Judging again with the same judge asks it nothing: its summary stays as written.
    (summary,) = (run / "evaluation" / "start" / "judges").glob("*/summary.json")
    stamp = summary.stat().st_mtime_ns
    judge_run(ExperimentConfig(), run)
    assert summary.stat().st_mtime_ns == stamp
    # ... nor when an earlier version wrote the summary (a key, no fingerprint): the judge its
    # summary names (teacher, rubric, teacher config) is recognised as this one
    saved = json.loads(summary.read_text())
    assert saved.pop("fingerprint") == {"teacher": saved["summary"]["teacher"], "rubric": saved["summary"]["rubric"],
                                        "settings": {"invalid_policy": "exclude", "invalid_retries": 2, "min_words": 3}}
    summary.write_text(json.dumps({"key": "0" * 20, **saved}))
    stamp = summary.stat().st_mtime_ns
    judge_run(ExperimentConfig(), run)
    assert summary.stat().st_mtime_ns == stamp
    # A setting that changes ratings (min_words) is another judge: asked again.
    judge_run(ExperimentConfig.model_validate({"teacher": {"min_words": 200}}), run)
    assert json.loads(summary.read_text())["fingerprint"]["settings"]["min_words"] == 200
    # A torn summary (a disk that filled up, an editor) is rated again, not a traceback.
    for torn in ('{"stories_digest": ', "[1, 2]"):
        summary.write_text(torn)
        judge_run(ExperimentConfig.model_validate({"teacher": {"min_words": 200}}), run)
        assert json.loads(summary.read_text())["fingerprint"]["settings"]["min_words"] == 200

    # Stories sampled anew (another evaluation) leave the old judge out: it rated other stories.
    stories = run / "evaluation" / "start" / "stories.jsonl"
    stories.write_text(stories.read_text().replace("fox", "cat"))
    assert judges_for(run / "evaluation" / "start") == {}


def test_judges_of_one_model_get_headers_that_tell_them_apart(tmp_path):
    """The heuristic judging twice, with two prompts, beside the run's own teacher: three
    columns, three headers, in `evaluate --judge`'s table and in the report's gain by judge."""
    from fake_runs import make_interaction_run

    from onceupon.analysis.runs import load_run
    from onceupon.analysis.summary import judge_gains
    from onceupon.config import ExperimentConfig
    from onceupon.evaluate.stories import judge_run, judges_table

    run = make_interaction_run(tmp_path, tmp_path / "nowhere", 1_000, 1.0, 2.0, "rl", steps=2, n_stories=5)
    judge_run(ExperimentConfig(), run)
    results = judge_run(ExperimentConfig.model_validate({"teacher": {"prompt": "example"}}), run)
    headers = [column.header for column in judges_table(results).columns]
    assert headers[:2] == ["checkpoint", "openai:fake-judge|t=0.2"]  # the run's own teacher first
    assert sorted(headers[2:]) == ["heuristic:v3 (prompt=example)", "heuristic:v3 (prompt=placeholders)"]
    judges = {j["judge"]: j for j in judge_gains(load_run(run))["judges"]}
    assert set(judges) == set(headers[1:])
    assert judges["heuristic:v3 (prompt=example)"]["identity"] == "heuristic:v3"


def test_judge_labels_fall_back_to_the_rubric_then_a_number():
    from onceupon.teacher.judges import labels

    a = {"teacher": "openai:m|t=0", "rubric": "aaaaaaaa11", "teacher_config": {"prompt": "placeholders", "min_words": 3}}
    b = a | {"rubric": "bbbbbbbb22"}  # same prompt name, another rubric (other criteria)
    c = a | {"teacher_config": {"prompt": "placeholders", "min_words": 9}}  # only a pipeline setting differs
    assert labels([a, b, {"teacher": "heuristic:v2"}]) == ["openai:m|t=0 (rubric aaaaaaaa)", "openai:m|t=0 (rubric bbbbbbbb)", "heuristic:v2"]
    assert labels([a, c]) == ["openai:m|t=0 (min_words=3)", "openai:m|t=0 (min_words=9)"]
    assert labels([a, dict(a)]) == ["openai:m|t=0 #1", "openai:m|t=0 #2"]
    assert labels([a]) == ["openai:m|t=0"]  # a judge alone keeps its identity


@pytest.mark.parametrize("content", ['{"rows": 3}', '{"rows": [1, 2]}', "[]", "{", '{"other": []}'])
def test_judge_refuses_a_results_file_that_is_not_an_evaluations_in_one_sentence(tmp_path, content):
    from onceupon.config import ExperimentConfig
    from onceupon.errors import UserError
    from onceupon.evaluate.stories import judge_run

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "results.json").write_text(content)
    with pytest.raises(UserError, match="is not an evaluation's results"):
        judge_run(ExperimentConfig(), tmp_path)
