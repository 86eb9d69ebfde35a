"""Divergence: a training step whose loss, logits or gradients are not finite (NaN or infinite).

A step with a non-finite loss or gradient is never applied: the optimizer does not step, as
mixed-precision trainers skip a step whose gradients overflowed. ``skip_nonfinite`` (in
``pretrain`` and ``interact``) allows that many skipped steps in a run, counted over the
whole run and kept across ``--resume``; one more, or a student whose logits are no longer
finite, stops the run with :class:`Diverged`: one sentence naming the step and the last good
checkpoint or resume point, exit code 2. Nothing of the diverged state is saved, so that
point stays what ``--resume`` continues from.

The checks cost one small device-to-host copy per optimizer step (pretraining kept none
before: a 1 x 1 flag, next to a whole forward and backward pass).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from onceupon.errors import UserError
from onceupon.lifecycle.checkpoints import read_meta
from onceupon.lifecycle.resume import find_resume_point

if TYPE_CHECKING:
    import torch


class Diverged(UserError):
    """Training produced a non-finite loss, logits or gradients more often than allowed."""


class SkippedSteps:
    """Steps not applied for a non-finite loss or gradient, counted over a whole run (a part of
    its resume state), against the ``skip_nonfinite`` it allows."""

    def __init__(self, allowed: int):
        self.allowed, self.count = allowed, 0

    def add(self, n: int = 1) -> bool:
        """Count ``n`` more skipped steps; whether the run may go on."""
        self.count += n
        return self.count <= self.allowed

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state.get("count", 0))


def all_finite(*values) -> bool:
    """Whether every value (tensors, floats, None is skipped) is finite: one device sync for
    all the tensors together."""
    import torch

    flags = []
    for v in values:
        if v is None:
            continue
        if isinstance(v, torch.Tensor):
            flags.append(torch.isfinite(v.detach()).all().reshape(1))
        elif not math.isfinite(float(v)):
            return False
    return bool(torch.cat([f.to(flags[0].device) for f in flags]).all()) if flags else True


def grad_norm(parameters) -> torch.Tensor:
    """The total L2 norm of the gradients (a device tensor; NaN or inf when any is)."""
    import torch

    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


def last_good(run_dir: Path) -> str:
    """Where the run continues from after a divergence, for the message: the latest checkpoint
    or resume point holding a resume state (:func:`find_resume_point`)."""
    point = find_resume_point(run_dir)
    if point is None:
        return "no checkpoint was written before it"
    return f"nothing after {point} (step {read_meta(point).step}) was saved"


def message(stage: str, step: int, what: str, run_dir: Path, allowed: int | None) -> str:
    """The one sentence a divergence stops with. ``what``: which values were not finite;
    ``allowed``: the ``skip_nonfinite`` setting the step went past, or None when skipping
    cannot help (the student's own logits are no longer finite)."""
    if allowed is None:
        why, fix = "an earlier update broke the weights", "start a new run"
    else:
        why = f"one skipped step more than {stage}.skip_nonfinite={allowed} allows"
        fix = f"start a new run, or raise {stage}.skip_nonfinite and continue with `onceupon {stage} --resume {run_dir}`"
    return f"Training diverged at step {step}: {what} not finite ({why}); {last_good(run_dir)}; lower {stage}.learning_rate and {fix}."
