"""Everything the report shows, computed once as plain JSON data (``report/report.json``).

The figures (plots.py) and the HTML page (report.py) are drawn from this one dictionary, and
the demo prints its headline from it, so a number appears in exactly one place.

Which score the equivalence uses (``report.equivalence_source``):

- ``evaluate``: the story score (``report.score``; default the mean total, the paper's 0..9
  unit) that ``onceupon evaluate`` measured for each *pretraining checkpoint* forms the
  curve; each interaction run's *final evaluated checkpoint* is the target. Per-story ratings
  in ``evaluation/<checkpoint>/stories.jsonl`` feed the bootstrap.
- ``anthology``: the paper's table. Each interaction run contributes one curve point, the mean
  score of its first ``anthology_batches`` RL batches at its start checkpoint's words; its
  target is the mean of its last ``anthology_batches`` batches.
- ``auto`` (default): ``evaluate`` when at least two pretraining checkpoints and one final
  interaction checkpoint have story scores, otherwise ``anthology``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onceupon.analysis.efficiency import Curve, bootstrap_needed, equivalence
from onceupon.analysis.runs import GLUE_PREFIX, TOTAL, Run, row_score
from onceupon.analysis.watch import panel as watch_panel
from onceupon.config import ReportConfig
from onceupon.evaluate.finetune import TASKS as GLUE_TASKS
from onceupon.evaluate.zero_shot import BABYLM_TASKS, PROBE_TASK
from onceupon.errors import UserError
from onceupon.teacher.judges import labels, same_judge
from onceupon.teacher.before_run import SET_NAMES
from onceupon.text import printable

#: story-quality fields of a results row shown in the before/after table (key, label)
STORY_FIELDS = [
    ("mean_total", "mean total (0..max)"),
    ("mean_score", "mean score (0..1)"),
    ("invalid_rate", "invalid ratings"),
    ("words", "words per story"),
    ("distinct_1", "distinct-1"),
    ("distinct_2", "distinct-2"),
    ("repetition", "repetition"),
    ("readability", "readability (formula)"),
    ("entropy_per_word", "entropy per word"),
]

#: fields of an anthology record the story browser needs
BROWSER_FIELDS = ["step", "index", "prompt", "continuation", "raw", "valid", "scores", "total", "reward",
                  "n_words", "input_words", "error"]


#: The figures of a task's result the report shows, by the key they are stored under; the
#: first present is the task's headline (its curve). Reading has two: the eye-tracking and the
#: self-paced-reading R^2 gains. A GLUE task (``glue_<task>``, runs.py) has its official metric.
TASK_METRICS = ("accuracy", "f1", "spearman", "eye_tracking", "self_paced_reading", "mean_surprisal")

#: How each metric reads in a table header or on an axis.
METRIC_LABELS = {"accuracy": "accuracy %", "f1": "F1 %", "spearman": "Spearman", "eye_tracking": "eye tracking, R^2 gain, % left",
                 "self_paced_reading": "self-paced reading, R^2 gain, % left", "mean_surprisal": "mean surprisal, nats"}

#: The task table's columns in the order `onceupon evaluate` prints the tasks (evaluate.TASKS,
#: not imported here: that module loads torch), the GLUE fine-tuning tasks before the probe.
TASK_ORDER = BABYLM_TASKS + ("reading", "aoa") + tuple(f"{GLUE_PREFIX}{t}" for t in GLUE_TASKS) + (PROBE_TASK,)
TASK_NAMES = {"blimp": "BLiMP", "blimp_supplement": "BLiMP supplement", "ewok": "EWoK", "entity_tracking": "entity tracking",
              "wug_adj_nominalization": "WUG adjectives", "wug_past_tense": "WUG past tense", "comps": "COMPS",
              "reading": "reading", "aoa": "AoA", PROBE_TASK: "storyworld entity tracking",
              **{f"{GLUE_PREFIX}{t}": f"GLUE {n}" for t, n in zip(GLUE_TASKS, ("BoolQ", "MNLI", "MRPC", "MultiRC", "QQP", "RTE", "WSC"))}}

#: Published figures shown beside the runs in the task table, in the report's units: accuracy
#: in %, WUG as Spearman's rho (the BabyLM 2025 results print it as 100 x rho, so 50.24 is
#: 0.5024). The BabyLM 2025 GPT-2 baseline trained on 100M words, on the full evaluation; and
#: the paper's (Once Upon a Time) 900M-word checkpoint before and after its RL, on the fast
#: evaluation. Neither published COMPS, reading, AoA or GLUE figures beside these.
BASELINES = [
    {"name": "BabyLM 2025 GPT-2 baseline, 100M words (full eval)",
     "values": {("blimp", "accuracy"): 74.88, ("blimp_supplement", "accuracy"): 63.32, ("ewok", "accuracy"): 51.67,
                ("entity_tracking", "accuracy"): 31.51, ("wug_adj_nominalization", "spearman"): 0.5024}},
    {"name": "paper: 900M-word checkpoint before RL (fast eval)",
     "values": {("blimp", "accuracy"): 77.98, ("blimp_supplement", "accuracy"): 56.4, ("ewok", "accuracy"): 49.55,
                ("entity_tracking", "accuracy"): 27.44}},
    {"name": "paper: 900M-word checkpoint after RL (fast eval)",
     "values": {("blimp", "accuracy"): 77.98, ("blimp_supplement", "accuracy"): 56.8, ("ewok", "accuracy"): 49.45,
                ("entity_tracking", "accuracy"): 30.31}},
]


def task_values(result: dict | None) -> list[tuple[str, float]]:
    """(metric name, value) of every figure of one task's result the report shows, headline
    first: accuracy (or a GLUE task's F1), Spearman for WUG tasks, the eye-tracking and
    self-paced-reading R^2 gains for reading, mean surprisal of the CDI words for AoA."""
    if not isinstance(result, dict) or result.get("absent"):
        return []
    return [(m, float(result[m])) for m in TASK_METRICS if isinstance(result.get(m), (int, float)) and not isinstance(result[m], bool)]


def task_value(result: dict | None) -> tuple[str, float | None]:
    """(metric name, value) of one task's headline figure (the first of :func:`task_values`)."""
    values = task_values(result)
    return values[0] if values else ("", None)


def _point(run: Run, row: dict) -> dict:
    return {
        "run": run.name,
        "checkpoint": row.get("checkpoint"),
        "pretrain_words": int(row.get("pretrain_words", 0)),
        "interact_words": int(row.get("interact_words", 0)),
        "stories": row.get("stories"),
        "tasks": row.get("tasks") or {},
    }


# --------------------------------------------------------------------------- equivalence inputs
def _owner(run: Run, pretraining: list[Run]) -> Run | None:
    """The pretraining run whose directory holds the interaction run's start checkpoint."""
    if not run.start_path:
        return None
    start = Path(run.start_path).resolve()
    for p in pretraining:
        if start.is_relative_to(p.path.resolve()):
            return p
    return None


def _evaluate_points(run: Run, pretraining: list[Run], interaction: list[Run], score: str) -> list[tuple]:
    """Curve points (words, per-story sample or mean, label) from evaluated checkpoints."""
    owner = _owner(run, pretraining)
    sources = [owner] if owner is not None else pretraining
    points, seen = [], set()
    for src in sources:
        for row in src.rows:
            value, words = row_score(row, score), int(row.get("pretrain_words", 0))
            if value is None or words <= 0 or int(row.get("interact_words", 0)) != 0:
                continue
            sample = src.story_scores(str(row.get("checkpoint")), score)
            points.append((words, sample if sample is not None else value, f"{src.name}/{row.get('checkpoint')}"))
            seen.add(words)
    # Start checkpoints evaluated inside interaction runs fill words no pretraining run covers.
    for other in interaction:
        row = other.start_row
        value = row_score(row, score) if row else None
        if value is None or other.start_words in seen or not other.start_words:
            continue
        sample = other.story_scores(str(row.get("checkpoint")), score)
        points.append((other.start_words, sample if sample is not None else value, f"{other.name}/start"))
        seen.add(other.start_words)
    return sorted(points, key=lambda p: p[0])


def _mean(sample) -> float:
    return float(np.mean(sample)) if np.ndim(sample) else float(sample)


def _anthology_window(run: Run, batches: int) -> tuple[list[int], list[int]] | None:
    steps = run.anthology.step_numbers if run.anthology else []
    if len(steps) < 2:
        return None
    n = min(batches, len(steps) // 2)
    return steps[:n], steps[-n:]


def _choose_source(cfg: ReportConfig, pretraining: list[Run], interaction: list[Run]) -> str:
    if cfg.equivalence_source != "auto":
        return cfg.equivalence_source
    for run in interaction:
        final = run.final_row
        if final is not None and row_score(final, cfg.score) is not None:
            if len(_evaluate_points(run, pretraining, interaction, cfg.score)) >= 2:
                return "evaluate"
    return "anthology"


def equivalences(cfg: ReportConfig, runs: list[Run]) -> dict:
    """The equivalence section: source, curve(s), one result per interaction run, skips."""
    pretraining = [r for r in runs if r.kind == "pretrain"]
    interaction = [r for r in runs if r.kind == "interact"]
    source = _choose_source(cfg, pretraining, interaction)
    score_name = "mean total" if cfg.score == TOTAL else f"mean {cfg.score}"
    out: dict = {"source": source, "score": cfg.score, "results": [], "skipped": [], "curves": {}}

    if source == "anthology":
        windows = {r.name: _anthology_window(r, cfg.anthology_batches) for r in interaction}
        shared = _anthology_points(interaction, windows, cfg)
        n_used = max((len(w[0]) for w in windows.values() if w), default=0)
        out["description"] = (
            f"{score_name} of the first vs last {n_used} RL batches of each interaction run's anthology "
            "(the paper's table); the curve is the first-batch score of every run at its start checkpoint's words"
        )
    else:
        out["description"] = (
            f"{score_name} of story quality from `onceupon evaluate`: evaluated pretraining checkpoints form the "
            "curve, each interaction run's final evaluated checkpoint is the target"
        )

    for run in interaction:
        if source == "anthology":
            inputs = _anthology_inputs(run, windows[run.name], shared, cfg)
        else:
            inputs = _evaluate_inputs(run, pretraining, interaction, cfg)
        if isinstance(inputs, str):
            out["skipped"].append({"run": run.name, "reason": inputs})
            continue
        curve = Curve.from_points([(w, _mean(s)) for w, s, _ in inputs.points])
        if len(curve) < 2:
            out["skipped"].append({"run": run.name, "reason": "fewer than two pretraining points with scores"})
            continue
        out["results"].append(_equivalence(run, inputs, curve, cfg, f"{score_name} ({source})"))
        out["curves"][run.name] = {
            "words": curve.words.tolist(),
            "scores": curve.scores.tolist(),
            "fitted": curve.fitted.tolist(),
            "labels": [p[2] for p in inputs.points if p[0] > 0],
        }
    return out


@dataclass
class _RunInputs:
    """What one interaction run's equivalence is computed from."""

    points: list  #: (pretraining words, score sample, label) per point of the curve
    target: object  #: the scores the run reached: a per-story sample, or one value
    final_score: float
    start_score: float | None
    interact_words: int


def _anthology_points(interaction: list[Run], windows: dict, cfg: ReportConfig) -> list:
    """The anthology curve: each run's first-batch scores at its start checkpoint's words."""
    shared = []
    for run in interaction:
        w = windows[run.name]
        if w is not None and run.start_words:
            first = run.anthology.scores(w[0], cfg.score)
            if len(first):
                shared.append((run.start_words, first, f"{run.name} (first {len(w[0])} batches)"))
    return sorted(shared, key=lambda p: p[0])


def _anthology_inputs(run: Run, window, shared: list, cfg: ReportConfig) -> _RunInputs | str:
    """First vs last batches of the run's anthology; a string says why the run is skipped."""
    if window is None or not run.start_words:
        return "needs an anthology of 2+ steps and a known start"
    target = run.anthology.scores(window[1], cfg.score)
    if not len(target):
        return "no valid ratings in its last batches"
    start_sample = run.anthology.scores(window[0], cfg.score)
    start_score = _mean(start_sample) if len(start_sample) else None
    return _RunInputs(shared, target, _mean(target), start_score, int(run.anthology.steps[-1]["input_words"]))


def _evaluate_inputs(run: Run, pretraining: list[Run], interaction: list[Run], cfg: ReportConfig) -> _RunInputs | str:
    """The run's final evaluated checkpoint against the evaluated pretraining curve; a string
    says why the run is skipped."""
    final = run.final_row
    value = row_score(final, cfg.score) if final else None
    if value is None:
        return "no evaluated interaction checkpoint with story scores"
    if run.start_words is None:
        return "start checkpoint unknown"
    points = _evaluate_points(run, pretraining, interaction, cfg.score)
    sample = run.story_scores(str(final.get("checkpoint")), cfg.score)
    start = run.start_row
    start_score = row_score(start, cfg.score) if start else None
    if start_score is None:
        at_start = [_mean(p[1]) for p in points if p[0] == run.start_words]
        start_score = at_start[0] if at_start else None
    target = sample if sample is not None else value
    return _RunInputs(points, target, value, start_score, int(final["interact_words"]))


def _equivalence(run: Run, inputs: _RunInputs, curve: Curve, cfg: ReportConfig, score: str) -> dict:
    """The run's equivalence (and its bootstrap interval) as JSON."""
    eq = equivalence(
        curve,
        run=run.name,
        start_checkpoint=run.start_name or "?",
        start_words=run.start_words,
        interact_words=inputs.interact_words,
        final_score=inputs.final_score,
        start_score=inputs.start_score,
        score=score,
    )
    if cfg.bootstrap > 0:
        points = inputs.points
        eq.interval = bootstrap_needed(
            [p[0] for p in points],
            [p[1] for p in points],
            inputs.target,
            resamples=cfg.bootstrap,
            confidence=cfg.confidence,
            seed=cfg.seed,
            names=[p[2] for p in points],
        )
    return eq.to_json()


def teacher_clause(verdict: dict | None) -> str:
    """What the run's teacher check said, as the end of the headline sentence: a gain is
    what the teacher rewards, so a teacher that failed or was never checked is named there."""
    if verdict is None:
        return ""
    status = verdict["status"]
    if status == "passed":
        sets = verdict.get("sets") or {}
        if set(sets) <= {"storyworld"}:  # a run from before other stories were probed
            return f"; its teacher {verdict['teacher']} passed the teacher check"
        on = [SET_NAMES[name] for name, v in sets.items() if v["status"] == "passed"]
        not_made = [f"{SET_NAMES[name]}: {v['text'].removeprefix('teacher check skipped: ')}" for name, v in sets.items() if v["status"] != "passed"]
        unchecked = f" (not checked on {'; '.join(not_made)})" if not_made else ""
        return f"; its teacher {verdict['teacher']} passed the teacher check on {' and '.join(on)}{unchecked}"
    if status == "failed":
        return f"; its teacher {verdict['teacher']} FAILED the teacher check ({verdict['reasons']})"
    if status == "skipped":
        return f"; its teacher was not checked ({verdict['text'].removeprefix('teacher check skipped: ')})"
    return "; its teacher was not checked (the run holds no teacher check)"


def headline(eq_section: dict, verdicts: dict[str, dict] | None = None, watched: dict[str, dict] | None = None) -> dict | None:
    """The figure the report and the demo lead with: the interaction run worth the most extra
    pretraining words among those inside the curve (else the first run, as a bound), with
    that run's teacher verdict (``verdicts``: run name -> before_run.run_verdict) in the
    sentence, and what its watch saw when the held-out judge did not see the gain
    (``watched``: run name -> analysis.watch.verdict)."""
    results = eq_section["results"]
    if not results:
        return None
    inside = [r for r in results if r["position"] == "inside"]
    best = max(inside, key=lambda r: r["extra_words"]) if inside else results[0]
    verdict = (verdicts or {}).get(best["run"])
    seen = (watched or {}).get(best["run"])
    return {
        "run": best["run"],
        "text": best["summary"] + teacher_clause(verdict) + (f"; {seen['text']}" if seen and seen["unseen"] else ""),
        "teacher_check": verdict,
        "watch": seen,
        "position": best["position"],
        "interact_words": best["interact_words"],
        "extra_words": best["extra_words"],
        "extra_bound": best["extra_bound"],
        "ratio": best["ratio"],
        "extra_interval": best["extra_interval"],
        "source": eq_section["source"],
    }


# --------------------------------------------------------------------------- tables
def before_after(run: Run) -> dict | None:
    """Zero-shot and story-quality scores of an interaction run's start vs final checkpoint."""
    start, final = run.start_row, run.final_row
    if start is None or final is None:
        return None
    tasks = []
    for name in sorted(set(start.get("tasks") or {}) | set(final.get("tasks") or {})):
        before = dict(task_values((start.get("tasks") or {}).get(name)))
        after = dict(task_values((final.get("tasks") or {}).get(name)))
        for metric in [m for m in TASK_METRICS if m in before or m in after] or ["absent"]:
            b, a = before.get(metric), after.get(metric)
            tasks.append({"task": name, "metric": metric, "before": b, "after": a, "diff": None if b is None or a is None else a - b})
    stories = []
    s1, s2 = start.get("stories") or {}, final.get("stories") or {}
    if s1 or s2:
        for key, label in STORY_FIELDS:
            b, a = s1.get(key), s2.get(key)
            stories.append({"metric": label, "before": b, "after": a, "diff": None if b is None or a is None else a - b})
        for name in sorted(set(s1.get("criteria") or {}) | set(s2.get("criteria") or {})):
            b, a = (s1.get("criteria") or {}).get(name), (s2.get("criteria") or {}).get(name)
            stories.append({"metric": f"criterion: {name}", "before": b, "after": a,
                            "diff": None if b is None or a is None else a - b})
    return {
        "run": run.name,
        "start": run.start_name,
        "start_checkpoint": start.get("checkpoint"),
        "final_checkpoint": final.get("checkpoint"),
        "interact_words": int(final.get("interact_words", 0)),
        "tasks": tasks,
        "stories": stories,
    }


def _judged(row: dict) -> dict[str, dict]:
    """Every judge's story summary of a results row: the main teacher's (key ``main:<teacher>``,
    so rows evaluated with different main teachers never pair up) and the extra judges'."""
    out = {}
    main = row.get("stories")
    if isinstance(main, dict) and main.get("mean_total") is not None:
        out[f"main:{main.get('teacher', '?')}"] = main
    for key, summary in (row.get("judges") or {}).items():
        if isinstance(summary, dict) and summary.get("mean_total") is not None:
            out[key] = summary
    return out


def judge_gains(run: Run) -> dict | None:
    """The gain from the start to the final checkpoint as each judge of both sees it, side by
    side: does the gain survive a change of judge? ``trained`` marks the judge whose settings
    are those the run trained with (None: unknown)."""
    start, final = run.start_row, run.final_row
    if start is None or final is None:
        return None
    before, after = _judged(start), _judged(final)
    judges = []
    for key in [k for k in after if k in before]:
        a, b = before[key], after[key]
        config = b.get("teacher_config")
        criteria = sorted(set(a.get("criteria") or {}) & set(b.get("criteria") or {}))
        judges.append(
            {
                "judge": b.get("teacher", key),
                "role": "main" if key.startswith("main:") else "extra judge",
                "trained": same_judge(config, run.teacher) if config and run.teacher else None,
                "start": a["mean_total"],
                "final": b["mean_total"],
                "gain": b["mean_total"] - a["mean_total"],
                "criteria": {c: b["criteria"][c] - a["criteria"][c] for c in criteria
                             if a["criteria"][c] is not None and b["criteria"][c] is not None},
                "invalid": [a.get("invalid_rate"), b.get("invalid_rate")],
                "n": [a.get("n"), b.get("n")],
            }
        )
    if not judges:
        return None
    # judges of one model (and settings) told apart by their prompt, rubric or settings
    for judge, label in zip(judges, labels([after[k] for k in after if k in before])):
        judge["identity"], judge["judge"] = judge["judge"], label
    judges.sort(key=lambda j: (j["trained"] is not True, j["role"] != "main", j["judge"]))
    return {"run": run.name, "start_checkpoint": start.get("checkpoint"), "final_checkpoint": final.get("checkpoint"), "judges": judges}


def paper_table(runs: list[Run], batches: int) -> list[dict]:
    """The paper's table: mean total of the first and last ``batches`` RL batches per run."""
    table = []
    for run in runs:
        w = _anthology_window(run, batches) if run.kind == "interact" else None
        if w is None:
            continue
        first, last = run.anthology.scores(w[0]), run.anthology.scores(w[1])
        table.append(
            {
                "run": run.name,
                "start": run.start_name,
                "pretrain_words": run.start_words,
                "batches": len(w[0]),
                "start_mean": float(first.mean()) if len(first) else None,
                "end_mean": float(last.mean()) if len(last) else None,
                "n_start": int(len(first)),
                "n_end": int(len(last)),
                "steps": len(run.anthology.steps),
            }
        )
    return sorted(table, key=lambda r: r["pretrain_words"] or 0)


def browser(runs: list[Run]) -> dict:
    """The story browser's data: sampled stories plus each run's per-step means (all stories)."""
    stories, steps, records = [], {}, {}
    for run in runs:
        if run.anthology is None:
            continue
        records[run.name] = run.anthology.records
        steps[run.name] = [
            {"step": s["step"], "total": s["total"], "words": s["words"], "n": s["n"], "valid": s["valid"]}
            for s in run.anthology.steps
        ]
        for rec in run.anthology.sample:
            story = {"run": run.name, **{k: rec.get(k) for k in BROWSER_FIELDS}}
            for k in ("prompt", "continuation", "raw"):  # control characters marked, as the teacher and the page see them
                if isinstance(story[k], str):
                    story[k] = printable(story[k])
            stories.append(story)
    return {"stories": stories, "steps": steps, "records": records}


def task_table(runs: list[Run]) -> dict:
    """Every evaluated checkpoint of every run against every figure of the BabyLM tasks (a
    column each, in :data:`TASK_ORDER`; only figures some checkpoint has), with the published
    :data:`BASELINES` as rows below them (None where a baseline has no figure)."""
    present = {(task, m) for run in runs for row in run.rows for task, result in (row.get("tasks") or {}).items()
               for m, _ in task_values(result)}
    order = {task: i for i, task in enumerate(TASK_ORDER)}
    columns = sorted(present, key=lambda c: (order.get(c[0], len(order)), c[0], TASK_METRICS.index(c[1])))
    rows = []
    for run in runs:
        for row in sorted(run.rows, key=lambda r: (int(r.get("pretrain_words", 0)), int(r.get("interact_words", 0)))):
            figures = {(task, m): v for task, result in (row.get("tasks") or {}).items() for m, v in task_values(result)}
            rows.append({"run": run.name, "checkpoint": row.get("checkpoint"), "pretrain_words": int(row.get("pretrain_words", 0)),
                         "interact_words": int(row.get("interact_words", 0)), "cells": [figures.get(c) for c in columns]})
    baselines = [{"name": b["name"], "cells": [b["values"].get(c) for c in columns]}
                 for b in BASELINES if any(c in b["values"] for c in columns)]
    return {
        "columns": [{"task": task, "metric": m, "label": f"{TASK_NAMES.get(task, task)} ({METRIC_LABELS[m]})"} for task, m in columns],
        "rows": rows,
        "baselines": baselines,
    }


# --------------------------------------------------------------------------- everything
def run_checks(interaction: list[Run]) -> list[dict]:
    """The check.json of every probe set of every interaction run that checked its teacher,
    for the teacher checks section (``run`` names the run, ``set`` the probe set, ``path`` the
    file)."""
    from onceupon.teacher.check_teacher import read_check

    out = []
    for run in interaction:
        verdict = run.teacher_check or {}
        sets = verdict.get("sets") or {"storyworld": verdict}
        for name, one in sets.items():
            if one.get("status") in ("passed", "failed"):
                out.append(read_check(one["path"]) | {"run": run.name, "set": SET_NAMES.get(name, name), "path": one["path"]})
    return out


def _check_score(score: str, runs: list[Run]) -> None:
    """``report.score`` names the total or a criterion the runs' ratings have: a typo would
    otherwise read as 'no valid ratings'. Runs without any ratings say nothing either way."""
    rated: set[str] = set()
    for run in runs:
        for row in run.rows:
            rated |= set(((row.get("stories") or {}).get("criteria") or {}))
        if run.anthology is not None:
            rated |= {name for by_step in run.anthology.criteria.values() for name in by_step}
    if score != TOTAL and rated and score not in rated:
        raise UserError(f"report.score '{score}' is not a criterion of these runs' ratings; give {TOTAL} or one of {', '.join(sorted(rated))}.")


def summarize(cfg: ReportConfig, runs: list[Run], title: str = "onceupon", checks: list[dict] | None = None) -> dict:
    """``checks``: results of ``onceupon check-teacher`` (check.json) given with ``--check``;
    each interaction run's own check (``RUN/teacher_check``) joins them."""
    pretraining = [r for r in runs if r.kind == "pretrain"]
    interaction = [r for r in runs if r.kind == "interact"]
    criteria: set[str] = set()
    tasks: set[str] = set()
    for run in runs:
        for row in run.rows:
            criteria |= set(((row.get("stories") or {}).get("criteria") or {}))
            tasks |= {t for t, v in (row.get("tasks") or {}).items() if task_value(v)[1] is not None}
    _check_score(cfg.score, runs)
    eq = equivalences(cfg, runs)
    warnings = [f"{r.name}: {n}" for r in runs for n in r.notes]
    warnings += [f"{s['run']}: equivalence skipped, {s['reason']}" for s in eq["skipped"]]
    if not interaction:
        warnings.append("no interaction run given: the equivalence and the story browser need one")
    panels = [p for p in (watch_panel(r.name, r.path) for r in interaction) if p is not None]
    warnings += [f"{p['run']}: {a['sentence']}" for p in panels for a in p["alarms"]]
    return {
        "title": title,
        "criteria": sorted(criteria),
        "tasks": sorted(tasks),
        "runs": [
            {
                "name": r.name,
                "path": str(r.path),
                "kind": r.kind,
                "checkpoints": len(r.checkpoints),
                "evaluated": len(r.rows),
                "stories": r.anthology.records if r.anthology else 0,
                "start": r.start_name,
                "start_words": r.start_words,
                "interact_words": r.interact_words if r.kind == "interact" else None,
                "teacher_check": r.teacher_check,
                "notes": r.notes,
            }
            for r in runs
        ],
        "pretrain_points": [_point(r, row) for r in pretraining for row in r.rows],
        "interaction": [
            {
                "run": r.name,
                "start": r.start_name,
                "start_words": r.start_words,
                "points": [_point(r, row) for row in sorted(r.rows, key=lambda x: int(x.get("interact_words", 0)))],
                "steps": r.anthology.steps if r.anthology else [],
            }
            for r in interaction
        ],
        "metrics": {r.name: r.metrics for r in runs if r.metrics},
        "equivalence": eq,
        "headline": headline(eq, {r.name: r.teacher_check for r in interaction}, {p["run"]: p["verdict"] for p in panels}),
        "watch": panels,
        "task_table": task_table(runs),
        "before_after": [t for t in (before_after(r) for r in interaction) if t is not None],
        "paper_table": paper_table(interaction, cfg.anthology_batches),
        "judge_gains": [g for g in (judge_gains(r) for r in interaction) if g is not None],
        "teacher_checks": (checks or []) + run_checks(interaction),
        "browser": browser(interaction),
        "warnings": warnings,
    }
