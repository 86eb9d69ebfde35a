"""The run lock: one process at a time writes a run directory.

Every command that writes a run takes it first, before it loads or writes anything, so a second
process on the same directory stops at once with one sentence naming the holder's PID.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onceupon.errors import UserError

LOCK_FILE = ".lock"

_held: dict[Path, int] = {}  # run directories this process has locked -> nesting depth


def is_global_main() -> bool:
    """False in the non-main processes of ``accelerate launch``/``torchrun`` (``RANK`` > 0):
    only the global main process takes the lock, the others write under its protection."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for the whole command.

    Every command that writes a run directory (``pretrain``, ``corpus``, ``interact``,
    ``evaluate`` writing results into a run) wraps its work in ``with run_lock(run_dir):``
    once the output location and the kind of run are checked (cheap, nothing loaded), before
    it loads or writes anything. A second process on the same directory stops at once with
    one sentence naming the holder's PID.

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
