"""Fabricate run directories for report tests, in the formats onceupon writes: results.json and
``evaluation/<checkpoint>/stories.jsonl`` (docs/evaluate.md, Outputs), ``anthology.jsonl``,
``metrics.csv`` and a checkpoint's ``onceupon.json`` (docs/interact.md, Outputs; the same
metadata for pretraining in docs/pretrain.md); docs/report.md says which of them the report reads.

No model is trained: checkpoints are just their ``onceupon.json``, results.json rows carry
chosen scores, and ``evaluation/<ckpt>/stories.jsonl`` and ``anthology.jsonl`` hold rated
stories whose means are exactly what the rows say, so a test knows every answer.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from onceupon.words import milestone_name

CRITERIA = ("readability", "coherence", "creativity")
#: the judge whose scores the fabricated results rows carry (the main ``stories`` summary)
FAKE_TEACHER = {"backend": "openai", "model": "fake-judge", "base_url": "http://127.0.0.1:1/v1", "temperature": 0.2}
PROMPT = "Let me tell you a long, magical tale. Once upon a time, in a faraway land,"


def totals_with_mean(mean: float, n: int) -> list[int]:
    """``n`` integer totals in 0..9 whose mean is ``mean`` rounded to 1/n."""
    k = round(mean * n)
    base, extra = divmod(k, n)
    return [min(9, base + (1 if i < extra else 0)) for i in range(n)]


def split_total(total: int) -> dict[str, int]:
    """Spread a 0..9 total as evenly as possible over the three 0..3 criteria."""
    base, extra = divmod(total, 3)
    return {name: base + (1 if i < extra else 0) for i, name in enumerate(CRITERIA)}


def story_records(totals: list[int], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i, t in enumerate(totals):
        words = ["the", "fox", "found", "a", "red", "box", "and", "smiled", "happily", "."]
        text = " ".join(rng.choice(words) for _ in range(8 + t * 3))
        scores = split_total(t)
        out.append(
            {
                "prompt": PROMPT,
                "continuation": text,
                "raw": " ".join(str(scores[c]) for c in CRITERIA),
                "valid": True,
                "scores": scores,
                "score": t / 9,
                "total": float(t),
                "n_words": len(text.split()),
                "error": None,
            }
        )
    return out


def _stories_block(records: list[dict]) -> dict:
    totals = [r["total"] for r in records]
    mean = sum(totals) / len(totals)
    return {
        "n": len(records),
        "invalid_rate": 0.0,
        "mean_total": mean,
        "mean_score": mean / 9,
        "criteria": {c: sum(r["scores"][c] for r in records) / len(records) for c in CRITERIA},
        "words": sum(r["n_words"] for r in records) / len(records),
        "distinct_1": 0.5,
        "distinct_2": 0.8,
        "repetition": 0.1,
        "readability": 80.0,
        "entropy_per_word": 5.0,
        "teacher": "openai:fake-judge|t=0.2",
        "teacher_config": FAKE_TEACHER,
    }


def _tasks(blimp: float, entity: float) -> dict:
    """Task results as `onceupon evaluate` stores them; COMPS, reading and AoA follow BLiMP."""
    return {
        "blimp": {"accuracy": blimp, "accuracy_ties_wrong": blimp - 0.5, "tie_rate": 0.01, "n": 100},
        "storyworld_entity_tracking": {"accuracy": entity, "accuracy_ties_wrong": entity, "tie_rate": 0.0, "n": 50},
        "ewok": {"absent": True},
        "wug_past_tense": {"spearman": 0.1 + blimp / 1000, "n": 20},
        "comps": {"accuracy": blimp - 10, "accuracy_ties_wrong": blimp - 10, "tie_rate": 0.0, "n": 40},
        "reading": {"eye_tracking": blimp / 10, "self_paced_reading": blimp / 100, "n": 30},
        "aoa": {"mean_surprisal": 100 / blimp, "n": 12, "failed": 0},
    }


#: GLUE fine-tuning results of an interaction run's final checkpoint: task -> (metric, best score)
GLUE = {"rte": ("accuracy", 0.625), "mrpc": ("f1", 0.8)}


def _write_glue(run: Path, checkpoint: str) -> None:
    """``results.json`` of each GLUE task as `onceupon evaluate --babylm-submission` fine-tunes
    a checkpoint (evaluate/finetune.py writes it) under ``evaluation/babylm/finetune/``."""
    for task, (metric, best) in GLUE.items():
        d = run / "evaluation" / "babylm" / "finetune" / checkpoint / task
        d.mkdir(parents=True)
        result = {"task": task, "metric": metric, "best": best, "per_epoch": [best / 2, best], "epochs": 2, "steps": 4,
                  "accuracy": best, "n": 8, "hyper": {"learning_rate": 3e-5}, "f1": best}
        (d / "results.json").write_text(json.dumps(result, indent=2))


def _write_checkpoint_meta(run: Path, name: str, **meta) -> Path:
    d = run / "checkpoints" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "onceupon.json").write_text(json.dumps({"name": name, **meta}))
    return d


def _write_eval(run: Path, rows: list[dict], stories: dict[str, list[dict]]) -> None:
    (run / "results.json").write_text(json.dumps({"rows": rows}))
    for name, records in stories.items():
        d = run / "evaluation" / name
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "stories.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")


def make_pretraining_run(
    root: Path, scores: dict[int, float], n_stories: int = 40, name: str = "pretrain", evaluated: bool = True
) -> Path:
    """A pretraining run with a checkpoint per ``{words: mean total}`` entry."""
    run = root / name
    rows, stories = [], {}
    for i, (words, mean) in enumerate(sorted(scores.items())):
        ck = milestone_name(words)
        path = _write_checkpoint_meta(run, ck, stage="pretrain", pretrain_words=words, step=i + 1)
        records = story_records(totals_with_mean(mean, n_stories), seed=i)
        stories[ck] = records
        rows.append(
            {
                "checkpoint": ck,
                "path": str(path),
                "stage": "pretrain",
                "pretrain_words": words,
                "interact_words": 0,
                "tasks": _tasks(60 + 2 * i, 20 + 3 * i),
                "stories": _stories_block(records),
            }
        )
    if evaluated:
        _write_eval(run, rows, stories)
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "words", "lr"])
        for step in range(1, 21):
            w.writerow([step, 6 / step**0.3, step * 1000, 5e-4])
    return run


def make_interaction_run(
    root: Path,
    start: Path,
    start_words: int,
    start_mean: float,
    final_mean: float,
    name: str,
    steps: int = 6,
    batch: int = 12,
    words_per_step: int = 100,
    n_stories: int = 40,
    evaluated: bool = True,
    invalid_every: int = 7,
    profile: str = "linear",
    teacher: dict | None = None,
) -> Path:
    """An interaction run from checkpoint ``start``: an anthology whose batch means rise
    linearly from ``start_mean`` to ``final_mean`` (``profile="step"``: the first half of the
    steps at ``start_mean``, the second half at ``final_mean``), a checkpoint at the end, and
    results rows (start and final) whose story means are ``start_mean`` and ``final_mean``.
    Every ``invalid_every``-th story gets an invalid rating (0: none). ``teacher``: the
    teacher section of a ``config.yaml`` (the judge that trained the run), none by default."""
    run = root / name
    run.mkdir(parents=True)
    if teacher is not None:
        (run / "config.yaml").write_text(json.dumps({"teacher": teacher}))  # JSON is YAML
    lines = []
    for step in range(1, steps + 1):
        if profile == "step":
            mean = start_mean if step <= steps // 2 else final_mean
        else:
            mean = start_mean + (final_mean - start_mean) * (step - 1) / max(1, steps - 1)
        for i, rec in enumerate(story_records(totals_with_mean(mean, batch), seed=step)):
            invalid = invalid_every > 0 and (step * batch + i) % invalid_every == 0
            lines.append(
                {
                    "step": step,
                    "index": i,
                    "prompt": rec["prompt"],
                    "continuation": f"[s{step}] " + rec["continuation"],
                    "raw": "I cannot rate this" if invalid else rec["raw"],
                    "valid": not invalid,
                    "scores": None if invalid else rec["scores"],
                    "score": None if invalid else rec["score"],
                    "total": None if invalid else rec["total"],
                    "reward": None if invalid else rec["score"],
                    "n_words": rec["n_words"],
                    "input_words": step * words_per_step,
                    "error": "unparseable" if invalid else None,
                }
            )
    with open(run / "anthology.jsonl", "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    interact_words = steps * words_per_step
    ck = milestone_name(interact_words)
    path = _write_checkpoint_meta(
        run, ck, stage="interact", pretrain_words=start_words, interact_words=interact_words,
        step=steps, start_checkpoint=str(start),
    )
    before = story_records(totals_with_mean(start_mean, n_stories), seed=100)
    after = story_records(totals_with_mean(final_mean, n_stories), seed=200)
    rows = [
        {"checkpoint": "start", "path": str(start), "stage": "pretrain", "pretrain_words": start_words,
         "interact_words": 0, "tasks": _tasks(70, 30), "stories": _stories_block(before)},
        {"checkpoint": ck, "path": str(path), "stage": "interact", "pretrain_words": start_words,
         "interact_words": interact_words, "tasks": _tasks(70.5, 34), "stories": _stories_block(after)},
    ]
    if evaluated:
        _write_eval(run, rows, {"start": before, ck: after})
        _write_glue(run, ck)
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "reward_mean", "kl", "input_words"])
        for step in range(1, steps + 1):
            w.writerow([step, 0.3 + 0.02 * step, 0.1 * step, step * words_per_step])
    return run
