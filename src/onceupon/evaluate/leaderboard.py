"""The figures the BabyLM 2025 leaderboard computes from a submission, from what onceupon evaluated.

The official ``calculate_results_from_pred.py`` prints, from the collated predictions, one
figure per task: BLiMP, supplement, EWoK and COMPS accuracy (mean over the groups),
entity tracking accuracy (mean over every (file, numops) group), the two WUG Spearman
correlations and the reading R^2 gains (all times 100), GLUE accuracy (mean over the tasks,
MRPC and QQP included: accuracy, not F1) and the AoA score (a correlation, not times 100); the
same figures without COMPS, GLUE and AoA for a fast-suite checkpoint. Here they come from
onceupon's own results of those tasks (the saved task summaries, the AoA score of aoa.py), so
nothing is scored twice; GLUE is counted from the predictions, as they may come from the
official fine-tuning (``--finetune``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from onceupon.errors import UserError
from onceupon.files import atomic_write_text, json_object, read_jsonl, read_text_file

#: (key, what calculate_results_from_pred.py prints before the figure), in its order.
FIGURES = (
    ("blimp", "BLIMP"), ("blimp_supplement", "SUPPLEMENT"), ("ewok", "EWOK"), ("entity_tracking", "ENTITY TRACKING"),
    ("wug_adj", "WUG ADJ"), ("wug_past", "WUG PAST"), ("comps", "COMPS"), ("reading_spr", "READING (SPR)"),
    ("reading_et", "READING (ET)"), ("glue", "GLUE"), ("aoa", "AoA"),
)  # fmt: skip


def checkpoint_figures(out_dir: Path, tasks: dict[str, str]) -> dict[str, float | None]:
    """The zero-shot and reading figures of one evaluated checkpoint, from its saved task
    results (``tasks``: onceupon task -> the collated file's key)."""
    figures: dict[str, float | None] = {}
    for task, key in tasks.items():
        path = out_dir / "tasks" / f"{task}.json"
        saved = json_object(read_text_file(path), str(path), "; evaluate again")
        summary, breakdown = saved["summary"], saved.get("breakdown") or {}
        if task == "reading":
            figures["reading_spr"], figures["reading_et"] = summary["self_paced_reading"], summary["eye_tracking"]
        elif "spearman" in summary:  # WUG: Spearman times 100; null where it is undefined (NaN officially)
            figures[key] = None if summary["spearman"] is None else 100 * summary["spearman"]
        elif task == "entity_tracking":
            # The leaderboard's mean runs over every (file, numops) group at once; onceupon's
            # task figure averages each file's groups first. Equal when every file has as
            # many groups (the official data: 6 each), not otherwise.
            groups = [g["accuracy"] for g in breakdown["groups"].values()]
            figures[key] = sum(groups) / len(groups)
        else:
            figures[key] = summary["accuracy"]
    return figures


def glue_figures(full: Path, predictions: dict) -> tuple[float | None, dict[str, float]]:
    """(mean accuracy over the tasks, accuracy per task) of GLUE predictions against the labels
    of ``full_eval/glue_filtered/<task>.valid.jsonl``, item by item in file order as the
    official code counts; (None, {}) when a task's validation file is not there."""
    accuracy = {}
    for task, entry in predictions.items():
        path = full / "glue_filtered" / f"{task}.valid.jsonl"
        if not path.is_file():
            return None, {}
        pairs = list(zip(entry["predictions"], read_jsonl(path)))
        if not pairs:
            raise UserError(f"{path} holds no examples to count the {task} predictions against.")
        accuracy[task] = 100 * sum(p["pred"] == row["label"] for p, row in pairs) / len(pairs)
    return (sum(accuracy.values()) / len(accuracy) if accuracy else None), accuracy


def table(results: dict, saved: Path | None = None):
    """A rich table: the final model's figures, then each fast checkpoint's (and where they are saved)."""
    from rich.table import Table

    rows = [(f"{results['final']} (full)", results["full"])] + [(f"{r} (fast)", f) for r, f in results["fast"].items()]
    shown = [(k, label) for k, label in FIGURES if any(k in f for _, f in rows)]
    aoa = results.get("aoa") or {}
    caption = f"AoA over {aoa.get('n_words', 0)} words with a model and a child AoA"
    if saved is not None:
        caption += f"; every figure and each word's two AoAs: {saved}"
    out = Table(title=f"BabyLM leaderboard figures: {results['model']} ({results['track']})", caption=caption)
    out.add_column("checkpoint")
    for _, label in shown:
        out.add_column(label, justify="right")
    for name, figures in rows:
        out.add_row(name, *("" if k not in figures else "—" if figures[k] is None else f"{figures[k]:.2f}" for k, _ in shown))
    return out


def _no_nan(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def write(path: Path, results: dict) -> None:
    # NaN (an undefined correlation) is written as null: JSON has no NaN, and other tools read the file.
    atomic_write_text(path, json.dumps(_no_nan(results), indent=1, allow_nan=False))
