"""A BabyLM 2025 submission from a run: checked first, then written in the official layout.

The tests build a strict-small run out of copies of the tiny checkpoint (chck_1M ...
chck_100M) and small files in the official layout for both suites. What is missing (a
checkpoint, a task's data, the GLUE predictions) is named in one sentence before any work.
The slow test writes the whole submission (GLUE fine-tuned by onceupon itself) and, where
the official pipeline's environment exists (made by benchmarks/bench_babylm_vs_official.py),
runs the official collation on it, with its size tables set from the test's data files, and
compares its collated file with onceupon's.
"""

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_sentence
from test_evaluate_comps import COMPS
from test_evaluate_reading import write_reading

from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.evaluate.leaderboard import FIGURES
from onceupon.evaluate.submission import SMALL_REVISIONS, write_submission

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / ".benchmarks" / "evaluation-pipeline-2025"
VENV_PYTHON = ROOT / ".benchmarks" / "babylm-official-venv" / "bin" / "python"


def jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_suites(root):
    """fast_eval and full_eval with every text task, a few items each (same count per group)."""
    data = root / "evaluation_data"
    for suite, blimp, supp, ewok, et in (("fast_eval", "blimp_fast", "supplement_fast", "ewok_fast", "entity_tracking_fast"),
                                         ("full_eval", "blimp_filtered", "supplement_filtered", "ewok_filtered", "entity_tracking")):
        s = data / suite
        for uid, (good, bad) in {"agreement": ("The fox has a box.", "The fox have a box."), "island": ("Who did the bear meet?", "Who did the bear meet the fox?")}.items():
            jsonl(s / blimp / f"{uid}.jsonl", [{"sentence_good": good, "sentence_bad": bad, "UID": uid, "field": "syntax", "linguistics_term": "x"}] * 2)
        for stem in ("hypernym", "turn_taking"):
            jsonl(s / supp / f"{stem}.jsonl", [{"sentence_good": "A fox is an animal.", "sentence_bad": "An animal is a fox."}] * 2)
        for domain in ("physical", "social"):
            jsonl(s / ewok / f"{domain}.jsonl", [{"Domain": domain, "Context1": "The ice is hot.", "Context2": "The ice is cold.", "Target1": "It melts.",
                                                  "Target2": "It stays.", "ContextType": "x", "ContextDiff": "x", "TargetDiff": "x"}] * 2)
        jsonl(s / et / "regular.jsonl", [{"input_prefix": "Box 1 contains the key. Box 1 contains ", "options": ["the key", "the hat", "nothing"], "numops": n} for n in (0, 0, 1, 1)])
        jsonl(s / "wug_adj_nominalization" / "wug_adj_nominalization.jsonl",
              [{"sentences": f"It is blicky. It has blick{a}.\tIt is blicky. It has blick{b}.", "ratio": r} for a, b, r in (("iness", "ity", 0.7), ("ness", "ity", 0.2), ("ity", "ness", 0.5))])
        jsonl(s / "wug_past_tense" / "wug_past_tense.jsonl",
              [{"sentences": f"He {a} yesterday.\tHe {b} yesterday.", "ratio": r} for a, b, r in (("blicked", "black", 0.8), ("sprinked", "sprank", 0.3), ("glorped", "glorp", 0.5))])
        write_reading(root, suite=suite)
    for stem, rows in COMPS.items():  # the last file named as calculate_results_from_pred.py opens it
        jsonl(data / "full_eval" / "comps" / f"{stem.replace('in_between', 'in-between')}.jsonl",
              [{"prefix_acceptable": a, "prefix_unacceptable": u, "property_phrase": p} for a, u, p in rows])
    glue = data / "full_eval" / "glue_filtered"
    glue.mkdir()
    fields = {"boolq": ("question", "passage"), "mnli": ("premise", "hypothesis"), "mrpc": ("sentence1", "sentence2"),
              "multirc": ("question", "answer", "paragraph"), "qqp": ("question1", "question2"), "rte": ("sentence1", "sentence2"),
              "wsc": ("span1_text", "span2_text", "text")}
    for task, keys in fields.items():
        for split, n in (("train", 32), ("valid", 6)):
            rows = [{**{k: f"the fox {k} {i % 3}" for k in keys}, "label": i % (3 if task == "mnli" else 2)} for i in range(n)]
            jsonl(glue / f"{task}.{split}.jsonl", rows)
    aoa = {"dog": [{"context": "I saw a"}, {"context": "the big "}], "ball": [{"context": "she threw the"}], "a": [{"context": "x"}]}
    (data / "full_eval" / "aoa").mkdir(parents=True)
    (data / "full_eval" / "aoa" / "cdi_childes.json").write_text(json.dumps(aoa), encoding="utf-8")
    months = ",".join(str(m) for m in range(16, 31))
    shares = {"dog": [0.05 * k for k in range(15)], "ball": [0.1 + 0.06 * k for k in range(15)], "milk": [0.3] * 15}
    (data / "full_eval" / "aoa" / "cdi_human.csv").write_text(
        f"word,{months}\n" + "".join(f"{w},{','.join(f'{v:.2f}' for v in vs)}\n" for w, vs in shares.items()), encoding="utf-8")
    return data


def write_finetune(root):
    """GLUE predictions in the official finetune output format (stand-ins for the official
    pipeline's output, which --finetune takes as it is)."""
    folder = root / "finetune"
    for i, task in enumerate(("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")):
        (folder / task).mkdir(parents=True)
        preds = {task: {"predictions": [{"id": f"{task}_{k}", "pred": k % 2} for k in range(3 + i)]}}
        (folder / task / "predictions.json").write_text(json.dumps(preds), encoding="utf-8")
    return folder


def make_run(root, checkpoint, names):
    run = root / "run"
    for name in names:
        target = run / "checkpoints" / name
        shutil.copytree(checkpoint, target)
        meta = json.loads((target / "onceupon.json").read_text())
        meta.update(name=name, pretrain_words=int(name[5:-1]) * 1_000_000)
        (target / "onceupon.json").write_text(json.dumps(meta))
    return run


def settings():
    cfg = ExperimentConfig()
    cfg.evaluate.batch_size = 8
    return cfg


def refused_before_any_work(tmp_path, checkpoint, data, finetune, match):
    """The submission of a strict-small run stops with one sentence matching ``match``, and
    neither the submission nor the run's evaluation folder is made."""
    run = make_run(tmp_path, checkpoint, SMALL_REVISIONS)
    out = tmp_path / "submission"
    with pytest.raises(UserError, match=match) as e:
        write_submission(settings(), run, data, out, "strict-small", finetune)
    one_sentence(e.value)
    assert not out.exists() and not (run / "evaluation").exists()


def one_sentence(error: UserError) -> str:
    text = str(error)
    assert "\n" not in text and text.endswith(".") and text.count(". ") == 0, text
    return text


def test_what_the_collation_needs_is_named_before_any_work(tiny_checkpoint, tmp_path, cli):
    data = write_suites(tmp_path)
    finetune = write_finetune(tmp_path)
    run = make_run(tmp_path, tiny_checkpoint, SMALL_REVISIONS[:5])
    out = tmp_path / "submission"
    result = cli("evaluate", str(run), "--data", str(data), "--babylm-submission", str(out), "--track", "strict-small", "--finetune", str(finetune))
    line = assert_one_sentence(result, "chck_6M", "chck_100M", "strict-small")
    assert "chck_5M," not in line
    assert not out.exists() and not (run / "evaluation").exists()

    run = make_run(tmp_path / "whole", tiny_checkpoint, SMALL_REVISIONS)
    shutil.rmtree(data / "full_eval" / "glue_filtered")  # neither GLUE data to fine-tune on nor --finetune
    with pytest.raises(UserError, match="GLUE") as e:
        write_submission(settings(), run, data, out, "strict-small", None)
    one_sentence(e.value)
    shutil.rmtree(finetune / "wsc")
    with pytest.raises(UserError, match="wsc"):
        write_submission(settings(), run, data, out, "strict-small", finetune)
    cdi = data / "full_eval" / "aoa" / "cdi_human.csv"
    good = cdi.read_text(encoding="utf-8")
    cdi.write_text(good.replace("0.10,", "0.10;", 1), encoding="utf-8")  # a cell that is no number
    with pytest.raises(UserError, match="cdi_human.csv, row 2") as e:
        write_submission(settings(), run, data, out, "strict-small", finetune)
    one_sentence(e.value)
    cdi.unlink()
    with pytest.raises(UserError, match="cdi_human.csv") as e:
        write_submission(settings(), run, data, out, "strict-small", finetune)
    one_sentence(e.value)
    cdi.write_text(good, encoding="utf-8")
    shutil.rmtree(data / "full_eval" / "comps")
    with pytest.raises(UserError, match="comps") as e:
        write_submission(settings(), run, data, out, "strict-small", finetune)
    one_sentence(e.value)
    with pytest.raises(UserError, match="strict, or interaction|choose from"):
        write_submission(settings(), run, data, out, "loose", finetune)
    assert not out.exists() and not (run / "evaluation").exists()



def test_a_torn_finetune_predictions_file_is_one_sentence_before_any_work(tiny_checkpoint, tmp_path):
    data = write_suites(tmp_path)
    finetune = write_finetune(tmp_path)
    (finetune / "rte" / "predictions.json").write_text('{"rte": {"predictions": [', encoding="utf-8")
    refused_before_any_work(tmp_path, tiny_checkpoint, data, finetune, "rte")


def test_a_finetune_predictions_file_of_another_shape_is_one_sentence_before_any_work(tiny_checkpoint, tmp_path):
    data = write_suites(tmp_path)
    finetune = write_finetune(tmp_path)
    (finetune / "rte" / "predictions.json").write_text('{"rte": {"preds": [1, 0]}}', encoding="utf-8")
    refused_before_any_work(tmp_path, tiny_checkpoint, data, finetune, "is not the official rte predictions file")


def test_a_cut_short_final_checkpoint_is_one_sentence_before_any_work(tiny_checkpoint, tmp_path):
    data = write_suites(tmp_path)
    run = make_run(tmp_path, tiny_checkpoint, SMALL_REVISIONS)
    with open(run / "checkpoints" / SMALL_REVISIONS[-1] / "model.safetensors", "r+b") as f:
        f.truncate(1000)  # the final model, evaluated last
    out = tmp_path / "submission"
    with pytest.raises(UserError, match=f"{SMALL_REVISIONS[-1]}/model.safetensors cannot be read") as e:
        write_submission(settings(), run, data, out, "strict-small", write_finetune(tmp_path))
    one_sentence(e.value)
    assert not out.exists() and not (run / "evaluation").exists()


def test_leaderboard_figures_follow_calculate_results_from_pred(tmp_path):
    """Entity tracking averaged over every (file, numops) group at once, WUG times 100, GLUE
    accuracy (MRPC too) against the validation labels in file order, mean over tasks."""
    from onceupon.evaluate.leaderboard import checkpoint_figures, glue_figures

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    groups = {"ambiref_0_ops": 100.0, "ambiref_1_ops": 0.0, "regular_0_ops": 100.0}  # per file first would give 75
    (tasks / "entity_tracking.json").write_text(json.dumps({"summary": {"accuracy": 75.0}, "breakdown": {
        "files": {}, "groups": {g: {"accuracy": a} for g, a in groups.items()}}}))
    (tasks / "wug_past_tense.json").write_text(json.dumps({"summary": {"spearman": 0.25}}))
    (tasks / "wug_adj_nominalization.json").write_text(json.dumps({"summary": {"spearman": None}}))
    (tasks / "reading.json").write_text(json.dumps({"summary": {"self_paced_reading": 1.5, "eye_tracking": 2.5}}))
    got = checkpoint_figures(tmp_path, {"entity_tracking": "entity_tracking", "wug_past_tense": "wug_past",
                                        "wug_adj_nominalization": "wug_adj", "reading": "reading"})
    assert got == {"entity_tracking": pytest.approx(200 / 3), "wug_past": 25.0, "wug_adj": None, "reading_spr": 1.5, "reading_et": 2.5}
    jsonl(tmp_path / "glue_filtered" / "mrpc.valid.jsonl", [{"label": y} for y in (1, 0, 1, 1)])
    jsonl(tmp_path / "glue_filtered" / "rte.valid.jsonl", [{"label": y} for y in (0, 1)])
    preds = {"mrpc": {"predictions": [{"pred": p} for p in (1, 0, 0, 1)]}, "rte": {"predictions": [{"pred": 0}, {"pred": 0}]}}
    assert glue_figures(tmp_path, preds) == (62.5, {"mrpc": 75.0, "rte": 50.0})
    assert glue_figures(tmp_path / "elsewhere", preds) == (None, {})


def test_a_glue_file_that_is_not_utf8_is_one_sentence_before_any_work(tiny_checkpoint, tmp_path):
    """Before, the plan's line count raised UnicodeDecodeError after the evaluation had begun."""
    data = write_suites(tmp_path)
    train = data / "full_eval" / "glue_filtered" / "mnli.train.jsonl"
    train.write_bytes(train.read_bytes() + b'{"premise": "caf\xe9", "hypothesis": "x", "label": 0}\n')
    refused_before_any_work(tmp_path, tiny_checkpoint, data, None, "mnli.train.jsonl is not valid UTF-8")


def test_a_submission_under_several_processes_points_to_the_data_parallel_fine_tuning(tiny_checkpoint, tmp_path, monkeypatch):
    data = write_suites(tmp_path)
    run = make_run(tmp_path, tiny_checkpoint, SMALL_REVISIONS)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as accelerate launch / torchrun set it
    with pytest.raises(UserError, match="onceupon.cli finetune") as e:
        write_submission(settings(), run, data, tmp_path / "submission", "strict-small", None)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "submission").exists() and not (run / "evaluation").exists()


OFFICIAL_COLLATE = r'''
import json, sys, pathlib, argparse
from collections import Counter
import evaluation_pipeline.collate_preds as cp

out, model, fast, full = map(pathlib.Path, sys.argv[1:5])
def lines(p):
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
def per_uid(folder, key):
    return dict(Counter(str(r.get(key) or p.stem) if key else p.stem for p in sorted(folder.glob("*.jsonl")) for r in lines(p)))
def rows_csv(p):
    return sum(1 for line in open(p) if line.strip()) - 1
def one(d):
    assert len(set(d.values())) == 1, d
    return next(iter(d.values()))
# The official tables hold the real data's sizes; these are set from the test's files instead.
cp.FAST_SIZES.update(blimp=one(per_uid(fast / "blimp_fast", "UID")), blimp_supplement=one(per_uid(fast / "supplement_fast", None)),
    ewok=one(per_uid(fast / "ewok_fast", "Domain")), reading=rows_csv(fast / "reading" / "reading_data.csv"),
    wug_adj=len(lines(fast / "wug_adj_nominalization" / "wug_adj_nominalization.jsonl")), wug_past=len(lines(fast / "wug_past_tense" / "wug_past_tense.jsonl")),
    entity_tracking=dict(Counter(f"regular_{r['numops']}_ops" for r in lines(fast / "entity_tracking_fast" / "regular.jsonl"))))
et = Counter(f"{p.stem}_{r['numops']}_ops" for p in sorted((full / "entity_tracking").glob("*.jsonl")) for r in lines(p))
subsets = {"comps_base": "base", "comps_wugs": "wugs", "comps_wugs_dist-before": "wugs_dist_before"}
comps = Counter(subsets.get(p.stem, "wugs_dist_in_between") for p in sorted((full / "comps").glob("*.jsonl")) for _ in lines(p))
cp.FULL_SIZES.update(blimp=per_uid(full / "blimp_filtered", "UID"), blimp_supplement=per_uid(full / "supplement_filtered", None),
    ewok=per_uid(full / "ewok_filtered", "Domain"), entity_tracking=dict(et), comps=dict(comps),
    reading=rows_csv(full / "reading" / "reading_data.csv"),
    wug_adj=len(lines(full / "wug_adj_nominalization" / "wug_adj_nominalization.jsonl")), wug_past=len(lines(full / "wug_past_tense" / "wug_past_tense.jsonl")),
    **{t: len(lines(full / "glue_filtered" / f"{t}.valid.jsonl")) for t in ("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")})
cp.AOA_SIZE = sum(len(v) for k, v in json.loads((full / "aoa" / "cdi_childes.json").read_text()).items() if len(k) > 1)
args = argparse.Namespace(model_path_or_name=model, backend="causal", results_dir=out, revision_name="main", fast=True,
                          fast_eval_dir=fast, track="strict-small", multimodal=False)
cp.collate_preds(args)
'''


FAST_PREDICTIONS = {"blimp": "blimp/blimp_fast", "blimp_supplement": "blimp/supplement_fast", "ewok": "ewok/ewok_fast",
                    "entity_tracking": "entity_tracking/entity_tracking_fast", "wug_adj": "wug_adj/wug_adj_nominalization",
                    "wug_past": "wug_past/wug_past_tense", "reading": "reading"}
OFFICIAL_RESULTS = r'''
import contextlib, io, json, runpy, sys
script, results_dir, data, model, *revisions = sys.argv[1:]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))  # its "from utils import AoAEvaluator"
printed = {}
for revision in ["main", *revisions]:
    sys.argv = [script, "--model_path_or_name", model, "--backend", "causal", "--results_dir", results_dir,
                "--evaluation_data_dir", data, "--revision_name", revision] + ([] if revision == "main" else ["--fast"])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        runpy.run_path(script, run_name="__main__")
    printed[revision] = out.getvalue()
print(json.dumps(printed))
'''


def close(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return a == b


@pytest.mark.slow
def test_submission_layout_is_what_the_official_collation_accepts(tiny_checkpoint, tmp_path):
    data = write_suites(tmp_path)
    run = make_run(tmp_path, tiny_checkpoint, SMALL_REVISIONS)
    out = tmp_path / "submission"
    collated_path = write_submission(settings(), run, data, out, "strict-small", None)  # onceupon fine-tunes GLUE itself
    ours = json.loads(collated_path.read_text())
    model = out / "run"
    for revision in SMALL_REVISIONS:
        for rel in FAST_PREDICTIONS.values():
            assert (model / revision / "zero_shot" / "causal" / rel / "predictions.json").is_file(), (revision, rel)
    assert len(ours["aoa"]["results"]) == 3 * len(SMALL_REVISIONS)  # 'a' (one letter) is left out, as officially
    figures = json.loads((model / "results.json").read_text())
    assert set(figures["aoa"]["words"]) == {"dog", "ball"} and figures["aoa"]["n_words"] <= 2
    assert figures["full"]["aoa"] == 0.0  # fewer than 3 words with both ages: 0.0, as officially
    assert figures["aoa"]["words"]["dog"]["child"] == pytest.approx(26.0, abs=0.2)  # a line reaching half at 26 months, fitted by a sigmoid
    assert set(figures["fast"]) == set(SMALL_REVISIONS) and set(figures["glue"]) == {"boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc"}
    assert set(ours["fast_eval_results"]) == {"blimp", "blimp_supplement", "ewok", "entity_tracking", "wug_adj", "wug_past", "reading"}
    assert all(len(v) == len(SMALL_REVISIONS) for v in ours["fast_eval_results"].values())
    assert set(ours["comps"]) == {"base", "wugs", "wugs_dist_before", "wugs_dist_in_between"}
    assert set(ours["glue"]) == {"boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc"}
    assert all(len(v["predictions"]) == 6 for v in ours["glue"].values())
    assert (run / "evaluation" / "babylm" / "finetune" / "chck_100M" / "wsc" / "results.json").is_file()
    preds = ours["blimp"]["agreement"]["predictions"]
    assert [p["id"] for p in preds] == ["agreement_0", "agreement_1"] and preds[0]["pred"] in ("The fox has a box.", "The fox have a box.")

    if not (VENV_PYTHON.exists() and (OFFICIAL / "evaluation_pipeline").is_dir()):
        pytest.skip("the official pipeline's environment is not there (python benchmarks/bench_babylm_vs_official.py makes it)")
    official_out = tmp_path / "official"
    shutil.copytree(out, official_out)
    collated_path.unlink()
    (official_out / "run" / collated_path.name).unlink()
    proc = subprocess.run([str(VENV_PYTHON), "-c", OFFICIAL_COLLATE, str(official_out), "run", str(data / "fast_eval"), str(data / "full_eval")],
                          cwd=OFFICIAL, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    theirs = json.loads((official_out / "run" / collated_path.name).read_text())
    assert close(ours, theirs)

    # The figures the leaderboard computes: the official calculate_results_from_pred.py run as it
    # is on the collated predictions (full: the final model; fast: each checkpoint), against
    # onceupon's results.json. It reads files nothing official writes: <revision>/all_fast_preds_causal.json
    # and main/all_full_preds_causal.json, the collated file's layout, made here from what onceupon wrote.
    full = {k: v for k, v in ours.items() if k != "fast_eval_results"}
    (official_out / "run" / "main" / "all_full_preds_causal.json").write_text(json.dumps(full))
    for revision in SMALL_REVISIONS:
        where = official_out / "run" / revision / "zero_shot" / "causal"
        fast = {key: json.loads((where / rel / "predictions.json").read_text()) for key, rel in FAST_PREDICTIONS.items()}
        (official_out / "run" / revision / "all_fast_preds_causal.json").write_text(json.dumps(fast))
    proc = subprocess.run([str(VENV_PYTHON), "-c", OFFICIAL_RESULTS, str(OFFICIAL / "evaluation_pipeline" / "calculate_results_from_pred.py"),
                           str(official_out), str(data), "run", *SMALL_REVISIONS], cwd=OFFICIAL, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    labels = {label: key for key, label in FIGURES}
    for revision, text in printed.items():
        mine = figures["full"] if revision == "main" else figures["fast"][revision]
        lines = [line.split("\t") for line in text.splitlines() if "\t" in line]
        official = {labels[parts[0]]: parts[-1] for parts in lines}
        assert len(official) == (11 if revision == "main" else 8), text
        assert {k: "nan" if mine[k] is None else f"{mine[k]:.2f}" for k in official} == official, revision
