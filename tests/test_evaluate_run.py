"""`onceupon evaluate` on whole runs and single checkpoints: results.json, caching, errors."""

import json
import shutil

import pytest

from transformers import AutoConfig, AutoTokenizer

from conftest import assert_one_sentence, make_tiny_checkpoint
from onceupon.config import ExperimentConfig
from onceupon.evaluate import zero_shot
from onceupon.errors import UserError
from onceupon.evaluate.evaluate import evaluate_checkpoint_dir, evaluate_run, run
from onceupon.files import atomic_write_json

FAST = ["--set", "evaluate.stories=3", "--set", "evaluate.story_max_new_tokens=8", "--set", "evaluate.probe_items=6"]


def small_cfg(**evaluate) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.evaluate.stories = 3
    cfg.evaluate.story_max_new_tokens = 8
    cfg.evaluate.probe_items = 6
    for k, v in evaluate.items():
        setattr(cfg.evaluate, k, v)
    return cfg


def set_meta(checkpoint, **fields):
    meta = json.loads((checkpoint / "onceupon.json").read_text())
    meta.update(fields)
    atomic_write_json(checkpoint / "onceupon.json", meta)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "evaluation_data" / "full_eval" / "blimp_filtered"
    root.mkdir(parents=True)
    rows = [
        {"sentence_good": "The fox has a box.", "sentence_bad": "The fox have a box.", "UID": "agr"},
        {"sentence_good": "Who did Mia meet?", "sentence_bad": "Who did Mia meet Tom?", "UID": "island"},
    ]
    (root / "agr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root.parent.parent


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory, tiny_checkpoint):
    run = tmp_path_factory.mktemp("pretrain_run")
    for name, words in (("chck_1K", 1000), ("chck_2K", 2000)):
        shutil.copytree(tiny_checkpoint, run / "checkpoints" / name)
        set_meta(run / "checkpoints" / name, name=name, pretrain_words=words)
    return run


def test_cli_evaluates_every_checkpoint(pretrain_run, data_dir, cli):
    proc = cli("evaluate", str(pretrain_run), "--data", str(data_dir), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert "BLiMP" in proc.stdout and "chck_2K" in proc.stdout
    results = json.loads((pretrain_run / "results.json").read_text())
    assert [r["checkpoint"] for r in results["rows"]] == ["chck_1K", "chck_2K"]
    row = results["rows"][1]
    assert row["stage"] == "pretrain" and row["pretrain_words"] == 2000 and row["interact_words"] == 0
    assert set(row["tasks"]) == {
        "blimp", "blimp_supplement", "ewok", "entity_tracking",
        "wug_adj_nominalization", "wug_past_tense", "comps", "reading", "aoa", "storyworld_entity_tracking",
    }
    assert all(row["tasks"][t]["absent"] for t in ("comps", "reading", "aoa"))  # no data for them: absent, not zero
    assert set(row["tasks"]["blimp"]) >= {"accuracy", "accuracy_ties_wrong", "tie_rate", "n"}
    assert row["tasks"]["ewok"]["absent"] is True
    assert row["tasks"]["storyworld_entity_tracking"]["n"] == 6
    stories = row["stories"]
    assert stories["n"] == 3 and {"mean_total", "mean_score", "criteria", "distinct_1", "entropy_per_word"} <= set(stories)
    assert len((pretrain_run / "evaluation" / "chck_2K" / "stories.jsonl").read_text().splitlines()) == 3
    # Progress of every task and checkpoint went to the run's log (and, every
    # ONCEUPON_PROGRESS_INTERVAL seconds while a task runs, to stderr).
    logged = (pretrain_run / "log.txt").read_text()
    assert "evaluate chck_2K" in logged and "chck_2K blimp: 2/2 pairs (100%)" in logged
    assert "chck_2K storyworld_entity_tracking: 6/6 items (100%)" in logged
    assert "chck_2K stories sampled: 3/3 stories (100%)" in logged
    assert "chck_2K stories rated: 3/3 stories (100%)" in logged
    # Truncation happens only beyond context + 1 tokens, is counted in items and flagged.
    checkpoint = pretrain_run / "checkpoints" / "chck_2K"
    tok = AutoTokenizer.from_pretrained(checkpoint)
    context = AutoConfig.from_pretrained(checkpoint).n_positions
    probe = zero_shot.probe_items(6, ExperimentConfig().evaluate.probe_seed)
    too_long = sum(any(len(tok(c + x)["input_ids"]) > context + 1 for c, x in item.requests) for item in probe)
    assert 0 < too_long and row["tasks"]["storyworld_entity_tracking"]["truncated_items"] == too_long
    assert "truncated_items" not in row["tasks"]["blimp"]
    # Piped, not a terminal: the table is printed whole, never cut to 80 columns.
    assert "…" not in proc.stdout and f"cut {100 * too_long / 6:.0f}%" in proc.stdout
    assert "scored on their last tokens" in proc.stdout and str(pretrain_run / "results.json") in proc.stdout


def test_evaluated_parts_are_cached_until_config_changes(pretrain_run, data_dir):
    cfg = small_cfg(data_dir=str(data_dir))
    first = evaluate_run(cfg, pretrain_run)
    details = pretrain_run / "evaluation" / "chck_1K"
    stamps = {p.name: p.stat().st_mtime_ns for p in [details / "tasks" / "blimp.json", details / "stories.json"]}
    again = evaluate_run(cfg, pretrain_run)
    assert again == first
    assert {p: (details / ("tasks" if p != "stories.json" else "") / p).stat().st_mtime_ns for p in stamps} == stamps
    # A different story setting (the sampling seed) redoes the stories, keeps the zero-shot results.
    changed = small_cfg(data_dir=str(data_dir), seed=7)
    evaluate_run(changed, pretrain_run)
    assert (details / "tasks" / "blimp.json").stat().st_mtime_ns == stamps["blimp.json"]
    assert (details / "stories.json").stat().st_mtime_ns != stamps["stories.json"]


def test_interaction_run_gets_a_start_row(tmp_path, pretrain_run):
    run = tmp_path / "interact_run"
    start = pretrain_run / "checkpoints" / "chck_2K"
    checkpoint = make_tiny_checkpoint(run / "checkpoints" / "chck_100K")
    set_meta(checkpoint, stage="interact", pretrain_words=2000, interact_words=100_000, start_checkpoint=str(start))
    results = evaluate_run(small_cfg(stories=0), run)
    rows = results["rows"]
    assert [r["checkpoint"] for r in rows] == ["start", "chck_100K"]
    assert rows[0]["interact_words"] == 0 and rows[0]["pretrain_words"] == 2000 and rows[0]["path"] == str(start)
    assert rows[1]["stage"] == "interact" and rows[1]["interact_words"] == 100_000
    assert json.loads((run / "results.json").read_text()) == results
    assert (run / "evaluation" / "start" / "tasks" / "storyworld_entity_tracking.json").is_file()


def test_single_checkpoint_in_a_run_updates_its_row(tmp_path, tiny_checkpoint):
    run = tmp_path / "run"
    for name, words in (("chck_1K", 1000), ("chck_2K", 2000)):
        shutil.copytree(tiny_checkpoint, run / "checkpoints" / name)
        set_meta(run / "checkpoints" / name, name=name, pretrain_words=words)
    cfg = small_cfg(stories=0)
    _, path = evaluate_checkpoint_dir(cfg, run / "checkpoints" / "chck_2K")
    assert path == run / "results.json"
    evaluate_checkpoint_dir(cfg, run / "checkpoints" / "chck_1K")
    rows = json.loads(path.read_text())["rows"]
    assert [r["checkpoint"] for r in rows] == ["chck_1K", "chck_2K"]  # run order, one row each


def test_standalone_checkpoint_results_beside_it(tmp_path, tiny_checkpoint):
    model = tmp_path / "some_model"
    shutil.copytree(tiny_checkpoint, model)
    (model / "onceupon.json").unlink()  # a plain save_pretrained directory
    run(small_cfg(stories=0), model)
    rows = json.loads((model / "evaluation" / "results.json").read_text())["rows"]
    assert rows[0]["checkpoint"] == "some_model" and rows[0]["tasks"]["storyworld_entity_tracking"]["n"] == 6


def test_user_errors_are_one_sentence(tmp_path, pretrain_run, cli):
    before = (pretrain_run / "results.json").read_text() if (pretrain_run / "results.json").exists() else None
    (tmp_path / "empty").mkdir()
    assert_one_sentence(cli("evaluate", str(pretrain_run), "--data", str(tmp_path / "empty")), "none of the BabyLM task folders")
    assert_one_sentence(cli("evaluate", str(tmp_path / "empty")), "neither a run directory")
    after = (pretrain_run / "results.json").read_text() if (pretrain_run / "results.json").exists() else None
    assert after == before  # nothing saved is lost or half-written
    with pytest.raises(UserError, match="does not exist"):
        evaluate_run(small_cfg(data_dir=str(tmp_path / "missing")), pretrain_run)
    with pytest.raises(UserError, match="Unknown evaluation task 'blimpp'"):
        evaluate_run(small_cfg(tasks=["blimpp"]), pretrain_run)


def test_plan_before_work_and_some_checkpoints_only(pretrain_run, data_dir, tmp_path, capsys):
    """A CPU user sees what each task costs before any model is loaded, and can evaluate some
    tasks of some checkpoints only; the other rows of results.json stay as they were."""
    run = tmp_path / "run"
    shutil.copytree(pretrain_run, run)
    evaluate_run(small_cfg(stories=0, probe_items=0, tasks=["blimp"]), run, data_dir)  # both rows first
    results = json.loads((run / "results.json").read_text())
    results["rows"][0]["marker"] = "kept"
    (run / "results.json").write_text(json.dumps(results))
    shutil.rmtree(run / "evaluation")
    capsys.readouterr()
    evaluate_run(small_cfg(stories=0, probe_items=6, tasks=["blimp"], checkpoints=["chck_2K"], batch_size=3), run, data_dir)
    err = capsys.readouterr().err
    plan = [line for line in err.splitlines() if "plan:" in line or line.strip().startswith("blimp:")]
    assert plan[0].startswith("plan: 1 checkpoint,") and "up to 3 sequences" in plan[0]
    assert "blimp: 2 pairs, 4 sequences, about 2 forward passes per checkpoint" in plan[1]
    assert err.index("plan:") < err.index("evaluate chck_2K")
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert [r["checkpoint"] for r in rows] == ["chck_1K", "chck_2K"]
    assert rows[0]["marker"] == "kept" and "marker" not in rows[1] and set(rows[1]["tasks"]) == {"blimp"}
    assert not (run / "evaluation" / "chck_1K").exists()

    with pytest.raises(UserError, match="no checkpoint 'chck_9M'.*chck_1K, chck_2K"):
        evaluate_run(small_cfg(checkpoints=["chck_9M"]), run, data_dir)


def test_task_data_is_read_once_for_all_checkpoints(pretrain_run, data_dir, tmp_path, monkeypatch):
    """One `onceupon evaluate` of a run reads (and hashes) each task's files once, for the plan
    and every checkpoint, not once per checkpoint: the items do not depend on the model."""
    run = tmp_path / "run"
    shutil.copytree(pretrain_run / "checkpoints", run / "checkpoints")
    real = zero_shot.read_items
    reads = []

    def counted(task, files):  # the real reader, counted
        reads.append(task)
        return real(task, files)

    monkeypatch.setattr(zero_shot, "read_items", counted)
    results = evaluate_run(small_cfg(stories=0, probe_items=0, tasks=["blimp"]), run, data_dir)
    assert [r["tasks"]["blimp"]["n"] for r in results["rows"]] == [2, 2]
    assert reads == ["blimp"]  # was 3: the plan, then each of the two checkpoints
