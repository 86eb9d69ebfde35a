"""The teacher check an interaction run makes before its first step.

RL trains the student on whatever the teacher rewards, so ``onceupon interact`` runs
``onceupon check-teacher``'s check (check_teacher.py: the same probes, figures and verdict,
with its defaults: 40 storyworld stories, seed 0) on the very teacher the run will train
with, before it tells a single story, and saves it in the run as ``RUN/teacher_check/``
(``check.json`` and the probes and ratings behind it). ``interact.teacher_check`` says
what a verdict does:

``require`` (default)  a FAIL stops the run before its first step, in one sentence that
                       names what failed and how to train anyway (exit code 2); the check
                       stays in ``RUN/teacher_check/`` to be read
``allow``              train whatever the verdict (``--allow-failing-teacher``); the report
                       names a FAIL in the run's headline
``skip``               no check (``--skip-teacher-check``); ``RUN/teacher_check/skipped.json``
                       records that, and the report's headline says the teacher was not checked

A teacher given to :func:`onceupon.interact.interact` in code without a rubric (a test's
rule-based teacher) cannot be probed; that is recorded as skipped, with the reason. A
resumed run keeps the check it made when it started. Under ``accelerate launch`` the main
process checks and every process learns the verdict, so all of them stop or none.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console

from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.files import atomic_write_json
from onceupon.teacher.check_teacher import CHECK_FILE, check_teacher, load_probes, passed, read_check
from onceupon.teacher.rubric import Rubric

#: the check's directory inside a run
CHECK_DIR = "teacher_check"
#: written instead of check.json when the check was skipped (its "reason" says why)
SKIPPED_FILE = "skipped.json"


def check_before_run(cfg: ExperimentConfig, teacher, run_dir: str | Path) -> dict:
    """Check ``teacher`` for a new run in ``run_dir`` as ``cfg.interact.teacher_check`` says;
    returns the run's :func:`run_verdict`. Raises UserError when a required check fails."""
    mode = cfg.interact.teacher_check
    processes = _processes()
    verdict = None
    if processes is None or processes.is_main_process:
        verdict = _check_or_skip(cfg, teacher, Path(run_dir) / CHECK_DIR, mode)
    if processes is not None:
        from accelerate.utils import broadcast_object_list

        verdict = broadcast_object_list([verdict])[0]  # the main process's verdict, on every process
    if mode == "require" and verdict["status"] == "failed":
        raise UserError(
            f"The teacher failed its check ({verdict['reasons']}), so training with it would reward what it cannot judge; "
            f"see {verdict['path']}, or pass --allow-failing-teacher to train anyway (interact.teacher_check: allow)."
        )
    return verdict


def _processes():
    """accelerate's process state under ``accelerate launch``/``torchrun`` (None: one process).
    The run's Accelerator, made later, shares it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState()


def _check_or_skip(cfg: ExperimentConfig, teacher, out: Path, mode: str) -> dict:
    console = Console(stderr=True)
    if mode == "skip":
        return _skip(out, "--skip-teacher-check (interact.teacher_check: skip)", console)
    rubric = getattr(teacher, "rubric", None)
    if not isinstance(rubric, Rubric):
        return _skip(out, f"the teacher given in code ({getattr(teacher, 'identity', type(teacher).__name__)}) has no rubric to probe", console)
    console.print(f"checking the teacher {teacher.identity} before the first step -> {out}", markup=False, highlight=False, soft_wrap=True)
    result = check_teacher(teacher, cfg, out, load_probes(rubric, None, None, 40, 0))
    style = "bold green" if passed(result) else "bold white on red"
    console.print(f"teacher check: {result['verdict']['text']}", style=style, markup=False, highlight=False, soft_wrap=True)
    return run_verdict(out.parent)


def _skip(out: Path, reason: str, console: Console) -> dict:
    atomic_write_json(out / SKIPPED_FILE, {"skipped": True, "reason": reason})
    console.print(f"teacher check skipped: {reason}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    return run_verdict(out.parent)


def run_verdict(run_dir: str | Path) -> dict:
    """What a run's teacher check said, for the report's headline and the demo:
    ``status`` passed, failed, skipped or absent (a run from before checks were made),
    ``text`` one sentence, ``reasons`` what failed, ``teacher``."""
    out = Path(run_dir) / CHECK_DIR
    if (out / CHECK_FILE).is_file():
        result = read_check(out)
        ok = passed(result)
        reasons = "; ".join(result["verdict"].get("reasons") or result["verdict"].get("failing") or [])
        return {
            "status": "passed" if ok else "failed",
            "text": result["verdict"]["text"],
            "reasons": reasons,
            "teacher": result.get("teacher"),
            "path": str(out / CHECK_FILE),
        }
    if (out / SKIPPED_FILE).is_file():
        try:
            reason = json.loads((out / SKIPPED_FILE).read_text(encoding="utf-8")).get("reason") or "no reason recorded"
        except (ValueError, AttributeError, UnicodeDecodeError):
            reason = "no reason recorded"
        return {"status": "skipped", "text": f"teacher check skipped: {reason}", "reasons": "", "teacher": None, "path": str(out / SKIPPED_FILE)}
    return {"status": "absent", "text": "no teacher check in the run", "reasons": "", "teacher": None, "path": None}
