"""Reading run directories for the report: results, checkpoints, metrics and the anthology.

A run directory is either a *pretraining* run (checkpoints with stage "pretrain") or an
*interaction* run (an ``anthology.jsonl`` and/or checkpoints with stage "interact"). Everything
is optional except that a directory must contain at least one of the things below, so the
report can show whatever a run has produced so far and say what is missing.

- ``results.json``           evaluation rows, one per checkpoint (schema: docs/evaluate.md, "Outputs")
- ``evaluation/<ckpt>/stories.jsonl``  the rated stories behind each row's story score
- ``checkpoints/*/onceupon.json``      checkpoint metadata (words seen, start checkpoint)
- ``metrics.csv``            training metrics, one row per logged step
- ``anthology.jsonl``        every story told during interaction, with its rating
- ``teacher_check/``         the check ``onceupon interact`` made of its teacher before the
                             first step (``check.json``), or ``skipped.json`` when it made none
- ``evaluation/babylm/finetune/<ckpt>/<task>/results.json``  a checkpoint's GLUE fine-tuning
                             (``onceupon evaluate --babylm-submission``), joined to its row's
                             tasks as ``glue_<task>``

The anthology can hold hundreds of thousands of stories (the paper's run: 331,200), so it is
read as a stream: per-step statistics and per-step score arrays are kept, the full records
only for the sample the story browser shows.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onceupon.errors import UserError
from onceupon.evaluate.submission import FINETUNE_DIR
from onceupon.files import json_object, read_jsonl, read_text_file
from onceupon.lifecycle.checkpoints import META_FILE, CheckpointMeta, list_checkpoints, read_meta
from onceupon.schemas.run import read_metrics
from onceupon.teacher.before_run import run_verdict

#: Score key meaning "sum of the criterion scores" (the paper's 0..9 unit).
TOTAL = "total"
#: A GLUE task's name among a row's tasks (``glue_rte``), beside the zero-shot ones.
GLUE_PREFIX = "glue_"


# --------------------------------------------------------------------------- scores of one story
def story_score(record: dict, score: str = TOTAL) -> float | None:
    """The score of one rated story (an anthology record or an evaluation story), or None
    when its rating is invalid or lacks that criterion.

    Accepts the anthology layout (``total``/``scores`` at the top level) and a nested
    ``rating`` object, so evaluation stories written either way are read.
    """
    rating = record.get("rating") if isinstance(record.get("rating"), dict) else record
    if rating.get("valid") is False:
        return None
    scores = rating.get("scores")
    if score == TOTAL:
        value = rating.get("total")
        if value is None and isinstance(scores, dict) and scores:
            value = sum(float(v) for v in scores.values())
    else:
        value = scores.get(score) if isinstance(scores, dict) else None
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def row_score(row: dict, score: str = TOTAL) -> float | None:
    """A results.json row's story score: ``stories.mean_total`` or a criterion's mean."""
    stories = row.get("stories")
    if not isinstance(stories, dict):
        return None
    value = stories.get("mean_total") if score == TOTAL else (stories.get("criteria") or {}).get(score)
    return None if value is None else float(value)


# --------------------------------------------------------------------------- anthology
@dataclass
class Anthology:
    """Per-step statistics of an interaction run's anthology and a sample of its stories."""

    path: Path
    records: int
    #: one dict per RL step, ascending: step, n, valid, total (mean), words (mean continuation
    #: words), reward (mean over rewarded stories), input_words (cumulative), criteria (means).
    steps: list[dict]
    #: step -> the valid stories' totals (for bootstrap and first/last-batch means)
    totals: dict[int, np.ndarray]
    #: step -> per-criterion score arrays
    criteria: dict[int, dict[str, np.ndarray]]
    #: full records chosen for the story browser
    sample: list[dict]

    def scores(self, steps: list[int], score: str = TOTAL) -> np.ndarray:
        """All valid scores of the given steps, concatenated."""
        parts = [self.totals.get(s, np.empty(0)) if score == TOTAL else self.criteria.get(s, {}).get(score, np.empty(0)) for s in steps]
        return np.concatenate(parts) if parts else np.empty(0)

    @property
    def step_numbers(self) -> list[int]:
        return [s["step"] for s in self.steps]


def _choose_sample(counts: dict[int, int], shown: int, seed: int) -> set[tuple[int, int]]:
    """Which (step, position-in-step) pairs the browser shows: steps spread evenly from the
    first to the last (always both), a few stories from each, picked at random with ``seed``."""
    if shown <= 0 or not counts:
        return set()
    steps = sorted(counts)
    per_step_min = 5
    n_steps = min(len(steps), max(1, shown // per_step_min))
    if n_steps == 1:
        chosen = [steps[-1]]
    else:
        idx = sorted({round(i * (len(steps) - 1) / (n_steps - 1)) for i in range(n_steps)})
        chosen = [steps[i] for i in idx]
    quota = max(1, shown // len(chosen))
    rng = random.Random(seed)
    picked: set[tuple[int, int]] = set()
    for step in chosen:
        n = counts[step]
        for pos in rng.sample(range(n), min(quota, n)):
            picked.add((step, pos))
    return picked


def read_anthology(path: Path, shown: int = 2000, seed: int = 0) -> Anthology:
    """Stream an anthology twice: statistics first, then the browser's sample."""
    sums: dict[int, dict] = {}
    totals: dict[int, list[float]] = {}
    crit: dict[int, dict[str, list[float]]] = {}
    records = 0
    for rec in read_jsonl(path):
        records += 1
        step = int(rec.get("step", 0))
        s = sums.setdefault(
            step, {"step": step, "n": 0, "valid": 0, "words": 0.0, "reward_sum": 0.0, "rewarded": 0, "input_words": 0}
        )
        s["n"] += 1
        s["words"] += float(rec.get("n_words") or 0)
        s["input_words"] = max(s["input_words"], int(rec.get("input_words") or 0))
        if rec.get("reward") is not None:
            s["reward_sum"] += float(rec["reward"])
            s["rewarded"] += 1
        total = story_score(rec)
        if total is not None:
            s["valid"] += 1
            totals.setdefault(step, []).append(total)
            for name, value in (rec.get("scores") or {}).items():
                crit.setdefault(step, {}).setdefault(name, []).append(float(value))
    steps = []
    for step in sorted(sums):
        s = sums[step]
        t = totals.get(step, [])
        steps.append(
            {
                "step": step,
                "n": s["n"],
                "valid": s["valid"],
                "total": float(np.mean(t)) if t else None,
                "words": s["words"] / s["n"],
                "reward": s["reward_sum"] / s["rewarded"] if s["rewarded"] else None,
                "input_words": s["input_words"],
                "criteria": {k: float(np.mean(v)) for k, v in crit.get(step, {}).items()},
            }
        )
    picked = _choose_sample({s["step"]: s["n"] for s in steps}, shown, seed)
    sample = []
    if picked:
        seen: dict[int, int] = {}
        for rec in read_jsonl(path):
            step = int(rec.get("step", 0))
            pos = seen.get(step, 0)
            seen[step] = pos + 1
            if (step, pos) in picked:
                sample.append(rec)
    return Anthology(
        path=path,
        records=records,
        steps=steps,
        totals={k: np.asarray(v) for k, v in totals.items()},
        criteria={k: {n: np.asarray(v) for n, v in d.items()} for k, d in crit.items()},
        sample=sample,
    )


# --------------------------------------------------------------------------- a run
@dataclass
class Run:
    path: Path
    name: str
    kind: str  # "pretrain" | "interact"
    rows: list[dict] = field(default_factory=list)
    checkpoints: list[CheckpointMeta] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    anthology: Anthology | None = None
    #: interaction runs: the checkpoint they started from
    start_name: str | None = None
    start_path: str | None = None
    start_words: int | None = None
    #: the ``teacher`` section of the run's config.yaml: the judge that trained an interaction run
    teacher: dict | None = None
    #: interaction runs: what the teacher check made before the first step said
    #: (onceupon.teacher.before_run.run_verdict: status passed/failed/skipped/absent, text, ...)
    teacher_check: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def start_row(self) -> dict | None:
        """Interaction runs: the evaluation row of the start checkpoint."""
        rows = [r for r in self.rows if int(r.get("interact_words", 0)) == 0]
        return rows[0] if rows else None

    @property
    def final_row(self) -> dict | None:
        """Interaction runs: the evaluation row with the most interaction words."""
        rows = [r for r in self.rows if int(r.get("interact_words", 0)) > 0]
        return max(rows, key=lambda r: (int(r["interact_words"]), r.get("checkpoint", ""))) if rows else None

    @property
    def interact_words(self) -> int | None:
        """Interaction words spent by the run's latest checkpoint (or anthology)."""
        if self.final_row is not None:
            return int(self.final_row["interact_words"])
        metas = [m for m in self.checkpoints if m.stage == "interact"]
        if metas:
            return max(m.interact_words for m in metas)
        if self.anthology is not None and self.anthology.steps:
            return int(self.anthology.steps[-1]["input_words"])
        return None

    def story_scores(self, checkpoint: str, score: str = TOTAL) -> np.ndarray | None:
        """Per-story scores behind a results row (``evaluation/<checkpoint>/stories.jsonl``)."""
        path = self.path / "evaluation" / checkpoint / "stories.jsonl"
        if not path.is_file():
            return None
        values = [story_score(rec, score) for rec in read_jsonl(path)]
        kept = [v for v in values if v is not None]
        return np.asarray(kept) if kept else None


def _read_results(path: Path) -> list[dict]:
    # through json_object: a results.json nested thousands deep or with a key twice is one sentence too
    data = json_object(read_text_file(path), str(path), "; re-run `onceupon evaluate` on that run")
    rows = data.get("rows")
    if not isinstance(rows, list):
        raise UserError(f"{path} has no 'rows' list; was it written by `onceupon evaluate`?")
    return rows


def _read_teacher(path: Path) -> dict | None:
    """The teacher section of a run's saved config, None when there is none to read."""
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return None
    teacher = data.get("teacher") if isinstance(data, dict) else None
    return teacher if isinstance(teacher, dict) else None


def load_run(path: str | Path, shown: int = 2000, seed: int = 0) -> Run:
    """Read whatever a run directory holds; a UserError when it holds nothing we know."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"Run directory {path} does not exist.")
    results, anthology, metrics = path / "results.json", path / "anthology.jsonl", path / "metrics.csv"
    ckpts = list_checkpoints(path)
    if not (results.is_file() or anthology.is_file() or ckpts or metrics.is_file()):
        raise UserError(
            f"{path} is not an onceupon run directory (no results.json, anthology.jsonl, checkpoints or metrics.csv)."
        )
    run = Run(path=path, name=path.resolve().name, kind="pretrain")
    run.checkpoints = [read_meta(p) for p in ckpts]
    if results.is_file():
        run.rows = sorted(
            _read_results(results), key=lambda r: (int(r.get("pretrain_words", 0)), int(r.get("interact_words", 0)))
        )
    else:
        run.notes.append("no results.json (run `onceupon evaluate` on it for scores)")
    _join_glue(run)
    if metrics.is_file():
        run.metrics = read_metrics(metrics)
    if anthology.is_file():
        run.anthology = read_anthology(anthology, shown=shown, seed=seed)
    run.teacher = _read_teacher(path / "config.yaml")
    interactive = (
        run.anthology is not None
        or any(m.stage == "interact" for m in run.checkpoints)
        or any(r.get("stage") == "interact" for r in run.rows)
    )
    if interactive:
        run.kind = "interact"
        _find_start(run)
        run.teacher_check = run_verdict(path)
    return run


def _join_glue(run: Run) -> None:
    """Each evaluated checkpoint's GLUE fine-tuning results, if it has any, as tasks of its row:
    ``glue_<task>`` with the task's official metric (accuracy, F1 for MRPC and QQP) of the
    epoch kept, in % as the zero-shot accuracies. A file that cannot be read is a note."""
    for row in run.rows:
        folder = run.path / FINETUNE_DIR / str(row.get("checkpoint"))  # <ckpt>/<task>/results.json
        if not isinstance(row.get("tasks"), dict) or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*/results.json")):
            try:
                result = json_object(read_text_file(path), str(path))
                metric, best = result["metric"], float(result["best"])
            except (UserError, OSError, KeyError, TypeError, ValueError):
                run.notes.append(f"{path} is not a fine-tuning result; its GLUE task is left out")
                continue
            row["tasks"][f"{GLUE_PREFIX}{path.parent.name}"] = {metric: 100 * best, "n": result.get("n")}


def _find_start(run: Run) -> None:
    """Where an interaction run started: checkpoint metadata first, then the results row."""
    metas = [m for m in run.checkpoints if m.stage == "interact"]
    if metas:
        run.start_words = metas[0].pretrain_words
        run.start_path = metas[0].start_checkpoint
    start = run.start_row
    if start is not None:
        run.start_words = run.start_words if run.start_words is not None else int(start.get("pretrain_words", 0))
        run.start_path = run.start_path or start.get("path")
    if run.start_path:
        start_dir = Path(run.start_path)
        if not start_dir.is_absolute() and not start_dir.exists():  # relative to the run, as evaluate reads it
            start_dir = run.path / start_dir
        run.start_path = str(start_dir)
        run.start_name = start_dir.name
        meta = start_dir / META_FILE
        if meta.is_file():  # the start checkpoint's own name is the clearest label
            run.start_name = read_meta(start_dir).name
    elif run.start_words is not None:
        run.start_name = f"{run.start_words:,} words"
    if run.start_words is None:
        run.notes.append("start checkpoint unknown (no interaction checkpoint or results row names it)")


def load_runs(paths: list[str | Path], shown: int = 2000, seed: int = 0) -> list[Run]:
    """Load several runs; names are made unique (parent/name) when two directories share one."""
    if not paths:
        raise UserError("Give at least one run directory to report on.")
    # The browser's story budget is shared by the runs that have an anthology.
    with_anthology = sum((Path(p) / "anthology.jsonl").is_file() for p in paths)
    per_run = shown // max(1, with_anthology)
    runs = [load_run(p, shown=per_run, seed=seed) for p in paths]
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.path.resolve().parent.name}/{run.name}"
    return runs
