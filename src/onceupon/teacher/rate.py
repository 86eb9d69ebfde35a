"""``onceupon rate``: rate a JSONL file of stories with a teacher; compare with other ratings.

Input, one JSON object per line:
    ``continuation`` (the student's text to rate; or ``text``: a whole story, from which a
    leading ``prompt`` is removed), ``prompt`` (optional, default ""), ``id`` (optional,
    default the line number). Anthology files of an interaction run are valid input.
Output (``--out``, default ``STORIES.ratings.jsonl``), one line per input line, in order:
    ``id``, ``prompt``, ``continuation`` (cleaned), ``valid``, ``scores`` {criterion: score},
    ``score`` (0..1), ``total`` (sum), ``raw`` (the teacher's answer), ``error``,
    ``attempts``, ``teacher`` (identity), ``rubric`` (hash). Written atomically at the end.
``--compare OTHER.jsonl``: agreement between these ratings and OTHER's (agreement.py),
printed as a table and written to ``OUT`` with the suffix ``.agreement.json``.
``--as-rated``: STORIES already holds ratings; compare it with OTHER without rating again.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.files import atomic_write_json, atomic_write_text, read_jsonl
from onceupon.teacher.agreement import agreement, load_ratings
from onceupon.teacher.base import Story
from onceupon.teacher.factory import build_teacher
from onceupon.teacher.rubric import Rubric, clean_text
from onceupon.tracking import progress_bar


def read_stories(path: str | Path) -> list[Story]:
    stories = []
    for lineno, record in enumerate(read_jsonl(path), 1):
        prompt = record.get("prompt") or ""
        if not isinstance(prompt, str):
            raise UserError(f"{path}, story {lineno}: 'prompt' must be a string.")
        if isinstance(record.get("continuation"), str):
            continuation = record["continuation"]
        elif isinstance(record.get("text"), str):
            text = record["text"]
            continuation = text[len(prompt) :] if prompt and text.startswith(prompt) else text
        else:
            raise UserError(f"{path}, story {lineno}: needs a 'continuation' (or 'text') string.")
        rid = record.get("id")
        stories.append(Story(prompt=prompt, continuation=continuation, id=str(rid) if rid is not None else str(lineno)))
    if not stories:
        raise UserError(f"{path} holds no stories.")
    return stories


def default_out(stories_path: Path) -> Path:
    name = stories_path.name.removesuffix(".jsonl")
    return stories_path.with_name(f"{name}.ratings.jsonl")


def rate_file(cfg: ExperimentConfig, stories_path: Path, out: Path) -> list[dict]:
    stories = read_stories(stories_path)
    records: list[dict] = []
    with build_teacher(cfg.teacher) as teacher:
        chunk = max(64, 4 * cfg.teacher.concurrency)
        with progress_bar("stories") as bar:
            task = bar.add_task("rate", total=len(stories))
            for start in range(0, len(stories), chunk):
                part = stories[start : start + chunk]
                for story, rating in zip(part, teacher.rate(part), strict=True):
                    records.append(
                        {
                            "id": story.id,
                            "prompt": clean_text(story.prompt),
                            "continuation": clean_text(story.continuation),
                            **rating.to_dict(),
                            "teacher": teacher.identity,
                            "rubric": teacher.rubric.hash,
                        }
                    )
                bar.advance(task, len(part))
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def print_summary(records: list[dict], rubric: Rubric, console: Console) -> None:
    valid = [r for r in records if r["valid"]]
    table = Table(title=f"{len(records)} stories, {len(records) - len(valid)} invalid")
    table.add_column("criterion")
    table.add_column("mean", justify="right")
    for name in rubric.names:
        table.add_row(name, _fmt(sum(r["scores"][name] for r in valid) / len(valid)) if valid else "-")
    table.add_row(f"total (0..{rubric.max_total})", _fmt(sum(r["total"] for r in valid) / len(valid)) if valid else "-")
    console.print(table)


def print_agreement(result: dict, console: Console, a: str, b: str) -> None:
    table = Table(
        title=f"agreement: {a} vs {b} ({result['matched']} matched by {result['matched_by']}, {result['both_valid']} rated validly by both)"
    )
    for col in ("criterion", "spearman", "kappa (quadratic)", "exact", "mean |diff|", "n"):
        table.add_column(col, justify="left" if col == "criterion" else "right")
    for name, s in [*result["criteria"].items(), ("total", result["total"])]:
        table.add_row(name, _fmt(s["spearman"]), _fmt(s["kappa"]), _fmt(s["exact"]), _fmt(s["mean_abs_diff"]), str(s["n"]))
    console.print(table)
    console.print(f"invalid rate: {a} {_fmt(result['invalid_rate_a'])}, {b} {_fmt(result['invalid_rate_b'])}")


def run(
    cfg: ExperimentConfig, stories_path: Path, out: Path | None = None, compare: Path | None = None, as_rated: bool = False
) -> dict | None:
    """The ``onceupon rate`` command; returns the agreement result when comparing."""
    stories_path = Path(stories_path)
    console = Console()
    rubric = Rubric.from_config(cfg.teacher)
    if as_rated:
        if compare is None:
            raise UserError("--as-rated compares existing ratings, so it needs --compare OTHER.jsonl.")
        ours_path = stories_path
    else:
        out = Path(out) if out else default_out(stories_path)
        if out.resolve() == stories_path.resolve():
            raise UserError("--out must differ from the stories file.")
        records = rate_file(cfg, stories_path, out)
        print_summary(records, rubric, console)
        console.print(f"ratings written to {out}")
        ours_path = out
    if compare is None:
        return None
    result = agreement(load_ratings(ours_path, rubric), load_ratings(compare, rubric), rubric)
    result = {"a": str(ours_path), "b": str(compare), **result}
    print_agreement(result, console, Path(ours_path).name, Path(compare).name)
    report = Path(ours_path).with_name(Path(ours_path).name.removesuffix(".jsonl") + ".agreement.json")
    atomic_write_json(report, result)
    console.print(f"agreement written to {report}")
    return result
