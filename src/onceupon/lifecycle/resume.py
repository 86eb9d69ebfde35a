"""New run or resume, and what a resume continues from: one format and one rule for every stage.

- **New run or resume**: :func:`check_new_run` refuses a directory that already holds the
  stage's run; :func:`check_resume` refuses one that holds none. Both are cheap and run before
  the run lock is taken, and before anything is loaded or written.
- **The resume state** (one format): ``trainer_state/state.pt`` in a checkpoint or in
  ``RUN/resume_point``, a ``torch.save`` of a dict holding everything a resume needs beyond
  the weights (optimizer, RNG states, counters; each stage adds its own keys), beside a
  readable ``trainer_state/progress.json``. :func:`state_writer` writes both,
  :func:`read_resume_state` reads the dict back (a damaged file is one sentence).
- **The resume rule** (one for every stage): :func:`find_resume_point` continues from the
  latest checkpoint that holds a resume state, or from ``RUN/resume_point`` (a stop between
  two checkpoints) when that is further along.
- **Pruning**: :func:`prune_resume_states` keeps ``trainer_state/`` (large) only where
  ``keep_resume_state: latest`` wants it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from onceupon.errors import UserError
from onceupon.files import atomic_write_json
from onceupon.lifecycle.checkpoints import STATE_DIR, list_checkpoints, read_meta
from onceupon.lifecycle.lock import is_global_main

RESUME_POINT = "resume_point"  # where a stop between two checkpoints leaves its resume state
RESUME_STATE = "state.pt"  # in STATE_DIR: what a resume needs beyond the weights (torch.save)
PROGRESS_FILE = "progress.json"  # in STATE_DIR: the counters of that state, for people


# --------------------------------------------------------------------------- new run or resume
#: command -> (what its run is called, files that only its runs hold): the kind of run a
#: directory holds is told apart before anything is loaded or written into it.
RUN_KINDS = {
    "pretrain": ("a pretraining run", ("tokenizer", "packed")),
    "interact": ("an interaction run", ("state.json", "anthology.jsonl")),
    "corpus": ("a corpus", ()),
}


def _kind(command: str) -> str:
    return RUN_KINDS.get(command, (f"an `onceupon {command}` run", ()))[0]


def _other_kind(run_dir: Path, command: str) -> str | None:
    """The kind of another command's run that ``run_dir`` holds (an interaction run given to
    ``pretrain --resume``, a pretraining run given to ``interact --out``), if any."""
    for other, (kind, only) in RUN_KINDS.items():
        if other != command and any((run_dir / marker).exists() for marker in only):
            return kind
    return None


def check_new_run(run_dir: str | Path, command: str, markers: Iterable[str]) -> None:
    """Refuse to start a new ``onceupon COMMAND`` run where one exists: any of ``markers``
    (paths relative to ``run_dir``) present means the directory already holds such a run;
    the files of another command's run mean it holds that run.

    Under ``accelerate launch`` only the global main process checks: the others start at
    slightly different times and could see the first files the main process writes.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a directory.")
    if not is_global_main():
        return
    other = _other_kind(run_dir, command)
    if other is not None:
        raise UserError(f"{run_dir} holds {other}, not {_kind(command)}; pick a new --out.")
    if any((run_dir / marker).exists() for marker in markers):
        raise UserError(
            f"{run_dir} already holds {_kind(command)}; continue it with `onceupon {command} --resume {run_dir}` or pick a new --out."
        )


def check_resume(run_dir: str | Path, command: str, marker: str) -> None:
    """Refuse ``onceupon COMMAND --resume`` of a directory that holds no such run (``marker``,
    a path relative to ``run_dir``, is absent, or it holds another command's run)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir} is not a directory.")
    other = _other_kind(run_dir, command)
    if other is not None:
        raise UserError(f"{run_dir} is not {_kind(command)} to resume: it holds {other}.")
    if not (run_dir / marker).exists():
        raise UserError(f"{run_dir} is not {_kind(command)} to resume (it has no {marker}).")


# --------------------------------------------------------------------------- the resume state
def has_resume_state(directory: Path) -> bool:
    return (directory / STATE_DIR / RESUME_STATE).is_file()


def state_writer(state: dict, progress: dict) -> Callable[[Path], None]:
    """A checkpoint's ``write_state``: ``state`` (torch.save) and ``progress`` (readable JSON)."""

    def write(directory: Path) -> None:
        import torch

        # Through a Python file: a full disk is then an OSError (ENOSPC) torch raises from;
        # torch.save to a path says only "unexpected pos ..." (files.is_disk_full).
        with open(directory / RESUME_STATE, "wb") as f:
            torch.save(state, f)
        atomic_write_json(directory / PROGRESS_FILE, progress)

    return write


def read_resume_state(where: Path) -> dict:
    """The dict :func:`state_writer` saved in ``where`` (a checkpoint or the resume point)."""
    import torch

    path = where / STATE_DIR / RESUME_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or garbage file: torch raises a variety of errors
        raise UserError(
            f"Cannot resume: {path} cannot be read ({type(e).__name__}); restore it from a backup or start a new run."
        ) from None


# --------------------------------------------------------------------------- the resume rule
def find_resume_point(run_dir: str | Path) -> Path | None:
    """What ``--resume`` continues from: the latest checkpoint that holds a resume state, or
    ``RUN/resume_point`` when that is further along (a later step); None: start over."""
    run_dir = Path(run_dir)
    latest = next((c for c in reversed(list_checkpoints(run_dir)) if has_resume_state(c)), None)
    stopped = run_dir / RESUME_POINT
    if not has_resume_state(stopped):
        return latest
    if latest is None or read_meta(stopped).step > read_meta(latest).step:
        return stopped
    return latest


def passed_over(run_dir: str | Path, point: Path | None) -> str:
    """Why ``--resume`` cannot continue from anything newer than ``point`` (None: the start),
    for the sentence that says it falls back: the saved states newer than it that lost their
    resume state, or else that nothing newer was saved."""
    run_dir = Path(run_dir)
    step = -1 if point is None else read_meta(point).step
    lost = [c for c in list_checkpoints(run_dir) if not has_resume_state(c) and read_meta(c).step > step]
    stopped = run_dir / RESUME_POINT
    if stopped.is_dir() and not has_resume_state(stopped):
        lost.append(stopped)
    if lost:
        names = ", ".join(str(p) for p in lost[-3:])
        return f"the newer {names} {'has' if len(lost) == 1 else 'have'} no {STATE_DIR}/{RESUME_STATE} (deleted or never written)"
    return "nothing newer was saved (the run ended without stopping safely: killed, or the machine went down)"


def prune_resume_states(run_dir: str | Path, keep: str | Path) -> None:
    """Delete ``trainer_state/`` from every checkpoint of ``run_dir`` written at an earlier
    step than ``keep`` (``keep_resume_state: latest``).

    Checkpoints of the same step as ``keep`` keep theirs: when one pretraining step passes
    several milestones they hold the same weights, and either can be resumed from.
    """
    keep = Path(keep)
    step = read_meta(keep).step
    for other in list_checkpoints(run_dir):
        if other.resolve() != keep.resolve() and read_meta(other).step < step:
            shutil.rmtree(other / STATE_DIR, ignore_errors=True)
