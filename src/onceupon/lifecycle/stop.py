"""Stopping safely: the first Ctrl-C or SIGTERM inside :func:`stop_on_signals` becomes a request
(:func:`stop_requested`) that a training loop honours after its current step; it then saves a
resume point and raises :class:`Stopped`, which the CLI prints as one sentence. A second signal
aborts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from onceupon.lifecycle.lock import is_global_main

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
