"""The RL objective: what the interaction loop needs to know about an algorithm, and nothing more.

The loop (interact.py) never names an algorithm. It asks the objective how many stories to tell
per prompt (``group_size``), whether the policy needs a value head, and hands it one
:class:`~onceupon.interact.update.Experience` per step; the objective returns the metrics to
log, under their final names, and which stories it learned from (an
:class:`~onceupon.interact.update.UpdateResult`). :func:`make_objective` is the
one place that reads ``interact.algorithm``.

A new objective is any class with the members of :class:`Objective` (no base class needed);
pass an instance to :func:`onceupon.interact.interact.interact` (``objective=...``) to run it
end to end with budgets, checkpoints, the anthology and ``--resume``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from onceupon.config import InteractConfig

if TYPE_CHECKING:  # torch is imported when an objective is made, after the run lock
    from onceupon.interact.update import Experience, UpdateResult


class Objective(Protocol):
    name: str  # recorded in state.json, checkpoint metadata and the resume state
    group_size: int  # stories told per prompt; the budget admits a group whole (1: no groups)
    needs_value_head: bool  # PolicyWithValue adds a scalar head on the last hidden state

    @property
    def kl_coef(self) -> float | None:
        """The current KL-penalty coefficient, written into checkpoint metadata (None: none)."""
        ...

    def update(self, policy, optimizer, exp: Experience, accelerator=None) -> UpdateResult:
        """Learn from one batch. ``exp.include`` marks the stories that may be learned from;
        under ``accelerate`` every process calls this with its share (gradients are averaged
        by DDP; anything decided on the whole batch must be gathered)."""
        ...

    def state_dict(self) -> dict:
        """Everything a resume needs besides weights and optimizer (e.g. a KL controller)."""
        ...

    def load_state_dict(self, state: dict) -> None: ...


def make_objective(c: InteractConfig) -> Objective:
    """The objective ``interact.algorithm`` names (the only place that reads it)."""
    if c.algorithm == "ppo":
        from onceupon.interact.ppo import PPO

        return PPO(c)
    from onceupon.interact.group import GroupObjective

    return GroupObjective(c, c.algorithm)
