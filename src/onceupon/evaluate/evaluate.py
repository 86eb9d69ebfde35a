"""``onceupon evaluate``: zero-shot tasks and story quality for one checkpoint or a whole run.

A run directory gets one row per checkpoint (and, for an interaction run, a row named
``start`` for the checkpoint it started from, at ``interact_words = 0``) in
``RUN/results.json`` (schema: docs/evaluate.md, "Outputs"), with details per checkpoint under
``RUN/evaluation/<checkpoint>/``:

    tasks/<task>.json          the task's result, per-group breakdown and cache key
    tasks/<task>.scores.jsonl  every candidate's log-probability, by file and line (no text:
                               EWoK and entity-tracking data must not be redistributed)
    stories.jsonl              the sampled stories with their ratings
    stories.json               the story-quality summary and its cache key

Every part (each task, the stories) is cached under a key made of everything that can
change its result: the checkpoint's files, the task data's bytes (or the probe's items), the
story and teacher settings, and :data:`EVAL_VERSION`. Evaluating again skips parts whose key
is unchanged, so a growing run only evaluates its new checkpoints, and a changed teacher redoes
only the stories (sampled again with the same seed, then rated; the tasks stay cached). Batch size and device are not in the keys: they do not change results.

A single checkpoint inside a run (``RUN/checkpoints/chck_*``) is evaluated into that run
(its row in ``RUN/results.json`` is added or replaced). Any other checkpoint directory (for
instance a model saved with ``save_pretrained``) is evaluated into ``CHECKPOINT/evaluation/``,
whose ``results.json`` holds its one row; ``--out`` chooses another directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onceupon import preflight
from onceupon.config import EvaluateConfig, ExperimentConfig
from onceupon.errors import UserError
from onceupon.files import atomic_write_json, atomic_write_text, json_object, read_text_file
from onceupon.lifecycle.checkpoints import META_FILE, list_checkpoints, read_meta
from onceupon.lifecycle.lock import run_lock
from onceupon.student.checkpoints import (
    check_weights,
    load_checkpoint_tokenizer,
    load_model,
)
from onceupon.tracking import RUN_LOG, log, print_table, progress_bar, run_log
from onceupon.words import parse_word_count

from . import zero_shot
from .stories import judges_for
from .zero_shot import BABYLM_TASKS, PROBE_TASK, TaskResult

#: The reading task (eye-tracking and self-paced reading regressions, reading.py).
READING = "reading"
#: Surprisal of children's first words in context (aoa.py): per checkpoint here, curves over
#: a run's checkpoints in the submission.
AOA = "aoa"
#: Every task ``evaluate.tasks`` may name, in the table's order.
TASKS = BABYLM_TASKS + (READING, AOA, PROBE_TASK)

#: Bump when a change to scoring or story statistics should invalidate every cached result.
#: 2: text of context + 1 tokens is scored whole (it was cut by one token).
EVAL_VERSION = 2
RESULTS_FILE = "results.json"

console = Console()
err_console = Console(stderr=True)


@dataclass
class Target:
    """One checkpoint to evaluate and where its row and details go."""

    name: str
    path: Path
    stage: str
    pretrain_words: int
    interact_words: int
    out_dir: Path


# --------------------------------------------------------------------------- keys
def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


def checkpoint_fingerprint(path: Path) -> list:
    """Names, sizes and modification times of the checkpoint's files (cheap; any rewrite of
    the weights changes it)."""
    return sorted(
        [p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in Path(path).iterdir() if p.is_file()
    )


# --------------------------------------------------------------------------- model
class LazyModel:
    """Loads the checkpoint's model and tokenizer the first time a part needs them."""

    def __init__(self, path: Path, device: str):
        self.path = path
        self.device = device
        self._loaded = None

    def get(self):
        if self._loaded is None:
            import torch

            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            fix = "copy or save that checkpoint again"
            tokenizer = load_checkpoint_tokenizer(self.path, fix)
            # float32 as the official pipeline loads it: bf16 would create ties.
            model = load_model(self.path, fix, dtype=torch.float32)
            self._loaded = (model.to(device).eval(), tokenizer)
        return self._loaded

    def close(self) -> None:
        self._loaded = None


# --------------------------------------------------------------------------- one checkpoint
def _task_unit(task: str) -> str:
    if task == READING:
        return "words"
    if task == AOA:
        return "contexts"
    return "pairs" if task in ("blimp", "blimp_supplement", "ewok", "comps") else "items"


def _selected_tasks(ecfg: EvaluateConfig) -> list[str]:
    if ecfg.tasks is None:
        return list(TASKS)
    unknown = [t for t in ecfg.tasks if t not in TASKS]
    if unknown:
        raise UserError(f"Unknown evaluation task '{unknown[0]}'; choose from {', '.join(TASKS)}.")
    return list(dict.fromkeys(ecfg.tasks))


def _load_items(task: str, ecfg: EvaluateConfig, data_root: Path | None) -> tuple[list | None, dict | str]:
    """(items, what the data is) or (None, why absent)."""
    if task in (READING, AOA):  # one data file each, found and read by its own module
        from . import aoa, reading

        find, name, read = (reading.reading_file, reading.READING_FILE, reading.read_rows) if task == READING else (aoa.aoa_file, aoa.AOA_FILE, aoa.read_words)
        path = find(data_root) if data_root is not None else None
        if path is None:
            return None, f"no {name} under {data_root}" if data_root else "no evaluation data directory given (--data or evaluate.data_dir)"
        return read(path), {"files": [[path.name, _file_digest(path)]]}
    if task == PROBE_TASK:
        if ecfg.probe_items == 0:
            return None, "probe_items is 0"
        items = zero_shot.probe_items(ecfg.probe_items, ecfg.probe_seed)
        return items, {"probe_items": ecfg.probe_items, "probe_seed": ecfg.probe_seed, "items": _digest([(i.contexts[0], i.completions, i.uid) for i in items])}
    if data_root is None:
        return None, "no evaluation data directory given (--data or evaluate.data_dir)"
    files = zero_shot.task_files(data_root, task)
    if files is None:
        return None, f"no {task} files under {data_root}"
    items = zero_shot.read_items(task, files)
    return items, {"files": [[f.name, _file_digest(f)] for f in files]}


class TaskData:
    """Each task's items and what its data is, read and hashed the first time a checkpoint
    (or the plan) asks and then kept: the items do not depend on the checkpoint, so one
    ``onceupon evaluate`` reads each task's files once however many checkpoints it scores.
    (Items are text, small beside a model.)"""

    def __init__(self, ecfg: EvaluateConfig, data_root: Path | None):
        self.ecfg = ecfg
        self.data_root = data_root
        self._loaded: dict[str, tuple[list | None, dict | str]] = {}

    def get(self, task: str) -> tuple[list | None, dict | str]:
        """(items, what the data is) or (None, why absent), as :func:`_load_items`."""
        if task not in self._loaded:
            self._loaded[task] = _load_items(task, self.ecfg, self.data_root)
        return self._loaded[task]


def _cached(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:  # through json_object: a cache that is not a JSON object within bounds is recomputed
        data = json_object(read_text_file(path), str(path))
    except (OSError, UserError):
        return None
    return data if data.get("key") == key else None


def evaluate_checkpoint(cfg: ExperimentConfig, target: Target, data_root: Path | None, data: TaskData | None = None) -> dict:
    """The results.json row of one checkpoint, computing only the parts not cached. ``data``:
    the task items already read for these settings and ``data_root`` (several checkpoints
    share one), else they are read here."""
    ecfg = cfg.evaluate
    if data is None:
        data = TaskData(ecfg, data_root)
    fingerprint = checkpoint_fingerprint(target.path)
    lazy = LazyModel(target.path, ecfg.device)
    tasks: dict[str, dict] = {}
    task_dir = target.out_dir / "tasks"
    try:
        for task in _selected_tasks(ecfg):
            items, what = data.get(task)
            if items is None:
                tasks[task] = {"absent": True, "reason": what}
                continue
            key = _digest({"v": EVAL_VERSION, "checkpoint": fingerprint, "task": task, "data": what})
            hit = _cached(task_dir / f"{task}.json", key)
            if hit is not None:
                tasks[task] = hit["summary"]
                continue
            result = _score_task(f"{target.name} {task}", task, items, lazy, ecfg)
            _write_task(task_dir, task, key, result)
            tasks[task] = result.summary
        stories = _stories(cfg, target, fingerprint, lazy) if ecfg.stories > 0 else None
    finally:
        lazy.close()
    return {
        "checkpoint": target.name,
        "path": str(target.path),
        "stage": target.stage,
        "pretrain_words": target.pretrain_words,
        "interact_words": target.interact_words,
        "tasks": tasks,
        "stories": stories,
        # other judges' ratings of these same stories (`onceupon evaluate RUN --judge`)
        "judges": judges_for(target.out_dir) if stories else {},
    }


def _score_task(label: str, task: str, items: list, lazy: LazyModel, ecfg: EvaluateConfig) -> TaskResult:
    from .scoring import Scorer

    model, tokenizer = lazy.get()
    if task == READING:
        return _score_reading(label, items, model, tokenizer, ecfg)
    scorer = Scorer(model, tokenizer, batch_size=ecfg.batch_size, share_prefix=ecfg.share_prefix)
    if task == AOA:
        from . import aoa

        with progress_bar("contexts") as bar:
            handle = bar.add_task(label, total=sum(len(c) for _, c in items))
            values = aoa.surprisals(scorer, tokenizer, items, lambda n: bar.advance(handle, n))
        details, k = [], 0
        for w, (_, contexts) in enumerate(items):
            for c in range(len(contexts)):
                details.append({"word": w, "context": c, "surprisal": None if math.isnan(values[k]) else values[k]})
                k += 1
        return TaskResult(aoa.summary(values), {}, details)
    with progress_bar(_task_unit(task)) as bar:
        handle = bar.add_task(label, total=len(items))
        result = zero_shot.evaluate_items(
            task, items, scorer.score, lambda n: bar.advance(handle, n)
        )
    if scorer.truncated:
        # Candidates, and items with at least one candidate, longer than context + 1 tokens:
        # scored on their last tokens only (the table flags the share of items).
        result.summary["truncated"] = scorer.truncated
        result.summary["truncated_items"] = scorer.truncated_groups
    return result


def _score_reading(label: str, rows: list[dict], model, tokenizer, ecfg: EvaluateConfig) -> TaskResult:
    from . import reading

    with progress_bar("words") as bar:
        handle = bar.add_task(label, total=len(rows))
        pred, prev_pred, cut = reading.surprisals(model, tokenizer, rows, ecfg.batch_size, lambda n: bar.advance(handle, n))
    summary, breakdown = reading.reading_scores(rows, pred, prev_pred)
    if cut:
        summary["truncated"] = cut
    # JSON has no NaN: a row without a previous word has prev_pred null.
    details = [{"line": i, "pred": p, "prev_pred": None if math.isnan(q) else q} for i, (p, q) in enumerate(zip(pred, prev_pred))]
    return TaskResult(summary, breakdown, details)


def _write_task(task_dir: Path, task: str, key: str, result: TaskResult) -> None:
    # Scores first, summary last: the summary (with its key) marks the part as complete.
    lines = [json.dumps(d) for d in result.item_scores]
    atomic_write_text(task_dir / f"{task}.scores.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    atomic_write_json(task_dir / f"{task}.json", {"key": key, "summary": result.summary, "breakdown": result.breakdown})


def _stories(cfg: ExperimentConfig, target: Target, fingerprint: list, lazy: LazyModel) -> dict:
    from .stories import evaluate_stories, read_prompts

    ecfg = cfg.evaluate
    prompts = read_prompts(ecfg.story_prompt, ecfg.story_prompts_file)
    teacher_cfg = cfg.teacher.model_dump(mode="json")
    if cfg.teacher.template and Path(cfg.teacher.template).is_file():
        teacher_cfg["template_digest"] = _file_digest(Path(cfg.teacher.template))
    key = _digest(
        {
            "v": EVAL_VERSION,
            "checkpoint": fingerprint,
            "stories": ecfg.stories,
            "prompts": prompts,
            "max_new_tokens": ecfg.story_max_new_tokens,
            "seed": ecfg.seed,
            "teacher": teacher_cfg,
        }
    )
    summary_path = target.out_dir / "stories.json"
    hit = _cached(summary_path, key)
    if hit is not None:
        return hit["summary"]
    from onceupon.teacher.factory import build_teacher

    model, tokenizer = lazy.get()
    teacher = build_teacher(cfg.teacher)
    try:
        with progress_bar("stories") as bar:
            total = ecfg.stories * len(prompts)
            sampled = bar.add_task(f"{target.name} stories sampled", total=total)
            rated = bar.add_task(f"{target.name} stories rated", total=total)
            # each story counts as its rating arrives: a slow remote teacher can take minutes
            summary, records = evaluate_stories(
                model, tokenizer, ecfg, teacher,
                progress=lambda n: bar.advance(sampled, n), on_rated=lambda i, rating: bar.advance(rated, 1),
            )
    finally:
        teacher.close()
    summary["teacher"] = getattr(teacher, "identity", cfg.teacher.backend)
    summary["teacher_config"] = cfg.teacher.model_dump(mode="json")  # tells the report which judge trained a run
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    atomic_write_text(target.out_dir / "stories.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    atomic_write_json(summary_path, {"key": key, "summary": summary})
    return summary


# --------------------------------------------------------------------------- targets
def _target_for(path: Path, name: str, out_dir: Path, interact_words: int | None = None) -> Target:
    if (path / META_FILE).is_file():
        meta = read_meta(path)
        return Target(
            name, path, meta.stage, meta.pretrain_words,
            meta.interact_words if interact_words is None else interact_words, out_dir,
        )
    # A plain saved model: words from a BabyLM-style name (chck_20M) when it has one.
    m = re.fullmatch(r"chck_(\d+[KMBW]?)", path.name)
    words = parse_word_count(m.group(1).rstrip("W")) if m else 0
    return Target(name, path, "pretrain", words, interact_words or 0, out_dir)


def run_targets(run_dir: Path) -> list[Target]:
    """The rows of a run: its start checkpoint (interaction runs) then its checkpoints."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise UserError(f"{run_dir} has no complete checkpoints to evaluate.")
    targets: list[Target] = []
    metas = [read_meta(c) for c in checkpoints]
    start = next((m.start_checkpoint for m in metas if m.stage == "interact" and m.start_checkpoint), None)
    if start:
        start_path = Path(start)
        if not start_path.is_absolute() and not start_path.exists():
            start_path = run_dir / start_path
        if start_path.is_dir():
            targets.append(_target_for(start_path, "start", run_dir / "evaluation" / "start", interact_words=0))
        else:
            err_console.print(f"warning: the start checkpoint {start} no longer exists; no 'start' row.", soft_wrap=True)
    for c in checkpoints:
        targets.append(_target_for(c, c.name, run_dir / "evaluation" / c.name))
    return targets


def _data_root(ecfg: EvaluateConfig) -> Path | None:
    if not ecfg.data_dir:
        return None
    root = zero_shot.resolve_data_dir(ecfg.data_dir, ecfg.suite)
    from .aoa import aoa_file
    from .reading import reading_file

    if not any(zero_shot.task_files(root, t) for t in BABYLM_TASKS) and reading_file(root) is None and aoa_file(root) is None:
        raise UserError(
            f"{ecfg.data_dir} holds none of the BabyLM task folders (blimp_filtered, ewok_fast, ...); "
            "give the evaluation_data directory or its full_eval or fast_eval folder."
        )
    return root


def _with_data(cfg: ExperimentConfig, data_dir: str | Path | None) -> ExperimentConfig:
    if data_dir is None:
        return cfg
    cfg = cfg.model_copy(deep=True)
    cfg.evaluate.data_dir = str(data_dir)
    return cfg


def _validate(cfg: ExperimentConfig, targets: list[Target]) -> Path | None:
    """Everything that can be checked before work starts; returns the data root."""
    _selected_tasks(cfg.evaluate)  # an unknown task name
    preflight.device(cfg.evaluate.device, "evaluate.device")
    for t in targets:
        check_weights(t.path, "copy or save that checkpoint again")
        preflight.output_dir(t.out_dir, "the evaluation directory")
    return _data_root(cfg.evaluate)


def _sequences(task: str, items: list) -> tuple[int, str]:
    """(sequences the task scores per checkpoint, what they are) for the plan."""
    if task == READING:
        with_previous = sum(1 for r in items if r["prev_item"] is not None)
        return len(items) + with_previous, "texts (one more per extra token of a word)"
    if task == AOA:
        return sum(len(c) for _, c in items), "sequences"
    return sum(len(i.completions) for i in items), "sequences"


def announce_plan(cfg: ExperimentConfig, targets: list[Target], data_root: Path | None, data: TaskData | None = None) -> list[str]:
    """Before any model is loaded: what each task will score, per checkpoint and in all (a
    cached task is read back instead of scored again; the progress lines then give the rate
    and ETA of what is left). ``data``: where the items read here are kept for the checkpoints."""
    ecfg = cfg.evaluate
    if data is None:
        data = TaskData(ecfg, data_root)
    n = len(targets)
    lines = [f"plan: {n} checkpoint{'s' if n != 1 else ''}, forward passes of up to {ecfg.batch_size} sequences"]
    for task in _selected_tasks(ecfg):
        items, _ = data.get(task)
        if items is None:
            continue
        seqs, what = _sequences(task, items)
        passes = -(-seqs // ecfg.batch_size)
        lines.append(
            f"  {task}: {len(items):,} {_task_unit(task)}, {seqs:,} {what}, about {passes:,} forward passes per checkpoint; "
            f"{n * seqs:,} {what.split(' ')[0]} in all"
        )
    if ecfg.stories:
        from .stories import read_prompts

        stories = ecfg.stories * len(read_prompts(ecfg.story_prompt, ecfg.story_prompts_file))
        lines.append(f"  stories: {stories:,} sampled (up to {ecfg.story_max_new_tokens} new tokens each) and rated per checkpoint")
    for line in lines:
        err_console.print(line, soft_wrap=True, highlight=False)
        log(line)
    return lines


def select_checkpoints(targets: list[Target], names: list[str] | None) -> list[Target]:
    """The run's targets named in ``evaluate.checkpoints`` (all of them when it is None)."""
    if names is None:
        return targets
    if not names:
        raise UserError("evaluate.checkpoints names no checkpoint; leave it out to evaluate them all.")
    known = {t.name for t in targets}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"The run has no checkpoint '{unknown[0]}' (evaluate.checkpoints); it has {', '.join(sorted(known))}.")
    return [t for t in targets if t.name in set(names)]


def evaluate_targets(cfg: ExperimentConfig, targets: list[Target], data_root: Path | None) -> list[dict]:
    data = TaskData(cfg.evaluate, data_root)  # each task's files read and hashed once, for every checkpoint
    announce_plan(cfg, targets, data_root, data)
    rows = []
    for t in targets:
        err_console.print(f"[bold]evaluate[/bold] {t.name} ({t.path})", soft_wrap=True)
        log(f"evaluate {t.name} ({t.path})")
        rows.append(evaluate_checkpoint(cfg, t, data_root, data))
    return rows


def evaluate_run(cfg: ExperimentConfig | None, run_dir: str | Path, data_dir: str | Path | None = None) -> dict:
    """Evaluate every checkpoint of a run; write and return ``RUN/results.json``'s content."""
    run_dir = Path(run_dir)
    cfg = _with_data(cfg or ExperimentConfig(), data_dir)
    targets = select_checkpoints(run_targets(run_dir), cfg.evaluate.checkpoints)
    data_root = _validate(cfg, targets)
    # The lock is on RUN/evaluation (not the run itself): a run can be evaluated while it
    # trains, but two evaluations of one run never interleave their writes.
    with run_lock(run_dir / "evaluation"), run_log(run_dir / RUN_LOG):
        rows = evaluate_targets(cfg, targets, data_root)
        if cfg.evaluate.checkpoints is None:
            results = {"rows": rows}
            atomic_write_json(run_dir / RESULTS_FILE, results)
        else:  # some checkpoints only: the other rows of results.json stay as they were
            for row in rows:
                results, _ = _update_run_row(run_dir, row)
    return results


def evaluate_checkpoint_dir(
    cfg: ExperimentConfig | None, checkpoint: str | Path, data_dir: str | Path | None = None, out: str | Path | None = None
) -> tuple[dict, Path]:
    """Evaluate one checkpoint; returns (results, results.json path). See the module doc."""
    checkpoint = Path(checkpoint)
    cfg = _with_data(cfg or ExperimentConfig(), data_dir)
    if out is not None:
        preflight.output_dir(out)
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
    if out is None and run_dir is not None and (checkpoint / META_FILE).is_file():
        target = next((t for t in run_targets(run_dir) if t.path.resolve() == checkpoint.resolve()), None)
        if target is None:  # incomplete or hidden checkpoint: evaluate it standalone
            run_dir = None
    else:
        run_dir = None
    if run_dir is None:
        out_dir = Path(out) if out is not None else checkpoint / "evaluation"
        target = _target_for(checkpoint, checkpoint.name, out_dir)
        data_root = _validate(cfg, [target])
        with run_lock(out_dir):
            results = {"rows": evaluate_targets(cfg, [target], data_root)}
            path = out_dir / RESULTS_FILE
            atomic_write_json(path, results)
        return results, path
    data_root = _validate(cfg, [target])
    with run_lock(run_dir / "evaluation"), run_log(run_dir / RUN_LOG):
        return _update_run_row(run_dir, evaluate_targets(cfg, [target], data_root)[0])


def _update_run_row(run_dir: Path, row: dict) -> tuple[dict, Path]:
    """Add or replace one checkpoint's row in RUN/results.json, in the run's order."""
    path = run_dir / RESULTS_FILE
    rows = []
    if path.is_file():
        try:
            rows = json_object(read_text_file(path), str(path)).get("rows", [])
        except (OSError, UserError):
            rows = []
        rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    rows = [r for r in rows if r.get("checkpoint") != row["checkpoint"]] + [row]
    order = {t.name: i for i, t in enumerate(run_targets(run_dir))}
    rows.sort(key=lambda r: order.get(r.get("checkpoint"), len(order)))
    results = {"rows": rows}
    atomic_write_json(path, results)
    return results, path


# --------------------------------------------------------------------------- CLI
def _fmt(value, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


#: Short column headers for the terminal table.
SHORT = {
    "blimp": "BLiMP",
    "blimp_supplement": "suppl.",
    "ewok": "EWoK",
    "entity_tracking": "ET",
    "wug_adj_nominalization": "wug adj",
    "wug_past_tense": "wug past",
    "comps": "COMPS",
    "reading": "reading ET/SPR",
    "aoa": "AoA surpr.",
    "storyworld_entity_tracking": "sw ET",
}


def _task_cell(res: dict) -> str:
    if "spearman" in res:
        cell = _fmt(res["spearman"], 3)
    elif "mean_surprisal" in res:
        cell = _fmt(res["mean_surprisal"], 2)
    elif "eye_tracking" in res:
        cell = f"{res['eye_tracking']:.2f}/{res['self_paced_reading']:.2f}"
    elif res.get("tie_rate"):
        cell = f"{res['accuracy']:.1f} ({res['accuracy_ties_wrong']:.1f})"
    else:
        cell = f"{res['accuracy']:.1f}"
    if res.get("truncated_items"):
        share = 100 * res["truncated_items"] / max(1, res.get("n", 0))
        cell += f" cut {share:.0f}%" if share >= 1 else " cut <1%"
    return cell


def results_table(results: dict) -> Table:
    """The terminal view: one line per checkpoint; official accuracies with the ties-wrong
    accuracy in brackets when ties occurred; WUG Spearman correlations; story quality."""
    rows = results["rows"]
    tasks = [t for t in TASKS if any(not r["tasks"].get(t, {"absent": True}).get("absent") for r in rows)]
    cut_any = any(r["tasks"].get(t, {}).get("truncated_items") for r in rows for t in tasks)
    caption = "accuracy % (ties counted wrong); wug: Spearman rho; reading: % of R^2 left gained (eye tracking/self-paced)"
    if cut_any:
        caption += "; cut N% = share of items longer than the model's context, scored on their last tokens"
    table = Table(title="onceupon evaluation", caption=caption)
    table.add_column("checkpoint", no_wrap=True)
    table.add_column("pretrain", justify="right")
    table.add_column("interact", justify="right")
    for t in tasks:
        table.add_column(SHORT[t], justify="right")
    for col in ("story 0..9", "invalid", "words"):
        table.add_column(col, justify="right")
    for r in rows:
        cells = [r["checkpoint"], f"{r['pretrain_words']:,}", f"{r['interact_words']:,}"]
        for t in tasks:
            res = r["tasks"].get(t, {"absent": True})
            if res.get("absent"):
                cells.append("absent")
            else:
                cells.append(_task_cell(res))
        s = r.get("stories")
        if s:
            cells += [_fmt(s["mean_total"], 2), f"{100 * s['invalid_rate']:.0f}%", _fmt(s["words"])]
        else:
            cells += ["—", "—", "—"]
        table.add_row(*cells)
    return table


def run(cfg: ExperimentConfig | None, target: str | Path, data_dir: str | Path | None = None, out: str | Path | None = None) -> dict:
    """CLI entry: ``target`` is a run directory or one checkpoint directory."""
    target = Path(target)
    if not target.is_dir():
        raise UserError(f"{target} is not a directory (give a run directory or a checkpoint).")
    is_checkpoint = (target / META_FILE).is_file() or (target / "config.json").is_file()
    if is_checkpoint:
        results, path = evaluate_checkpoint_dir(cfg, target, data_dir, out)
    elif (target / "checkpoints").is_dir():
        if out is not None:
            raise UserError("--out applies to a single checkpoint; a run's results go to RUN/results.json.")
        results = evaluate_run(cfg, target, data_dir)
        path = target / RESULTS_FILE
    else:
        raise UserError(f"{target} is neither a run directory (no checkpoints/) nor a checkpoint (no config.json).")
    print_table(results_table(results), console)
    console.print(f"results: {path}", soft_wrap=True, highlight=False)
    return results
