"""Run handling shared by every stage that writes a run directory: one place, one set of rules.

- **RNG state**: :func:`capture_rng` / :func:`restore_rng` save and restore Python's, NumPy's,
  torch's and (where present) CUDA's generators, so a resumed run draws exactly the numbers an
  uninterrupted run would have drawn.
- **Precision**: :func:`resolve_precision` turns ``precision: auto`` into ``bf16`` on a CUDA GPU
  that supports it and ``fp32`` elsewhere (pretraining and interaction resolve it the same way).
- **Resume states**: :func:`prune_resume_states` keeps ``trainer_state/`` (optimizer, RNG,
  counters; large) only where ``keep_resume_state: latest`` wants it.
  :func:`resume_from` picks what ``--resume`` continues from (a checkpoint or ``RUN/resume_point``).
- **New run or resume**: :func:`check_new_run` refuses a directory that already holds the
  stage's run; :func:`check_resume` refuses one that holds none.
- **The run lock**: :func:`run_lock` makes sure one process at a time writes a run directory.
- **Stopping safely**: :func:`stop_on_signals` turns the first Ctrl-C or SIGTERM into a request
  (:func:`stop_requested`) that a training loop honours after its current step; it then saves a
  resume point and raises :class:`Stopped`, which the CLI prints as one sentence.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from onceupon.errors import UserError
from onceupon.student.checkpoints import STATE_DIR, list_checkpoints, read_meta

LOCK_FILE = ".lock"
RESUME_POINT = "resume_point"  # where a stop between two checkpoints leaves its resume state


# --------------------------------------------------------------------------- RNG
def capture_rng() -> dict:
    """The state of every random generator a training step may draw from (this process)."""
    import torch

    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(state: dict) -> None:
    """Restore what :func:`capture_rng` saved.

    Keys that are absent or None are left alone: interaction resume states written before
    NumPy's state was saved have no ``numpy`` key, and a state saved on a CPU has no CUDA part.
    """
    import torch

    random.setstate(state["python"])
    if state.get("numpy") is not None:
        np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- precision
def resolve_precision(setting: str) -> str:
    """``"bf16"`` or ``"fp32"`` for a ``precision`` setting (``auto``: bf16 on a CUDA GPU that
    supports it, else fp32; CPUs run fp32 because bf16 autocast there is slower, not faster)."""
    if setting in ("bf16", "fp32"):
        return setting
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def mixed_precision(setting: str) -> str:
    """The ``accelerate.Accelerator(mixed_precision=...)`` value for a ``precision`` setting."""
    return "bf16" if resolve_precision(setting) == "bf16" else "no"


# --------------------------------------------------------------------------- resume states
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


def resume_from(run_dir: str | Path, latest: Path | None, state_file: str) -> Path | None:
    """What ``--resume`` continues from: ``latest`` (the stage's latest checkpoint it can
    resume, or None), or ``RUN/resume_point`` (a stop between checkpoints, holding
    ``trainer_state/STATE_FILE``) when that is further along."""
    stopped = Path(run_dir) / RESUME_POINT
    if not (stopped / STATE_DIR / state_file).is_file():
        return latest
    if latest is None or read_meta(stopped).step > read_meta(latest).step:
        return stopped
    return latest


# --------------------------------------------------------------------------- new run or resume
_RUN_KIND = {"pretrain": "a pretraining run", "interact": "an interaction run", "corpus": "a corpus"}


def check_new_run(run_dir: str | Path, command: str, markers: Iterable[str]) -> None:
    """Refuse to start a new ``onceupon COMMAND`` run where one exists: any of ``markers``
    (paths relative to ``run_dir``) present means the directory already holds such a run.

    Under ``accelerate launch`` only the global main process checks: the others start at
    slightly different times and could see the first files the main process writes.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a directory.")
    if not is_global_main():
        return
    if any((run_dir / marker).exists() for marker in markers):
        kind = _RUN_KIND.get(command, f"an `onceupon {command}` run")
        raise UserError(
            f"{run_dir} already holds {kind}; continue it with `onceupon {command} --resume {run_dir}` or pick a new --out."
        )


def check_resume(run_dir: str | Path, command: str, marker: str) -> None:
    """Refuse ``onceupon COMMAND --resume`` of a directory that holds no such run (``marker``,
    a path relative to ``run_dir``, is absent)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir} is not a directory.")
    if not (run_dir / marker).exists():
        kind = _RUN_KIND.get(command, f"an `onceupon {command}` run")
        raise UserError(f"{run_dir} is not {kind} to resume (it has no {marker}).")


# --------------------------------------------------------------------------- the run lock
_held: dict[Path, int] = {}  # run directories this process has locked -> nesting depth


def is_global_main() -> bool:
    """False in the non-main processes of ``accelerate launch``/``torchrun`` (``RANK`` > 0):
    only the global main process takes the lock, the others write under its protection."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for the whole command.

    Every command that writes a run directory (``pretrain``, ``corpus``, ``interact``,
    ``evaluate`` writing results into a run) wraps its work in ``with run_lock(run_dir):``,
    after its settings are validated and before anything is written. A second process on the
    same directory stops at once with one sentence naming the holder's PID.

    The lock is an OS lock (``flock``) on ``RUN/.lock``, whose text is the holder's PID: the
    kernel drops it when the process ends in any way, ``kill -9`` included, so it can never
    be stale (a ``.lock`` file a killed process leaves behind is simply locked anew). The
    file is removed on release. It creates ``run_dir`` if needed (and removes it again if the
    command leaves it empty). Re-entering it in the same process is a no-op, and
    under ``accelerate launch`` only the global main process takes it.
    """
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held or not is_global_main():
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        return
    try:
        import fcntl  # noqa: F401
    except ImportError:  # not POSIX (Windows): no lock, the rest works the same
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = _acquire(run_dir)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        # Remove the file while still holding the lock (a process that opened it meanwhile
        # sees the inode change in _acquire and tries again), then release by closing.
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
        os.close(fd)
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()  # the command failed before writing anything: leave no directory


def _acquire(run_dir: Path) -> int:
    """Open and ``flock`` ``RUN/.lock`` without waiting; returns the descriptor holding it."""
    import fcntl

    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{run_dir} is in use by another onceupon process (PID {holder}); wait for it to end or stop it first."
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


# --------------------------------------------------------------------------- stopping safely
class Stopped(Exception):
    """A training loop stopped at a safe point on request; the message says how to resume.
    The CLI prints it as one sentence and exits with ``exit_code`` (128 + the signal)."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


_stop_signal: int | None = None  # the signal that asked to stop, while stop_on_signals is active
_interrupt_signal: int = signal.SIGINT  # the last signal that raised KeyboardInterrupt


def stop_requested() -> bool:
    """True once Ctrl-C or SIGTERM arrived inside :func:`stop_on_signals`; a loop checks it
    after each step (all processes must agree: reduce it across processes under DDP)."""
    return _stop_signal is not None


def stop_agreed(accelerator) -> bool:
    """Whether a training loop should stop now: every process must take the same decision at
    the same step, so under DDP the flags are combined (one tiny all-reduce per step)."""
    if accelerator.num_processes == 1:
        return stop_requested()
    import torch

    flag = torch.tensor([1.0 if stop_requested() else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def stop_exit_code() -> int:
    """128 + the signal that asked to stop or interrupted (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (_stop_signal or _interrupt_signal)


def _request_stop(signum, frame) -> None:
    global _stop_signal
    if _stop_signal is not None:
        raise KeyboardInterrupt  # the second Ctrl-C / SIGTERM: abort at once
    _stop_signal = signum
    if is_global_main():  # one notice for the whole run, not one per process
        import sys

        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\n{name}: stopping after the current step (again to abort at once).", file=sys.stderr, flush=True)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside, the first SIGINT or SIGTERM only sets :func:`stop_requested`; a second one
    raises ``KeyboardInterrupt`` at once. Outside (and in threads other than the main one,
    where Python cannot install handlers) signals behave as before.

    Usage in a loop::

        with stop_on_signals():
            while step < n_steps:
                train_one_step(); step += 1
                if stop_requested():
                    save_resume_point()
                    raise Stopped(f"stopped after step {step}; continue with `onceupon pretrain --resume {run}`.",
                                  stop_exit_code())
    """
    global _stop_signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _stop_signal = None
    for s in previous:
        signal.signal(s, _request_stop)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop_signal = None


def terminate_as_interrupt() -> None:
    """Make SIGTERM behave like Ctrl-C for the whole process (``cli.main`` calls this): outside
    a :func:`stop_on_signals` block it raises ``KeyboardInterrupt``, so cleanup code runs
    instead of the process vanishing mid-write."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame) -> None:
    global _interrupt_signal
    _interrupt_signal = signum
    raise KeyboardInterrupt
