"""The bookkeeping of an interaction run: everything it writes besides the policy's update, and
what ``--resume`` reads back.

- ``state.json`` (:func:`write_state`, :func:`read_state`): the run's counters, the newest
  checkpoint and whether the run is done; written after every step, after that step's
  checkpoint, so it names the newest one on disk.
- One step's records (:func:`write_batch`): every process's admitted stories appended to the
  anthology (anthology.py) and one metrics row (:func:`step_metrics`), by the main process.
- Checkpoints and the resume point (:func:`save`, :func:`stop`): weights, tokenizer and
  metadata plus the resume state (:func:`resume_state`) in the one format of
  :mod:`onceupon.lifecycle.resume`.
- ``--resume`` (:func:`restore`, :func:`check_metrics`): the resume state put back into the
  run; the metrics checked against it (the anthology checks itself, anthology.py).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from onceupon.errors import UserError
from onceupon.files import atomic_write_json
from onceupon.interact.anthology import record
from onceupon.interact.budget import Admission, Budget
from onceupon.interact.validate import STATE_FILE
from onceupon.lifecycle import rng
from onceupon.lifecycle.checkpoints import CheckpointMeta, list_checkpoints, read_meta
from onceupon.lifecycle.resume import RESUME_POINT, prune_resume_states, read_resume_state, state_writer
from onceupon.schemas.run import read_interact_state, read_metrics
from onceupon.lifecycle.stop import Stopped, stop_exit_code
from onceupon.student.checkpoints import save_checkpoint
from onceupon.teacher.base import Rating
from onceupon.words import milestone_name

if TYPE_CHECKING:
    from onceupon.interact.interact import Interaction
    from onceupon.interact.rollout import Rollout


# --------------------------------------------------------------------------- state.json
def read_state(run_dir: Path) -> dict:
    """``state.json``, every field checked (onceupon.schemas.run: a list or a wrongly typed
    counter is one sentence naming the field)."""
    return read_interact_state(run_dir / STATE_FILE).model_dump()


def counters(b: Budget) -> dict:
    return {
        "stories": b.stories,
        "input_words": b.input_words,
        "prompt_words": b.prompt_words,
        "teacher_words": b.teacher_words,
        "generated_words": b.generated_words,
        "input_budget": b.input_budget,
        "generation_budget": b.generation_budget,
    }


def write_state(s: Interaction, done: bool) -> None:
    if not s.main:
        return
    state = {"start_checkpoint": str(s.start), "algorithm": s.objective.name, "step": s.step_no, **counters(s.budget)}
    state.update(checkpoint=s.newest[0] if s.newest else None, done=done)
    atomic_write_json(s.run_dir / STATE_FILE, state)


# --------------------------------------------------------------------------- one step's records
@dataclass
class Batch:
    """One step's stories on this process, as the record needs them."""

    prompts: list[str]
    rollout: Rollout
    ratings: list[Rating]
    rewards: list[float | None]  # what each story earns (None: the teacher gave it no score)
    admission: Admission  # what the budget admitted of the whole (gathered) batch
    admitted: int  # this process's first ``admitted`` stories are part of it


def write_batch(s: Interaction, batch: Batch, include: list[bool], stats: dict, times: dict, entropy) -> None:
    """Gather every process's admitted stories; the main process appends them to the anthology
    and logs the step's metrics. A story the update did not learn from (False in ``include``,
    the update's mask) is recorded with a null reward."""
    from accelerate.utils import gather_object

    offset, n = s.acc.process_index * s.local_n, batch.admitted
    r = batch.rollout
    records = [
        record(s.step_no, offset + i, batch.prompts[i], r.continuations[i], batch.ratings[i],
               batch.rewards[i] if include[i] else None, r.n_words[i], s.budget.input_words)
        for i in range(n)
    ]  # fmt: skip
    all_records = gather_object(records)
    ent_sum = sum(gather_object([float((entropy * r.response_mask)[:n].sum())]))
    if s.main:
        s.anthology.append(all_records)
        s.metrics.log(s.step_no, step_metrics(all_records, stats, ent_sum, times, batch.admission, s.budget))


def step_metrics(recs: list[dict], stats: dict, ent_sum: float, times: dict, admission: Admission, b: Budget) -> dict:
    """The step's metrics row: teacher scores, rewards, lengths, the objective's statistics,
    timings and the budget."""
    valid = [r for r in recs if r["score"] is not None]
    rewarded = [r["reward"] for r in recs if r["reward"] is not None]
    words = [r["n_words"] for r in recs]
    m: dict[str, float | None] = {}
    for k in sorted({k for r in valid if r["scores"] for k in r["scores"]}):
        m[f"score/{k}"] = _mean([r["scores"][k] for r in valid if r["scores"] and k in r["scores"]])
    m["score/mean"] = _mean([r["score"] for r in valid])
    m["score/total"] = _mean([r["total"] for r in valid])
    m["reward/mean"] = _mean(rewarded)
    m["reward/std"] = _std(rewarded)
    m["invalid_rate"] = (sum(1 for r in recs if not r["valid"]) / len(recs)) if recs else None
    m["words/continuation"] = _mean(words)
    m["entropy/per_word"] = ent_sum / sum(words) if sum(words) else None
    m.update(stats)  # the objective's, under their final names
    step_time = sum(v for k, v in times.items() if k in ("generation", "forward", "rating_wait", "update"))
    m["perf/stories_per_s"] = len(recs) / step_time if step_time > 0 else None
    m.update({f"time/{k}": v for k, v in times.items()})
    m["budget/input_words"] = b.input_words
    m["budget/generated_words"] = b.generated_words
    m["budget/stories"] = b.stories
    m["budget/dropped_stories"] = admission.offered - admission.n
    return m


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _std(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


# --------------------------------------------------------------------------- checkpoints
def checkpoint_name(s: Interaction, words: int) -> str:
    name = milestone_name(words)
    if (s.run_dir / "checkpoints" / name).exists():
        # An earlier step ended at the same word count (a batch can add no input words
        # when every reply is empty and the prompt was counted before).
        name = f"{name}_step{s.step_no}"
    return name


def save(s: Interaction, name: str) -> Path:
    """A checkpoint in RUN/checkpoints: weights, tokenizer and metadata (HF format) plus
    everything a resume needs; it supersedes an earlier resume point."""
    final = _write(s, s.run_dir / "checkpoints" / name)
    if s.main:
        shutil.rmtree(s.run_dir / RESUME_POINT, ignore_errors=True)
        if s.c.keep_resume_state == "latest":
            prune_resume_states(s.run_dir, final)
    s.acc.wait_for_everyone()
    s.newest = (name, s.step_no)
    return final


def stop(s: Interaction, saved: bool) -> None:
    """Save a resume point (unless this step wrote a checkpoint) and end with one sentence."""
    if not saved:
        _write(s, s.run_dir / RESUME_POINT)
    s.acc.wait_for_everyone()  # no process may exit while the main one still writes
    message = (
        f"stopped after step {s.step_no} ({s.budget.stories:,} stories told, "
        f"{s.budget.input_words:,} of {s.c.input_budget:,} input words), nothing rated was lost; "
        f"continue with `onceupon interact --resume {s.run_dir}`."
    )
    raise Stopped(message if s.main else "", stop_exit_code())


def resume_state(s: Interaction, rngs: list[dict]) -> dict:
    """Everything a resume needs beyond the weights (``rngs``: every process's RNG states)."""
    policy = s.acc.unwrap_model(s.policy)
    return {
        "algorithm": s.objective.name,
        "step": s.step_no,
        "value_head": None if policy.value_head is None else policy.value_head.state_dict(),
        "optimizer": s.optimizer.state_dict(),
        "algo": s.objective.state_dict(),
        "budget": s.budget.state_dict(),
        "prompts_drawn": s.prompts.drawn,
        "rng": rngs,
        "anthology": s.anthology.checkpoint(),
    }


def _write(s: Interaction, directory: Path) -> Path:
    from accelerate.utils import gather_object

    rngs = gather_object([rng.capture_rng()])
    if s.main:
        meta = CheckpointMeta(
            name=directory.name,
            stage="interact",
            pretrain_words=s.pretrain_words,
            interact_words=s.budget.input_words,
            generated_words=s.budget.generated_words,
            step=s.step_no,
            start_checkpoint=str(s.start),
            extra={"algorithm": s.objective.name, "stories": s.budget.stories, "kl_coef": s.objective.kl_coef},
        )
        write_state = state_writer(resume_state(s, rngs), {"step": s.step_no, **counters(s.budget)})
        save_checkpoint(directory, s.acc.unwrap_model(s.policy).lm, s.tokenizer, meta, write_state=write_state)
    return directory


# --------------------------------------------------------------------------- resume
def restore(s: Interaction, ckpt: Path) -> dict:
    """Put back everything ``ckpt`` saved; returns its record of the anthology."""
    state = read_resume_state(ckpt)
    if state["algorithm"] != s.objective.name:
        raise UserError(f"{ckpt} was written by {state['algorithm']}, not {s.objective.name}.")
    if s.policy.value_head is not None:
        s.policy.value_head.load_state_dict(state["value_head"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.objective.load_state_dict(state["algo"])
    s.budget.load_state_dict(state["budget"])
    s.budget.cut = s.budget.cut or bool(state.get("finished"))  # states written before Budget kept it
    s.prompts.drawn = state["prompts_drawn"]
    s.step_no = state["step"]
    rank = s.acc.process_index
    rng.restore_rng(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
    steps = [(p.name, read_meta(p).step) for p in list_checkpoints(s.run_dir)]
    reached = [(name, step) for name, step in steps if step <= s.step_no]
    s.newest = reached[-1] if reached else None  # ckpt itself, or the one before a resume point
    # Resume states written before the anthology hash existed: the story count alone.
    return state.get("anthology") or {"stories": s.budget.stories}


def check_metrics(run_dir: Path, ckpt: Path | None, step: int) -> None:
    """``metrics.csv`` must hold one row for each step up to the checkpoint's (rows after it
    are dropped by MetricsLogger); a missing file starts a new one."""
    path = run_dir / "metrics.csv"
    if ckpt is None or not path.exists():
        return
    try:  # a row torn by a crash is past the checkpoint: read_metrics drops it, as MetricsLogger does
        steps = [int(row.get("step", -1)) for row in read_metrics(path)]
    except UserError:  # not text, not CSV, a step that is no step: it matches no checkpoint
        steps = []
    if [s for s in steps if s <= step] != list(range(1, step + 1)):
        raise UserError(
            f"{path} no longer matches {ckpt.name}: it should hold one row for each of the {step} steps "
            "the checkpoint has seen; restore it from a backup, or move it aside to continue with a new one."
        )
