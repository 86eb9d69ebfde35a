"""The report's answer to "was the teacher gamed?": one panel per interaction run, from what its
watch wrote (``RUN/watch.jsonl``, interact/watch.py) and its anthology.

A panel holds the teacher's and the held-out judge's scores on the same stories, step by step,
with each one's gain since the start and the gap between them (and intervals); the drift
signals; the words that grew most; the top-rated stories at the start, middle and end of the
run (with the held-out judge's score where it rated them); and the alarms. ``verdict`` says in
one clause whether the teacher's gain was seen by the held-out judge; the headline carries it.
"""

from __future__ import annotations

import json
from pathlib import Path

from onceupon.interact.watch import FILE as WATCH_FILE  # the file the watch writes, named where it is written


def _records(path: Path):
    """The JSON objects of a JSONL file a run wrote, one by one; a torn or foreign line is
    skipped (the report shows what it can), a missing file holds none."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield row


def read_watch(run_dir: Path) -> list[dict]:
    """The watch's records of a run, in step order ([] when it has none)."""
    out = [row for row in _records(Path(run_dir) / WATCH_FILE) if isinstance(row.get("step"), int)]
    return sorted(out, key=lambda r: r["step"])


def _top_stories(run_dir: Path, steps: dict[str, int], heldout: dict[tuple[int, int], float | None]) -> list[dict]:
    """The teacher's best-rated story of each named step (one pass over the anthology)."""
    wanted = {step: name for name, step in steps.items()}
    best: dict[int, dict] = {}
    for rec in _records(Path(run_dir) / "anthology.jsonl"):
        if rec.get("step") not in wanted or rec.get("score") is None:
            continue
        held = heldout.get((rec["step"], rec.get("index")))
        key = (rec["score"], held is not None)  # among equals, one the held-out judge rated too
        if rec["step"] not in best or key > best[rec["step"]]["_key"]:
            best[rec["step"]] = {"_key": key, "step": rec["step"], "score": rec["score"], "heldout": held,
                                 "continuation": rec.get("continuation", "")}  # fmt: skip
    return [
        {"when": wanted[step], **{k: v for k, v in best[step].items() if k != "_key"}}
        for step in sorted(best)
    ]


def verdict(gains: dict | None, alarms: list[dict], judge: str | None) -> dict:
    """Whether the teacher's gain was seen by the held-out judge: ``unseen`` True when the
    teacher's gain is above 0 (its whole interval) and the gap between the gains is too, or
    when an alarm was raised; None when there is nothing to judge it by."""
    if gains is None:
        if alarms:
            return {"unseen": True, "text": f"its watch raised an alarm at step {alarms[0]['step']} ({alarms[0]['rule']})"}
        return {"unseen": None, "text": ""}
    t, h, g = gains["teacher_gain"], gains["heldout_gain"], gains["gap"]
    figures = f"teacher {t[0]:+.3f}, held-out {judge} {h[0]:+.3f}, gap {g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]"
    if (t[1] > 0 and g[1] > 0) or alarms:
        alarm = f"; alarm at step {alarms[0]['step']} ({alarms[0]['rule']})" if alarms else ""
        return {"unseen": True, "text": f"its teacher's gain is not seen by the held-out judge ({figures}{alarm})"}
    if t[1] > 0:
        return {"unseen": False, "text": f"the held-out judge saw the teacher's gain ({figures})"}
    return {"unseen": False, "text": f"the teacher's score shows no clear gain to compare ({figures})"}


def panel(run_name: str, run_dir: Path) -> dict | None:
    """The run's panel (see the module docstring); None when the run has no watch records."""
    rows = read_watch(run_dir)
    if not rows:
        return None
    judged = [r for r in rows if r.get("heldout")]
    judge = judged[0]["heldout"]["judge"] if judged else None
    last_gains = next((r["gains"] for r in reversed(judged) if r.get("gains")), None)
    alarms = [r["alarm"] for r in rows if r.get("alarm")]
    heldout = {(r["step"], s[0]): s[2] for r in judged for s in r["heldout"].get("stories", [])}
    first, last = rows[0]["step"], rows[-1]["step"]
    steps = {"start": first, "middle": rows[len(rows) // 2]["step"], "end": last}
    return {
        "run": run_name,
        "judge": judge,
        "steps": [
            {
                "step": r["step"],
                "teacher": (r.get("heldout") or {}).get("teacher"),
                "heldout": (r.get("heldout") or {}).get("heldout"),
                "gap": ((r.get("gains") or {}).get("gap") or [None])[0],
                **{k: (r.get("signals") or {}).get(k) for k in ("address", "distinct2", "repetition", "words", "at_length_cap", "invalid")},
            }
            for r in rows
        ],
        "gains": last_gains,
        "growing": rows[-1].get("growing") or [],
        "alarms": alarms,
        "top_stories": _top_stories(run_dir, steps, heldout),
        "verdict": verdict(last_gains, alarms, judge),
    }
