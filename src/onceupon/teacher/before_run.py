"""The teacher checks an interaction run makes before its first step.

RL trains the student on whatever the teacher rewards, so ``onceupon interact`` runs
``onceupon check-teacher``'s check (check_teacher.py: the same probes, figures and verdict)
on the very teacher the run will train with, before it tells a single story, on two probe
sets:

``storyworld``  40 storyworld stories told after the run's own prompts (``interact.prompt``,
                ``prompts_file`` or ``prompts_dataset``), seed 0: ``RUN/teacher_check/``
``student``     stories the start checkpoint tells from the run's prompts with the run's
                sampling settings (interact/check_samples.py): the kind of story the teacher
                will judge. ``RUN/teacher_check/student/``; where too few of them are long
                enough to probe (3 sentences, 20 words), ``skipped.json`` there says how many

After a run, :func:`check_rated` checks the teacher on the stories it actually rated (the
run's anthology: ``RUN/teacher_check/rated/``; ``onceupon demo`` does, and
``onceupon check-teacher --stories RUN/anthology.jsonl`` is the same check by hand): a PASS
the stories it trained on contradict is never the last word.

``interact.teacher_check`` says what a verdict does:

``require`` (default)  a FAIL on either set stops the run before its first step, in one
                       sentence that names what failed and how to train anyway (exit code 2);
                       the checks stay in ``RUN/teacher_check/`` to be read
``allow``              train whatever the verdicts (``--allow-failing-teacher``); the report
                       names a FAIL in the run's headline
``skip``               no check (``--skip-teacher-check``); ``RUN/teacher_check/skipped.json``
                       records that, and the report's headline says the teacher was not checked

A teacher given to :func:`onceupon.interact.interact` in code without a rubric (a test's
rule-based teacher) cannot be probed; that is recorded as skipped, with the reason. A
resumed run keeps the checks it made when it started. Under ``accelerate launch`` the main
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
from onceupon.teacher.check_teacher import CHECK_FILE, MIN_STORIES, check_teacher, load_probes, passed, read_check
from onceupon.teacher.probes import build_probes, usable_stories
from onceupon.teacher.rubric import Rubric

#: the check's directory inside a run
CHECK_DIR = "teacher_check"
#: written instead of check.json when the check was skipped (its "reason" says why)
SKIPPED_FILE = "skipped.json"
#: the student's own stories' check, inside CHECK_DIR
STUDENT_DIR = "student"
#: the check on the stories the run rated (its anthology), made after the run, inside CHECK_DIR
RATED_DIR = "rated"
#: what each probe set is called in sentences
SET_NAMES = {"storyworld": "storyworld probes", "student": "the student's own stories", "rated": "the stories it rated"}
#: clean stories per probe set
STORIES = 40


def check_before_run(
    cfg: ExperimentConfig, teacher, run_dir: str | Path, prompts: list[str] | None = None, student_samples=None
) -> dict:
    """Check ``teacher`` for a new run in ``run_dir`` as ``cfg.interact.teacher_check`` says,
    on storyworld stories told after ``prompts`` and on the stories ``student_samples()``
    returns ((prompt, continuation) pairs the start checkpoint told; None: no student set);
    returns the run's :func:`run_verdict`. Raises UserError when a required check fails."""
    mode = cfg.interact.teacher_check
    processes = _processes()
    verdict = None
    if processes is None or processes.is_main_process:
        verdict = _check_or_skip(cfg, teacher, Path(run_dir) / CHECK_DIR, mode, prompts, student_samples)
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
    from accelerate.utils import parse_flag_from_env

    # cpu= as the run's Accelerator reads it (ACCELERATE_USE_CPU): a bare PartialState() on a
    # machine without GPUs is one process, and, being shared, made the Accelerator one too.
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def _check_or_skip(cfg: ExperimentConfig, teacher, out: Path, mode: str, prompts, student_samples) -> dict:
    console = Console(stderr=True)
    if mode == "skip":
        return _skip(out, "--skip-teacher-check (interact.teacher_check: skip)", console)
    rubric = getattr(teacher, "rubric", None)
    if not isinstance(rubric, Rubric):
        return _skip(out, f"the teacher given in code ({getattr(teacher, 'identity', type(teacher).__name__)}) has no rubric to probe", console)
    say = _sayer(console)
    say(f"checking the teacher {teacher.identity} on storyworld stories before the first step -> {out}")
    result = check_teacher(teacher, cfg, out, load_probes(rubric, None, None, STORIES, 0, prompts=prompts))
    say(f"teacher check (storyworld): {result['verdict']['text']}", "bold green" if passed(result) else "bold white on red")
    if student_samples is not None:
        _check_stories(cfg, teacher, rubric, out / STUDENT_DIR, student_samples(), "the student told", say)
    return run_verdict(out.parent)


def _sayer(console: Console):
    """One plain line on ``console`` (no markup: stories and verdicts may hold brackets)."""
    return lambda text, style=None: console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def _check_stories(cfg: ExperimentConfig, teacher, rubric: Rubric, out: Path, told: list[tuple[str, str]], whose: str, say) -> None:
    """Probes from ``told`` checked into ``out``, or ``skipped.json`` there when too few are usable."""
    clean = usable_stories(told, STORIES, 0)
    if len(clean) < MIN_STORIES:
        reason = (
            f"only {len(clean)} of the {len(told)} stories {whose} have 3 sentences and 20 words "
            f"(at least {MIN_STORIES} are needed to probe)"
        )
        atomic_write_json(out / SKIPPED_FILE, {"skipped": True, "reason": reason, "told": len(told), "usable": len(clean)})
        say(f"teacher check ({SET_NAMES[out.name]}): not made: {reason}", "yellow")
        return
    say(f"checking the teacher on {len(clean)} of the {len(told)} stories {whose} -> {out}")
    top = rubric.answer({c.name: c.high for c in rubric.criteria})
    probes = build_probes(clean, top, 0, tuple(rubric.names))
    result = check_teacher(teacher, cfg, out, probes, source=f"{len(clean)} of the {len(told)} stories {whose} (usable ones)")
    say(f"teacher check ({SET_NAMES[out.name]}): {result['verdict']['text']}", "bold green" if passed(result) else "bold white on red")


def check_rated(cfg: ExperimentConfig, teacher, run_dir: str | Path) -> dict:
    """Check ``teacher`` on the stories the run in ``run_dir`` rated (a seeded sample of its
    anthology's usable stories) into ``RUN/teacher_check/rated/``; returns :func:`run_verdict`."""
    from onceupon.teacher.stories import read_stories

    run_dir = Path(run_dir)
    say = _sayer(Console(stderr=True))
    told = [(s.prompt, s.continuation) for s in read_stories(run_dir / "anthology.jsonl")]
    _check_stories(cfg, teacher, teacher.rubric, run_dir / CHECK_DIR / RATED_DIR, told, "the run rated", say)
    return run_verdict(run_dir)


def _skip(out: Path, reason: str, console: Console) -> dict:
    atomic_write_json(out / SKIPPED_FILE, {"skipped": True, "reason": reason})
    console.print(f"teacher check skipped: {reason}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    return run_verdict(out.parent)


def run_verdict(run_dir: str | Path) -> dict:
    """What a run's teacher checks said, for the report's headline and the demo: ``status``
    passed, failed, skipped or absent (a run from before checks were made), ``text`` one
    sentence, ``reasons`` what failed, ``teacher``, ``path``; ``sets`` the verdict of each
    probe set (``storyworld``, ``student``) on its own. Failed when any set failed."""
    out = Path(run_dir) / CHECK_DIR
    sets = {"storyworld": _set_verdict(out)}
    for name in (STUDENT_DIR, RATED_DIR):
        if (out / name).is_dir():
            sets[name] = _set_verdict(out / name)
    storyworld = sets["storyworld"]
    if storyworld["status"] in ("skipped", "absent"):
        return storyworld | {"sets": sets}
    failed = [name for name, v in sets.items() if v["status"] == "failed"]
    said = SET_NAMES
    text = "; ".join(f"{said[name]}: {v['text']}" for name, v in sets.items())
    return {
        "status": "failed" if failed else "passed",
        "text": text,
        "reasons": "; ".join(f"{said[name]}: {sets[name]['reasons']}" for name in failed),
        "teacher": storyworld["teacher"],
        "path": sets[failed[0]]["path"] if failed else storyworld["path"],
        "sets": sets,
    }


def _set_verdict(out: Path) -> dict:
    """One probe set's verdict (check.json or skipped.json in ``out``)."""
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
