"""A BabyLM 2025 submission from a run: the official results layout and the collated file.

The official rule: the *fast* suite (``fast_eval``) on every intermediate checkpoint the track
names (``chck_1M`` ... ``chck_9M``, ``chck_10M`` ... ``chck_100M``, and up to ``chck_1000M``
for the strict and interaction tracks), the *full* suite (``full_eval``) and the GLUE
fine-tuning tasks on the final model, AoA over the intermediate checkpoints. This module
evaluates what is missing (through ``evaluate_checkpoint``, cached under
``RUN/evaluation/babylm/``), then writes, under ``OUT/<model>/``, what the official scripts
write and ``collate_preds`` reads:

    <revision>/zero_shot/causal/<task>/<data folder>/predictions.json   fast suite, each revision
    <revision>/zero_shot/causal/reading/predictions.json
    main/zero_shot/causal/<task>/<data folder>/predictions.json         full suite, final model
    main/zero_shot/causal/reading/predictions.json
    main/zero_shot/causal/AoA_word/surprisal.json                      every revision's surprisals
    main/finetune/<glue task>/predictions.json                         copied from --finetune
    all_full_preds_and_fast_scores_causal.json                         the collated file
    results.json          the figures the leaderboard computes from it (leaderboard.py), also printed

A prediction is what the official code saves: the chosen candidate's text (the whole sentence
for BLiMP and COMPS, the completion otherwise), with WUG's probability of the first candidate;
reading's per-word surprisal and previous word's surprisal. The collated file holds the full
suite's predictions, the AoA surprisals, the GLUE predictions and, per fast task, one figure
dict per revision computed as ``collate_preds`` does (share correct per group, Spearman for
WUG, the R^2 gains as fractions for reading).

Before any work, everything the official collation requires is checked: each checkpoint of
the track, each task's data in both suites, the GLUE predictions; what is missing is named in
one sentence. The GLUE predictions come from the official
pipeline's ``finetune`` output when given with ``--finetune``; otherwise onceupon fine-tunes
the final checkpoint itself (finetune.py, the official hyperparameters), each task kept under
``RUN/evaluation/babylm/finetune/`` once done.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from onceupon import preflight
from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.files import atomic_write_text, json_object, read_jsonl, read_text_file
from onceupon.tracking import log, print_table

from . import aoa, leaderboard, reading, zero_shot
from .finetune import TaskPlan, plan_task
from .finetune import task_files as glue_files

BACKEND = "causal"
#: Where a run keeps its submission's evaluations, inside the run directory, and, under it,
#: each final checkpoint's GLUE fine-tuning (``<ckpt>/<task>/results.json``; the report reads it).
BABYLM_DIR = Path("evaluation", "babylm")
FINETUNE_DIR = BABYLM_DIR / "finetune"
M = 1_000_000
SMALL_REVISIONS = [f"chck_{i}M" for i in range(1, 10)] + [f"chck_{10 * i}M" for i in range(1, 11)]
LARGE_REVISIONS = SMALL_REVISIONS[:-1] + [f"chck_{100 * i}M" for i in range(1, 11)]
TRACKS = {"strict-small": SMALL_REVISIONS, "strict": LARGE_REVISIONS, "interaction": LARGE_REVISIONS}

#: (onceupon task, official task folder, official data folder; None: the task folder only)
FAST = [
    ("blimp", "blimp", "blimp_fast"),
    ("blimp_supplement", "blimp", "supplement_fast"),
    ("ewok", "ewok", "ewok_fast"),
    ("entity_tracking", "entity_tracking", "entity_tracking_fast"),
    ("wug_adj_nominalization", "wug_adj", "wug_adj_nominalization"),
    ("wug_past_tense", "wug_past", "wug_past_tense"),
    ("reading", "reading", None),
]
FULL = [
    ("blimp", "blimp", "blimp_filtered"),
    ("blimp_supplement", "blimp", "supplement_filtered"),
    ("ewok", "ewok", "ewok_filtered"),
    ("entity_tracking", "entity_tracking", "entity_tracking"),
    ("wug_adj_nominalization", "wug_adj", "wug_adj_nominalization"),
    ("wug_past_tense", "wug_past", "wug_past_tense"),
    ("comps", "comps", "comps"),
    ("reading", "reading", None),
]
#: The collated file's key for each onceupon task.
COLLATED = {"blimp": "blimp", "blimp_supplement": "blimp_supplement", "ewok": "ewok", "entity_tracking": "entity_tracking",
            "wug_adj_nominalization": "wug_adj", "wug_past_tense": "wug_past", "comps": "comps", "reading": "reading"}
GLUE = ("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")


def _words(revision: str) -> int:
    return int(revision.removeprefix("chck_").removesuffix("M")) * M


# --------------------------------------------------------------------------- checks
def suite_roots(data_dir: str | Path | None) -> tuple[Path, Path]:
    """(fast_eval, full_eval) of an evaluation_data directory (or the folder holding it)."""
    if data_dir is None:
        raise UserError("A submission needs the BabyLM evaluation data: give --data with the evaluation_data directory.")
    root = Path(data_dir).expanduser()
    if (root / "evaluation_data").is_dir():
        root = root / "evaluation_data"
    fast, full = root / "fast_eval", root / "full_eval"
    if not (fast.is_dir() and full.is_dir()):
        raise UserError(f"{data_dir} must hold both fast_eval and full_eval (the evaluation_data directory) for a submission.")
    return fast, full


def _data_missing(root: Path, tasks: list[tuple[str, str, str | None]]) -> list[str]:
    missing = []
    for task, _, folder in tasks:
        if task == "reading":
            ok = reading.reading_file(root) is not None
            where = str(reading.READING_FILE)
        else:
            ok = (root / folder).is_dir() and any((root / folder).glob("*.jsonl"))
            where = f"{folder}/"
        if not ok:
            missing.append(f"{root.name}/{where}")
    return missing


def plan(
    run_dir: Path, data_dir, track: str, finetune: str | Path | None, checkpoints: dict[str, Path]
) -> tuple[Path, Path, list[str], str, dict[str, TaskPlan]]:
    """Checks everything the official collation needs; (fast root, full root, revisions, final,
    each GLUE task's fine-tuning plan: none with ``finetune``)."""
    if track not in TRACKS:
        raise UserError(f"Unknown BabyLM track '{track}'; choose from {', '.join(TRACKS)}.")
    fast, full = suite_roots(data_dir)
    missing = _data_missing(fast, FAST) + _data_missing(full, FULL)
    if aoa.aoa_file(full) is None:
        missing.append(f"full_eval/{aoa.AOA_FILE}")
    if aoa.cdi_file(full) is None:
        missing.append(f"full_eval/{aoa.CDI_FILE}")
    if missing:
        raise UserError(f"The evaluation data lacks {', '.join(missing)}, which the official collation and scoring require.")
    aoa.read_cdi(aoa.cdi_file(full))  # a malformed file is one sentence now, not after hours of evaluation
    revisions = TRACKS[track]
    absent = [r for r in revisions if r not in checkpoints]
    if absent:
        raise UserError(
            f"{run_dir} lacks the checkpoint{'s' if len(absent) > 1 else ''} {', '.join(absent)} that the {track} track's "
            f"fast evaluation requires ({revisions[0]} ... {revisions[-1]})."
        )
    if finetune is None:
        lacking = [t for t in GLUE if glue_files(full, t) is None]
        if lacking:
            raise UserError(
                f"The evaluation data lacks full_eval/glue_filtered/ files ({', '.join(f'{t}.train/valid.jsonl' for t in lacking)}) "
                "for onceupon's GLUE fine-tuning; add them or give the official pipeline's finetune folder with --finetune."
            )
        # every line read now: a file that is not UTF-8 or a torn line is one sentence before any work
        glue_plans = {t: plan_task(full, t) for t in GLUE}
    else:
        lacking = [t for t in GLUE if not (Path(finetune) / t / "predictions.json").is_file()]
        if lacking:
            raise UserError(f"{finetune} lacks the GLUE predictions of {', '.join(lacking)} ({finetune}/TASK/predictions.json).")
        for t in GLUE:  # read now, not after hours of evaluation: a bad file is one sentence before any work
            source = Path(finetune) / t / "predictions.json"
            preds = json_object(read_text_file(source), str(source), "; give the official pipeline's finetune folder")
            # the collation counts these against the validation labels at the very end
            entry = preds.get(t)
            rows = entry.get("predictions") if isinstance(entry, dict) else None
            if not isinstance(rows, list) or not all(isinstance(r, dict) and "pred" in r for r in rows):
                raise UserError(f"{source} is not the official {t} predictions file ({{\"{t}\": {{\"predictions\": "
                                "[{\"id\": ..., \"pred\": ...}, ...]}}); give the official pipeline's finetune folder.")
        glue_plans = {}
    final = list(checkpoints)[-1]
    return fast, full, revisions, final, glue_plans


# --------------------------------------------------------------------------- predictions
def _scores(out_dir: Path, task: str) -> list[dict]:
    return list(read_jsonl(out_dir / "tasks" / f"{task}.scores.jsonl"))


def choice_predictions(task: str, root: Path, out_dir: Path) -> dict:
    """The official predictions.json of a zero-shot task from the scores onceupon saved."""
    items = zero_shot.read_items(task, zero_shot.task_files(root, task))
    details = _scores(out_dir, task)
    if [(d["file"], d["line"]) for d in details] != [(i.source, i.line) for i in items]:
        raise UserError(f"The saved {task} scores under {out_dir} do not match the data in {root}; evaluate again.")
    wug = task in zero_shot.WUG_TASKS
    preds: dict[str, dict[str, list]] = {}
    for item, d in zip(items, details):
        scores = d["scores"]
        chosen = scores.index(max(scores))  # the first of equal maxima, as argmax
        text = item.contexts[chosen] + item.completions[chosen] if task == "comps" else item.completions[chosen]
        uid = COLLATED[task] if wug else item.uid  # the official WUG reader names the group after the task
        group = preds.setdefault(uid, {"predictions": []})["predictions"]
        entry = {"id": f"{uid}_{len(group)}", "pred": text}
        if wug:
            entry["prob"] = d["p_first"]
        group.append(entry)
    return preds


def reading_predictions(out_dir: Path) -> dict:
    rows = _scores(out_dir, "reading")
    nan = float("nan")  # the official file writes NaN where a word has no previous word
    return {"reading": {"predictions": [
        {"id": d["line"], "pred": d["pred"], "prev_pred": nan if d["prev_pred"] is None else d["prev_pred"]} for d in rows
    ]}}


def aoa_results(full: Path, revisions: list[str], out_dirs: dict[str, Path], model_name: str) -> dict:
    words = aoa.read_words(aoa.aoa_file(full))
    results = []
    for revision in revisions:
        values = _scores(out_dirs[revision], "aoa")
        k = 0
        for word, contexts in words:
            for c, context in enumerate(contexts):
                s = values[k]["surprisal"]
                results.append({"step": revision, "word_count": _words(revision), "target_word": word, "context_id": c,
                                "context": context, "surprisal": float("nan") if s is None else s})
                k += 1
    meta = {"model_name": model_name, "use_bos_only": False, "total_steps": len(revisions), "completed_steps": len(revisions)}
    return {"metadata": meta, "results": results}


# --------------------------------------------------------------------------- fast figures
def fast_figures(task: str, preds: dict, root: Path, folder: str | None) -> dict:
    """One revision's figures for a fast task, as collate_preds computes them."""
    from scipy.stats import spearmanr

    if task == "reading":
        raise ValueError("reading figures come from reading_scores")
    out = {}
    if task == "entity_tracking":
        by_group: dict[str, list[dict]] = {}
        for row in read_jsonl(root / folder / "regular.jsonl"):
            by_group.setdefault(f"regular_{row['numops']}_ops", []).append(row)
        for uid, res in preds.items():
            rows = by_group.get(uid, [])
            pairs = list(zip(res["predictions"], rows))
            out[uid] = sum(str(p["pred"]).strip() == str(r["options"][0]).strip() for p, r in pairs) / len(pairs)
        return out
    if task in zero_shot.WUG_TASKS:
        rows = list(read_jsonl(root / folder / f"{folder}.jsonl"))
        for uid, res in preds.items():
            out[uid] = float(spearmanr([p["prob"] for p in res["predictions"]], [r["ratio"] for r in rows])[0])
        return out
    key = "Target1" if task == "ewok" else "sentence_good"
    for uid, res in preds.items():
        pairs = list(zip(res["predictions"], read_jsonl(root / folder / f"{uid}.jsonl")))
        out[uid] = sum(str(p["pred"]).strip() == str(r[key]).strip() for p, r in pairs) / len(pairs)
    return out


# --------------------------------------------------------------------------- GLUE
def fine_tune_all(main, full: Path, folder: Path, device: str) -> Path:
    """onceupon's fine-tuning of the final checkpoint on every GLUE task, each kept once done
    (a rerun with the same checkpoint and data skips it, and resumes an unfinished one)."""
    from .finetune import finetune_tasks

    return finetune_tasks(main.path, main.name, full, folder, list(GLUE), device)


# --------------------------------------------------------------------------- writing
def _write_json(path: Path, data) -> None:
    # Plain json.dumps: NaN stays NaN, as the official files write it and read it back.
    atomic_write_text(path, json.dumps(data))


def write_submission(
    cfg: ExperimentConfig, run_dir: str | Path, data_dir, out: str | Path, track: str, finetune: str | Path | None
) -> Path:
    """Evaluate what a submission needs and write it; returns the collated file's path."""
    from onceupon.lifecycle.lock import run_lock
    from onceupon.student.checkpoints import check_weights
    from onceupon.tracking import RUN_LOG, run_log

    from .evaluate import AOA, TaskData, Target, announce_plan, evaluate_checkpoint, run_targets

    run_dir = Path(run_dir)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every process would evaluate and write everything
        raise UserError(
            "A submission is written by one process; run the data-parallel GLUE fine-tuning with `accelerate launch -m "
            "onceupon.cli finetune CHECKPOINT --data DIR --out DIR`, then the submission in one process with --finetune DIR."
        )
    if not (run_dir / "checkpoints").is_dir():
        raise UserError(f"{run_dir} is not a run directory (no checkpoints/); a submission is made from a run.")
    targets = {t.name: t for t in run_targets(run_dir)}
    fast, full, revisions, final, glue_plans = plan(run_dir, data_dir, track, finetune, {k: v.path for k, v in targets.items()})
    model_name = run_dir.resolve().name
    out = Path(out)
    preflight.output_dir(out, "the submission directory")
    preflight.device(cfg.evaluate.device, "evaluate.device")
    for name in dict.fromkeys([*revisions, final]):  # as evaluate checks: not after hours on the others
        check_weights(targets[name].path, "copy or save that checkpoint again")
    base = run_dir / BABYLM_DIR

    def settings(tasks: list[str]) -> ExperimentConfig:
        c = cfg.model_copy(deep=True)
        c.evaluate.tasks, c.evaluate.stories, c.evaluate.probe_items = tasks, 0, 0
        return c

    fast_cfg, aoa_cfg = settings([t for t, _, _ in FAST]), settings([AOA])
    full_cfg = settings([t for t, _, _ in FULL])
    out_dirs: dict[str, Path] = {}
    fast_targets = []
    for revision in revisions:
        t = targets[revision]
        fast_targets.append(Target(revision, t.path, t.stage, t.pretrain_words, t.interact_words, base / "fast" / revision))
    t = targets[final]
    main = Target(final, t.path, t.stage, t.pretrain_words, t.interact_words, base / "full" / final)
    # each suite's task data read once, for the plan and every revision
    fast_data, aoa_data = TaskData(fast_cfg.evaluate, fast), TaskData(aoa_cfg.evaluate, full)
    full_data = TaskData(full_cfg.evaluate, full)
    with run_lock(run_dir / "evaluation"), run_log(run_dir / RUN_LOG):
        announce_plan(fast_cfg, fast_targets, fast, fast_data)
        announce_plan(aoa_cfg, fast_targets, full, aoa_data)
        announce_plan(full_cfg, [main], full, full_data)
        for task, glue_plan in glue_plans.items():  # the files were read and checked by plan()
            log(f"  {glue_plan.line(task)}", echo=True)
        for i, (revision, target) in enumerate(zip(revisions, fast_targets), 1):
            log(f"submission: {revision} ({i}/{len(revisions)}), fast suite and AoA", echo=True)
            evaluate_checkpoint(fast_cfg, target, fast, fast_data)
            evaluate_checkpoint(aoa_cfg, target, full, aoa_data)
            out_dirs[revision] = target.out_dir
        log(f"submission: {final} (the final model), full suite", echo=True)
        evaluate_checkpoint(full_cfg, main, full, full_data)
        if finetune is None:
            finetune = fine_tune_all(main, full, run_dir / FINETUNE_DIR / final, cfg.evaluate.device)

    model_out = out / model_name
    collated: dict = {}
    for task, official, folder in FULL:
        preds = reading_predictions(main.out_dir) if task == "reading" else choice_predictions(task, full, main.out_dir)
        where = model_out / "main" / "zero_shot" / BACKEND / official
        _write_json((where / folder if folder else where) / "predictions.json", preds)
        collated[COLLATED[task]] = preds
    collated["aoa"] = aoa_results(full, revisions, out_dirs, model_name)
    _write_json(model_out / "main" / "zero_shot" / BACKEND / "AoA_word" / "surprisal.json", collated["aoa"])
    collated["glue"] = {}
    for task in GLUE:
        source = Path(finetune) / task / "predictions.json"
        target_file = model_out / "main" / "finetune" / task / "predictions.json"
        target_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target_file)
        collated["glue"] |= json_object(read_text_file(source), str(source))
    figures_fast: dict[str, dict] = {}
    fast_results: dict[str, list] = {COLLATED[t]: [] for t, _, _ in FAST}
    reading_rows = reading.read_rows(reading.reading_file(fast))  # the same for every revision
    for revision in revisions:
        for task, official, folder in FAST:
            if task == "reading":
                preds = reading_predictions(out_dirs[revision])
                summary, _ = reading.reading_scores(reading_rows, [p["pred"] for p in preds["reading"]["predictions"]],
                                                    [p["prev_pred"] for p in preds["reading"]["predictions"]])
                figures = {"spr": summary["self_paced_reading"] / 100, "rt": summary["eye_tracking"] / 100}
            else:
                preds = choice_predictions(task, fast, out_dirs[revision])
                figures = fast_figures(task, preds, fast, folder)
            where = model_out / revision / "zero_shot" / BACKEND / official
            _write_json((where / folder if folder else where) / "predictions.json", preds)
            fast_results[COLLATED[task]].append(figures)
        figures_fast[revision] = leaderboard.checkpoint_figures(out_dirs[revision], {t: COLLATED[t] for t, _, _ in FAST})
    collated["fast_eval_results"] = fast_results
    path = model_out / f"all_full_preds_and_fast_scores_{BACKEND}.json"
    _write_json(path, collated)

    # What the leaderboard will compute from the collated file (calculate_results_from_pred.py).
    score = aoa.curve_fitness(collated["aoa"]["results"], aoa.read_cdi(aoa.cdi_file(full)))
    glue, glue_tasks = leaderboard.glue_figures(full, collated["glue"])
    figures_full = {**leaderboard.checkpoint_figures(main.out_dir, {t: COLLATED[t] for t, _, _ in FULL}),
                    "glue": glue, "aoa": score["curve_fitness"]}
    results = {"model": model_name, "track": track, "final": final, "full": figures_full, "fast": figures_fast,
               "glue": glue_tasks, "aoa": score}
    leaderboard.write(model_out / "results.json", results)
    print_table(leaderboard.table(results, model_out / "results.json"))
    return path

