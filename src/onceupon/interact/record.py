"""The bookkeeping of an interaction run: everything it writes besides the policy's update, and
what ``--resume`` reads back, in one object, :class:`RunRecords`, that the loop calls.

The records are given what they write explicitly: the parts of the run they hold from the
start (budget, prompt source, objective, anthology, the accelerator) when they are made, the
step number and the trained model (policy, optimizer) with each call. They know nothing of
the loop itself.

- ``state.json`` (:meth:`RunRecords.write_state`, :func:`read_state`): the run's counters,
  the newest checkpoint and whether the run is done; written after every step, after that
  step's checkpoint, so it names the newest one on disk.
- One step's records (:meth:`RunRecords.write_batch`): every process's admitted stories
  appended to the anthology (anthology.py) and one metrics row (:func:`step_metrics`, plus
  any the loop adds, such as the watch's), by the main process.
- Checkpoints and the resume point (:meth:`RunRecords.save`, :meth:`RunRecords.stop`):
  weights, tokenizer and metadata plus the resume state (:meth:`RunRecords.resume_state`) in
  the one format of :mod:`onceupon.lifecycle.resume`.
- ``--resume`` (:meth:`RunRecords.restore`, :meth:`RunRecords.check_resume`): the resume state
  put back into the run; the metrics and the anthology checked against it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from onceupon.errors import UserError
from onceupon.files import atomic_write_json
from onceupon.interact.anthology import Anthology, record
from onceupon.interact.budget import Admission, Budget
from onceupon.interact.prompts import PromptSource
from onceupon.interact.validate import STATE_FILE
from onceupon.lifecycle import rng
from onceupon.lifecycle.checkpoints import CheckpointMeta, list_checkpoints, read_meta
from onceupon.lifecycle.resume import RESUME_POINT, prune_resume_states, read_resume_state, state_writer
from onceupon.lifecycle.stop import Stopped, stop_exit_code
from onceupon.schemas.run import read_interact_state, read_metrics
from onceupon.student.checkpoints import save_checkpoint
from onceupon.teacher.base import Rating
from onceupon.tracking import MetricsLogger
from onceupon.words import milestone_name

if TYPE_CHECKING:
    from onceupon.interact.objective import Objective
    from onceupon.interact.rollout import Rollout


class Stateful(Protocol):
    """A part of the run whose state a checkpoint keeps (``--resume`` puts it back)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


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


@dataclass
class Gathered:
    """One step's admitted stories from every process, as the anthology records them."""

    records: list[dict]
    entropy_sum: float  # the policy's entropy summed over their tokens
    admission: Admission


class RunRecords:
    """What an interaction run writes besides the update, and what ``--resume`` reads back.

    ``acc``: the run's accelerate.Accelerator (who the main process is, gathering);
    ``local_n``: stories per process and step; ``parts``: further state a checkpoint keeps
    under its name (the watch's), besides the objective, budget and prompt position.
    """

    def __init__(
        self,
        run_dir: Path,
        acc: Any,
        *,
        start: Path,
        pretrain_words: int,
        tokenizer: Any,
        objective: Objective,
        budget: Budget,
        prompts: PromptSource,
        anthology: Anthology,
        local_n: int,
        keep_resume_state: str,
        parts: dict[str, Stateful] | None = None,
    ):
        self.run_dir, self.acc = run_dir, acc
        self.main = acc.is_main_process
        self.start, self.pretrain_words, self.tokenizer = start, pretrain_words, tokenizer
        self.objective, self.budget, self.prompts, self.anthology = objective, budget, prompts, anthology
        self.local_n, self.keep_resume_state = local_n, keep_resume_state
        self.parts = dict(parts or {})
        self.newest: tuple[str, int] | None = None  # the newest checkpoint in RUN/checkpoints: (name, step)
        self.metrics: MetricsLogger | None = None

    @property
    def newest_path(self) -> Path:
        assert self.newest is not None
        return self.run_dir / "checkpoints" / self.newest[0]

    # ----------------------------------------------------------------- opening, closing
    def check_resume(self, ckpt: Path | None, step: int, saved_anthology: dict) -> int:
        """Before anything is written on ``--resume``: the metrics and the anthology must
        hold what ``ckpt`` recorded (the anthology is then cut back to it); returns how many
        stories were cut (told after ``ckpt``; 0 on other processes)."""
        if not self.main:
            return 0
        check_metrics(self.run_dir, ckpt, step)
        return self.anthology.resume(saved_anthology, ckpt.name if ckpt else "(none)")

    def open(self, step: int) -> None:
        """Start writing: the metrics (rows after ``step`` dropped) and ``state.json``."""
        if self.main:
            self.metrics = MetricsLogger(self.run_dir, resume_step=step)
        self.write_state(step, done=False)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()

    # ----------------------------------------------------------------- state.json
    def write_state(self, step: int, done: bool) -> None:
        if not self.main:
            return
        state = {"start_checkpoint": str(self.start), "algorithm": self.objective.name, "step": step, **counters(self.budget)}
        state.update(checkpoint=self.newest[0] if self.newest else None, done=done)
        atomic_write_json(self.run_dir / STATE_FILE, state)

    # ----------------------------------------------------------------- one step
    def gather(self, step: int, batch: Batch, include: list[bool], entropy) -> Gathered:
        """Every process's admitted stories of the step, as anthology records (on every
        process). A story the update did not learn from (False in ``include``, the update's
        mask) is recorded with a null reward."""
        from accelerate.utils import gather_object

        offset, n = self.acc.process_index * self.local_n, batch.admitted
        r = batch.rollout
        records = [
            record(step, offset + i, batch.prompts[i], r.continuations[i], batch.ratings[i],
                   batch.rewards[i] if include[i] else None, r.n_words[i], self.budget.input_words)
            for i in range(n)
        ]  # fmt: skip
        ent_sum = sum(gather_object([float((entropy * r.response_mask)[:n].sum())]))
        return Gathered(gather_object(records), ent_sum, batch.admission)

    def write_batch(self, step: int, told: Gathered, stats: dict, times: dict, extra: dict | None = None) -> None:
        """The main process appends the step's stories to the anthology and logs its metrics
        row (:func:`step_metrics`; ``extra``: more columns, such as the watch's)."""
        if self.main:
            self.anthology.append(told.records)
            row = step_metrics(told.records, stats, told.entropy_sum, times, told.admission, self.budget)
            self.metrics.log(step, {**row, **(extra or {})})

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_name(self, step: int, words: int) -> str:
        name = milestone_name(words)
        if (self.run_dir / "checkpoints" / name).exists():
            # An earlier step ended at the same word count (a batch can add no input words
            # when every reply is empty and the prompt was counted before).
            name = f"{name}_step{step}"
        return name

    def save(self, name: str, step: int, policy, optimizer) -> Path:
        """A checkpoint in RUN/checkpoints after ``step``: weights, tokenizer and metadata (HF
        format) plus everything a resume needs; it supersedes an earlier resume point."""
        final = self._write(self.run_dir / "checkpoints" / name, step, policy, optimizer)
        if self.main:
            shutil.rmtree(self.run_dir / RESUME_POINT, ignore_errors=True)
            if self.keep_resume_state == "latest":
                prune_resume_states(self.run_dir, final)
        self.acc.wait_for_everyone()
        self.newest = (name, step)
        return final

    def stop(self, step: int, saved: bool, policy, optimizer, why: str | None = None) -> None:
        """Save a resume point (unless this step wrote a checkpoint, ``saved``) and end with
        one sentence (``why``: what stopped the run, said first, exit code 2; None: a signal,
        128 + its number)."""
        self.keep_progress(step, saved, policy, optimizer)
        b = self.budget
        message = (
            f"{why + '; ' if why else ''}stopped after step {step} ({b.stories:,} stories told, "
            f"{b.input_words:,} of {b.input_budget:,} input words), nothing rated was lost; "
            f"continue with `onceupon interact --resume {self.run_dir}`."
        )
        # a signal: 128 + its number; a reason of the run's own (the watch's alarm): 2
        raise Stopped(message if self.main else "", 2 if why is not None else stop_exit_code())

    def keep_progress(self, step: int, saved: bool, policy, optimizer) -> None:
        """Save a resume point after ``step`` (unless it wrote a checkpoint, ``saved``) before
        the run ends early; every process waits for it."""
        if not saved:
            self._write(self.run_dir / RESUME_POINT, step, policy, optimizer)
        self.acc.wait_for_everyone()  # no process may exit while the main one still writes

    def resume_state(self, step: int, policy, optimizer, rngs: list[dict]) -> dict:
        """Everything a resume needs beyond the weights (``rngs``: every process's RNG states)."""
        unwrapped = self.acc.unwrap_model(policy)
        return {
            "algorithm": self.objective.name,
            "step": step,
            "value_head": None if unwrapped.value_head is None else unwrapped.value_head.state_dict(),
            "optimizer": optimizer.state_dict(),
            "algo": self.objective.state_dict(),
            "budget": self.budget.state_dict(),
            "prompts_drawn": self.prompts.drawn,
            "rng": rngs,
            "anthology": self.anthology.checkpoint(),
            **{name: part.state_dict() for name, part in self.parts.items()},
        }

    def _write(self, directory: Path, step: int, policy, optimizer) -> Path:
        from accelerate.utils import gather_object

        rngs = gather_object([rng.capture_rng()])
        if self.main:
            b = self.budget
            meta = CheckpointMeta(
                name=directory.name,
                stage="interact",
                pretrain_words=self.pretrain_words,
                interact_words=b.input_words,
                generated_words=b.generated_words,
                step=step,
                start_checkpoint=str(self.start),
                extra={"algorithm": self.objective.name, "stories": b.stories, "kl_coef": self.objective.kl_coef},
            )
            state = self.resume_state(step, policy, optimizer, rngs)
            write_state = state_writer(state, {"step": step, **counters(b)})
            save_checkpoint(directory, self.acc.unwrap_model(policy).lm, self.tokenizer, meta, write_state=write_state)
        return directory

    # ----------------------------------------------------------------- resume
    def restore(self, ckpt: Path, policy, optimizer) -> tuple[int, dict]:
        """Put back everything ``ckpt`` saved into the run's parts, ``policy`` (not yet
        wrapped by accelerate) and ``optimizer``; returns the step it was saved after and its
        record of the anthology."""
        state = read_resume_state(ckpt)
        if state["algorithm"] != self.objective.name:
            raise UserError(f"{ckpt} was written by {state['algorithm']}, not {self.objective.name}.")
        if policy.value_head is not None:
            policy.value_head.load_state_dict(state["value_head"])
        optimizer.load_state_dict(state["optimizer"])
        self.objective.load_state_dict(state["algo"])
        self.budget.load_state_dict(state["budget"])
        self.budget.cut = self.budget.cut or bool(state.get("finished"))  # states written before Budget kept it
        self.prompts.drawn = state["prompts_drawn"]
        for name, part in self.parts.items():
            if name in state:  # resume states written before the part existed: it starts afresh
                part.load_state_dict(state[name])
        step = state["step"]
        rank = self.acc.process_index
        rng.restore_rng(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        steps = [(p.name, read_meta(p).step) for p in list_checkpoints(self.run_dir)]
        reached = [(name, s) for name, s in steps if s <= step]
        self.newest = reached[-1] if reached else None  # ckpt itself, or the one before a resume point
        # Resume states written before the anthology hash existed: the story count alone.
        return step, state.get("anthology") or {"stories": self.budget.stories}


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
