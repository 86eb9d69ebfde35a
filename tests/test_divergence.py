"""Divergence: a non-finite loss, logits or gradients stop a run with one sentence naming the step
and the last good checkpoint, which stays as it was; ``skip_nonfinite`` allows skipped steps.

Real tiny students, real runs: an absurd learning rate (1e10) for the real thing, and a PPO whose
loss is NaN once (a one-off overflow) for the skipped step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import assert_one_sentence, run_cli
from interact_support import KeywordTeacher
from onceupon.config import load_config
from onceupon.interact.interact import interact
from onceupon.interact.ppo import PPO
from onceupon.lifecycle.checkpoints import list_checkpoints, read_meta
from onceupon.lifecycle.divergence import Diverged

ROOT = Path(__file__).resolve().parents[1]


def config(*overrides: str):
    base = ["interact.batch_size=8", "interact.mini_batch_size=8", "interact.max_new_tokens=12",
            "interact.learning_rate=1e-4", "interact.teacher_check=skip"]  # fmt: skip
    return load_config(None, base + list(overrides))


def weights(checkpoint: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(checkpoint / "model.safetensors")


class OnceNaN(PPO):
    """PPO whose first gradient step in its ``at``-th update (counted from 1 in this process)
    has a NaN loss, as a one-off overflow would."""

    def __init__(self, cfg, at: int):
        super().__init__(cfg)
        self.at, self.updates, self.poisoned = at, 0, False

    def update(self, policy, optimizer, exp, accelerator=None):
        self.updates += 1
        return super().update(policy, optimizer, exp, accelerator)

    def loss(self, part, logprobs, vpreds, n_tok):
        loss, stats = super().loss(part, logprobs, vpreds, n_tok)
        if self.updates == self.at and not self.poisoned:
            self.poisoned = True
            loss = loss * float("nan")
        return loss, stats


# --------------------------------------------------------------------------- interact
def test_an_absurd_learning_rate_stops_interaction_with_one_sentence(tiny_checkpoint, tmp_path):
    """lr 1e10: the first step's later gradient steps are NaN. Before, the run logged a NaN loss
    and crashed in the next step's sampling with a traceback."""
    run = tmp_path / "run"
    with pytest.raises(Diverged, match=r"^Training diverged at step 1: the loss or gradients are not finite") as e:
        interact(config("interact.learning_rate=1e10", "interact.max_steps=3"), tiny_checkpoint, run, teacher=KeywordTeacher())
    assert "no checkpoint was written before it" in str(e.value) and "interact.skip_nonfinite" in str(e.value)
    assert "\n" not in str(e.value)
    assert f"error: {e.value}" in (run / "log.txt").read_text()
    assert not (run / "checkpoints").exists() and not (run / "resume_point").exists()
    # Skipping is no cure for broken weights: the next step's sampling finds them.
    run2 = tmp_path / "run2"
    cfg = config("interact.learning_rate=1e10", "interact.max_steps=3", "interact.skip_nonfinite=100")
    with pytest.raises(Diverged, match=r"^Training diverged at step 2: the student's logits are not finite"):
        interact(cfg, tiny_checkpoint, run2, teacher=KeywordTeacher())
    assert re.search(r"step 1: the loss or gradients of \d gradient step\(s\) are not finite; they were skipped", (run2 / "log.txt").read_text())


def test_a_nonfinite_step_is_skipped_when_allowed_and_stops_the_run_when_not(tiny_checkpoint, tmp_path):
    allowed = config("interact.max_steps=2", "interact.skip_nonfinite=1", "interact.checkpoint_every=40")
    straight = tmp_path / "straight"
    final = interact(allowed, tiny_checkpoint, straight, teacher=KeywordTeacher(), objective=OnceNaN(allowed.interact, at=2))
    rows = _metrics(straight)
    assert [float(r["update/skipped_nonfinite"]) for r in rows] == [0, 1]
    assert "step 2: the loss or gradients of 1 gradient step(s) are not finite; they were skipped (1 of 1 allowed" in (
        straight / "log.txt"
    ).read_text()
    import numpy as np

    assert all(np.isfinite(w).all() for w in weights(final).values())

    # Not allowed: the run stops at step 2, naming the checkpoint of step 1, which stays as it was.
    run = tmp_path / "run"
    strict = config("interact.max_steps=2", "interact.checkpoint_every=40")
    with pytest.raises(Diverged) as e:
        interact(strict, tiny_checkpoint, run, teacher=KeywordTeacher(), objective=OnceNaN(strict.interact, at=2))
    [good] = list_checkpoints(run)
    assert read_meta(good).step == 1
    assert str(e.value).startswith("Training diverged at step 2: the loss or gradients are not finite (one skipped step more than interact.skip_nonfinite=0 allows)")
    assert f"nothing after {good} (step 1) was saved" in str(e.value)
    wa, wb = weights(good), weights(straight / "checkpoints" / good.name)  # the same first step: the same weights
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 1 and not state["done"]
    # Allowing the skip on --resume continues from there and ends exactly like the run that
    # allowed it from the start.
    resumed = interact(allowed, None, run, resume=True, teacher=KeywordTeacher(), objective=OnceNaN(allowed.interact, at=1))
    wa, wb = weights(final), weights(resumed)
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def _metrics(run: Path) -> list[dict]:
    import csv

    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- pretrain
def test_an_absurd_learning_rate_stops_pretraining_keeping_the_last_good_checkpoint(tmp_path):
    """lr 1e10 (warmup: 0 at step 1): step 2 applies it, step 3's loss is NaN. Before, the run
    went on and wrote NaN checkpoints at every milestone, exit 0."""
    run = tmp_path / "run"
    res = run_cli(
        "pretrain", "--out", str(run), "--config", str(ROOT / "configs" / "tiny.yaml"),
        "--set", "corpus.word_budget=3K", "--set", "pretrain.epochs=1", "--set", "pretrain.learning_rate=1e10",
        "--set", "pretrain.milestone_unit=400",
        env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    line = assert_one_sentence(res, "Training diverged at step 3: the loss or gradients are not finite", "pretrain.skip_nonfinite")
    steps = {p.name: read_meta(p).step for p in list_checkpoints(run)}
    assert sorted(steps.values()) == [1, 2], steps  # the milestones of steps 1 and 2, nothing after
    newest = max(steps, key=steps.get)
    assert f"{run / 'checkpoints' / newest} (step 2) was saved" in line
    assert line in (run / "log.txt").read_text()
    assert not (run / "resume_point").exists()
