"""``onceupon interact``: tell stories, get them rated, learn from the ratings, on a word budget.

One RL step, top to bottom (:meth:`Interaction.step`):

1. take the step's prompts (``group_size`` copies of each when the objective learns from
   groups) and sample a story for each, the whole batch at once (rollout.py);
2. hand the stories to the teacher in a background thread and, meanwhile, score their tokens
   under the policy and the frozen reference (nothing there waits for the ratings);
3. admit the longest prefix of the batch that fits the word budgets (budget.py), turn the
   ratings into rewards (reward.py) and let the objective update the policy on one
   :class:`Experience` (objective.py names the algorithms; the loop knows none by name);
4. append the batch to the anthology, log metrics, save a checkpoint when the input words
   crossed a ``checkpoint_every`` milestone, then write ``state.json`` (so it names the
   newest checkpoint on disk).

The run ends when the input or generation budget is spent (the last batch cut to fit) or
after ``max_steps``; a final checkpoint holds the end state.

Unattended runs: everything that can be checked is checked before the run directory is made
(checks.py); one process at a time holds the run (``RUN/.lock``, a second one is refused
naming the holder's PID). The first Ctrl-C or SIGTERM stops after the current step, saves
``RUN/resume_point`` (unless the step just wrote a checkpoint) and says how to resume; a
second one aborts at once. ``--resume`` continues from the latest checkpoint or resume point
with everything it saved (weights, value head, optimizer, objective state, RNG states, budget
counters, prompt position), after checking that the anthology and metrics still hold what the
checkpoint recorded (count and hash of the stories), then cuts them back to it, so a killed,
stopped or crashed run ends exactly like an uninterrupted one.

Data parallel: under ``accelerate launch`` every process tells, rates and scores its share of
the batch; the budget is decided on the gathered batch in rank order (the same on every
process), gradients are averaged by DDP, and the main process writes files.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import torch

from onceupon import preflight
from onceupon.config import ExperimentConfig, load_config, save_config
from onceupon.errors import UserError
from onceupon.files import atomic_write_json
from onceupon.interact import anthology as anthology_file
from onceupon.interact.anthology import Anthology, record
from onceupon.interact.budget import Admission, Budget
from onceupon.interact.checks import Student, check_fits, load_student, validate
from onceupon.interact.objective import Objective, make_objective
from onceupon.interact.prompts import PromptSource, load_prompts
from onceupon.interact.reward import story_reward
from onceupon.interact.rollout import PolicyWithValue, Rollout, generate_rollout, score_rollout
from onceupon.interact.update import Experience
from onceupon.lifecycle import lock, resume as resume_state, rng, stop
from onceupon.lifecycle.checkpoints import CheckpointMeta, list_checkpoints, read_meta
from onceupon.lifecycle.precision import mixed_precision
from onceupon.student.checkpoints import save_checkpoint
from onceupon.student.model import context_length
from onceupon.teacher.base import Rating, Story, Teacher
from onceupon.teacher.pipeline import RubricTeacher
from onceupon.tracking import RUN_LOG, MetricsLogger, progress_bar, run_log
from onceupon.words import crossed, every_milestones, milestone_name

STATE_FILE = "state.json"
RESUME_POINT = resume_state.RESUME_POINT
RUN_MARKERS = (STATE_FILE, anthology_file.FILE)  # a directory with either holds an interaction run


# --------------------------------------------------------------------------- entry points
def run(cfg: ExperimentConfig | None, start: str | Path | None, run_dir: str | Path, resume: bool = False) -> None:
    """CLI entry: a new run (``cfg``, ``start``) or ``--resume`` of ``run_dir``."""
    run_dir = Path(run_dir)
    path = interact(None, None, run_dir, resume=True) if resume else interact(cfg, start, run_dir)
    state = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8"))
    print(
        f"interaction finished after {state['step']} steps, {state['stories']} stories, "
        f"{state['input_words']:,} input words, {state['generated_words']:,} generated words; "
        f"final checkpoint {path}"
    )


def interact(
    cfg: ExperimentConfig | None,
    start: str | Path | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    teacher: Teacher | None = None,
    objective: Objective | None = None,
) -> Path:
    """Run (or resume) an interaction run; returns the final checkpoint's directory.

    ``teacher`` replaces the one ``cfg.teacher`` describes, ``objective`` the one
    ``interact.algorithm`` names (programmatic use, new objectives, tests).
    """
    run_dir = Path(run_dir)
    if resume:
        resume_state.check_resume(run_dir, "interact", STATE_FILE)
        preflight.output_dir(run_dir, "--resume")
        cfg = load_config(run_dir / "config.yaml")
        state = _read_state(run_dir)
        if state.get("done"):
            final = run_dir / "checkpoints" / state["checkpoint"]
            print(f"{run_dir} is already complete; final checkpoint {final}")
            return final
        start = state["start_checkpoint"]
    else:
        if cfg is None or start is None:
            raise UserError("A new interaction run needs a config and a start checkpoint.")
        preflight.output_dir(run_dir)
        resume_state.check_new_run(run_dir, "interact", RUN_MARKERS)
    objective = objective or make_objective(cfg.interact)
    validate(cfg.interact, objective)
    prompts = load_prompts(cfg.interact)
    student = load_student(Path(start))
    check_fits(cfg.interact, student, prompts)
    with lock.run_lock(run_dir), run_log(run_dir / RUN_LOG):
        if not resume:
            resume_state.check_new_run(run_dir, "interact", RUN_MARKERS)  # again: another process may have begun
        session = Interaction(cfg, student, prompts, run_dir, objective, teacher=teacher, resume=resume)
        try:
            return session.train()
        finally:
            session.close()


# --------------------------------------------------------------------------- the run
class Interaction:
    def __init__(
        self,
        cfg: ExperimentConfig,
        student: Student,
        prompts: list[str],
        run_dir: Path,
        objective: Objective,
        *,
        teacher: Teacher | None = None,
        resume: bool = False,
    ):
        from accelerate import Accelerator

        self.cfg = cfg
        self.c = c = cfg.interact
        self.run_dir = run_dir
        self.start = student.path.resolve()
        self.acc = Accelerator(mixed_precision=mixed_precision(c.precision))
        self.main = self.acc.is_main_process
        world = self.acc.num_processes
        if c.batch_size % world:
            raise UserError(f"interact.batch_size ({c.batch_size}) must be divisible by the {world} processes.")
        self.local_n = c.batch_size // world
        if self.local_n % objective.group_size:
            raise UserError("Each process's share of the batch must hold whole groups (batch_size / processes / group_size).")

        # What the run is made of ------------------------------------------------------
        self.prompts = PromptSource(prompts, c.seed)
        self.tokenizer = student.tokenizer
        self.pretrain_words = student.meta.pretrain_words if student.meta else 0
        self.objective = objective
        self.budget = Budget(c.input_budget, c.generation_budget, c.count_prompt)
        self.step_no = 0
        self.milestones = every_milestones(c.checkpoint_every, c.input_budget)
        self.last_ckpt: tuple[str, int] | None = None  # the newest checkpoint in RUN/checkpoints: (name, step)
        self.finished = False  # set when a batch was cut: the budget cannot hold another group
        self.anthology = Anthology(run_dir)

        resume_from = self._resume_point() if resume else None
        saved_anthology = self._build_models(student.model, resume_from)
        if self.main and resume:  # checked before anything is written
            self._check_metrics(resume_from)
            self.anthology.resume(saved_anthology, resume_from.name if resume_from else "(none)")

        self.teacher = teacher
        self._own_teacher = teacher is None
        self._show = lambda text: None  # the progress line's status text, once train() shows one
        if self.teacher is None:
            from onceupon.teacher.factory import build_teacher

            self.teacher = build_teacher(cfg.teacher)
        self.metrics = None
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                save_config(cfg, run_dir)
            self.metrics = MetricsLogger(run_dir, resume_step=self.step_no)
            self._write_state(done=False)
        self.acc.wait_for_everyone()

    def _build_models(self, start_model, resume_from: Path | None) -> dict:
        """Policy (with a value head if the objective needs one), frozen reference, optimizer;
        restored from ``resume_from`` when given. Returns what the anthology held there."""
        c = self.c
        # The policy starts as the checkpoint being resumed, else as the start checkpoint; the
        # reference is always the start checkpoint, frozen.
        lm = start_model if resume_from is None else _resumed_model(resume_from)
        for module in lm.modules():  # no dropout in RL: a ratio must be exactly 1 before the first step
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        # Seeded before the value head is initialised; each process samples its own stories.
        torch.manual_seed(c.seed + self.acc.process_index)
        random.seed(c.seed + self.acc.process_index)
        self.policy = PolicyWithValue(lm, self.objective.needs_value_head)
        self.ref = PolicyWithValue(start_model if resume_from is not None else _copy_model(start_model), False)
        self.ref.requires_grad_(False).eval()
        self.optimizer = torch.optim.Adam([p for p in self.policy.parameters() if p.requires_grad], lr=c.learning_rate)
        saved_anthology = {"stories": 0}
        if resume_from is not None:
            saved_anthology = self._load_state(resume_from)
        self.policy, self.optimizer = self.acc.prepare(self.policy, self.optimizer)
        self.ref.to(self.acc.device)
        self.policy.train()  # with dropout at 0, train and eval mode compute the same numbers
        return saved_anthology

    # ----------------------------------------------------------------- resume
    def _resume_point(self) -> Path | None:
        """What ``--resume`` continues from: the latest checkpoint that holds resume state, or
        ``RUN/resume_point`` (a stop between checkpoints) when that is further along; None:
        start over."""
        return resume_state.find_resume_point(self.run_dir)

    def _load_state(self, ckpt: Path) -> dict:
        """Restore everything ``ckpt`` saved; returns its record of the anthology."""
        state = resume_state.read_resume_state(ckpt)
        if state["algorithm"] != self.objective.name:
            raise UserError(f"{ckpt} was written by {state['algorithm']}, not {self.objective.name}.")
        if self.policy.value_head is not None:
            self.policy.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.objective.load_state_dict(state["algo"])
        self.budget.load_state_dict(state["budget"])
        self.prompts.drawn = state["prompts_drawn"]
        self.step_no = state["step"]
        self.finished = state["finished"]
        rank = self.acc.process_index
        rng.restore_rng(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        steps = [(p.name, read_meta(p).step) for p in list_checkpoints(self.run_dir)]
        checkpoints = [(name, step) for name, step in steps if step <= self.step_no]
        self.last_ckpt = checkpoints[-1] if checkpoints else None  # ckpt itself, or the one before a resume point
        # Resume states written before the anthology hash existed: the story count alone.
        return state.get("anthology") or {"stories": self.budget.stories}

    def _check_metrics(self, ckpt: Path | None) -> None:
        """``metrics.csv`` must hold one row for each step up to the checkpoint's (rows after it
        are dropped by MetricsLogger); a missing file starts a new one."""
        path = self.run_dir / "metrics.csv"
        if ckpt is None or not path.exists():
            return
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            if lines and not lines[-1].endswith("\n"):
                lines.pop()  # a row torn by a crash: past the checkpoint, MetricsLogger drops it
            steps = [int(float(row["step"])) for row in csv.DictReader(lines)]
        except (ValueError, TypeError, KeyError, csv.Error, UnicodeDecodeError):
            steps = []
        if [s for s in steps if s <= self.step_no] != list(range(1, self.step_no + 1)):
            raise UserError(
                f"{path} no longer matches {ckpt.name}: it should hold one row for each of the {self.step_no} steps "
                "the checkpoint has seen; restore it from a backup, or move it aside to continue with a new one."
            )

    # ----------------------------------------------------------------- checkpoints
    def save(self, name: str) -> Path:
        """A checkpoint in RUN/checkpoints: weights, tokenizer and metadata (HF format) plus
        everything a resume needs; it supersedes an earlier resume point."""
        final = self._save(self.run_dir / "checkpoints" / name)
        if self.main:
            shutil.rmtree(self.run_dir / RESUME_POINT, ignore_errors=True)
            if self.c.keep_resume_state == "latest":
                resume_state.prune_resume_states(self.run_dir, final)
        self.acc.wait_for_everyone()
        self.last_ckpt = (name, self.step_no)
        return final

    def _save(self, directory: Path) -> Path:
        from accelerate.utils import gather_object

        rngs = gather_object([rng.capture_rng()])
        if self.main:
            policy = self.acc.unwrap_model(self.policy)
            state = {
                "algorithm": self.objective.name,
                "step": self.step_no,
                "value_head": None if policy.value_head is None else policy.value_head.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "algo": self.objective.state_dict(),
                "budget": self.budget.state_dict(),
                "prompts_drawn": self.prompts.drawn,
                "finished": self.finished,
                "rng": rngs,
                "anthology": self.anthology.checkpoint(),
            }

            meta = CheckpointMeta(
                name=directory.name,
                stage="interact",
                pretrain_words=self.pretrain_words,
                interact_words=self.budget.input_words,
                generated_words=self.budget.generated_words,
                step=self.step_no,
                start_checkpoint=str(self.start),
                extra={
                    "algorithm": self.objective.name,
                    "stories": self.budget.stories,
                    "kl_coef": self.objective.kl_coef,
                },
            )
            write_state = resume_state.state_writer(state, {"step": self.step_no, **self._counters()})
            save_checkpoint(directory, policy.lm, self.tokenizer, meta, write_state=write_state)
        return directory

    def _checkpoint_name(self, words: int) -> str:
        name = milestone_name(words)
        if (self.run_dir / "checkpoints" / name).exists():
            # An earlier step ended at the same word count (a batch can add no input words
            # when every reply is empty and the prompt was counted before).
            name = f"{name}_step{self.step_no}"
        return name

    # ----------------------------------------------------------------- the loop
    def train(self) -> Path:
        c = self.c
        with progress_bar("words") as bar, stop.stop_on_signals():
            task = bar.add_task(f"interact ({self.objective.name})", total=c.input_budget, completed=self.budget.input_words)
            # A slow teacher can take minutes per step: the line says how far its rating is.
            self._show = lambda text: bar.update(task, status=text)
            while not self._over():
                before = self.budget.input_words
                self.finished = self.step()
                bar.update(task, completed=self.budget.input_words)
                hit = crossed(self.milestones, before, self.budget.input_words)
                if hit and not self.finished:
                    self.save(self._checkpoint_name(max(hit)))
                if self.main:
                    self._write_state(done=False)  # after the checkpoint: it names the newest one
                if not self._over() and stop.stop_agreed(self.acc):
                    self._stop(saved=bool(hit))
            self.finished = True
            if self.last_ckpt is None or self.last_ckpt[1] != self.step_no:
                self.save(self._checkpoint_name(self.budget.input_words))
            if self.main:
                self._write_state(done=True)
        return self.run_dir / "checkpoints" / self.last_ckpt[0]

    def _rate(self, stories: list[Story]) -> list[Rating]:
        """The teacher's ratings of a step (in the teacher's thread); the pipeline's teacher also
        reports each finished rating, which the progress line shows with its requests in flight."""
        if not isinstance(self.teacher, RubricTeacher):  # a programmatic teacher: rate() only
            return self.teacher.rate(stories)
        rated = iter(range(1, len(stories) + 1))

        def on_rated(i: int, rating: Rating) -> None:
            status = self.teacher.status()
            self._show(f"step {self.step_no}: {next(rated)}/{len(stories)} rated" + (f", {status}" if status else ""))

        return self.teacher.rate(stories, on_rated=on_rated)

    def _over(self) -> bool:
        c = self.c
        return self.finished or (c.max_steps is not None and self.step_no >= c.max_steps) or self.budget.spent

    def _stop(self, saved: bool) -> None:
        """Save a resume point (unless this step wrote a checkpoint) and end with one sentence."""
        if not saved:
            self._save(self.run_dir / RESUME_POINT)
        self.acc.wait_for_everyone()  # no process may exit while the main one still writes
        message = (
            f"stopped after step {self.step_no} ({self.budget.stories:,} stories rated, "
            f"{self.budget.input_words:,} of {self.c.input_budget:,} input words), nothing rated was lost; "
            f"continue with `onceupon interact --resume {self.run_dir}`."
        )
        raise stop.Stopped(message if self.main else "", stop.stop_exit_code())

    def _step_prompts(self) -> list[str]:
        group = self.objective.group_size
        prompts = [p for p in self.prompts.take(self.c.batch_size // group) for _ in range(group)]
        rank = self.acc.process_index
        return prompts[rank * self.local_n : (rank + 1) * self.local_n]

    def step(self) -> bool:
        """One RL step; returns True when the budget cut the batch (the run is over)."""
        from accelerate.utils import gather_object

        c = self.c
        self.step_no += 1
        t0 = time.perf_counter()
        prompts = self._step_prompts()
        rollout = self._tell(prompts)
        t_gen = time.perf_counter()

        # The teacher reads while we score tokens: neither needs the other's result.
        stories = [Story(p, s, id=f"{self.step_no}-{i}") for i, (p, s) in enumerate(zip(prompts, rollout.continuations))]
        pending = _in_background(self._rate, stories)
        with self.acc.autocast():
            old_logprobs, values, entropy = score_rollout(self.policy, rollout, c.temperature, c.micro_batch_size)
            ref_logprobs, _, _ = score_rollout(self.ref, rollout, c.temperature, c.micro_batch_size, entropy=False)
        t_fwd = time.perf_counter()
        ratings: list[Rating] = pending.result()
        t_rate = time.perf_counter()
        if len(ratings) != len(stories):
            raise RuntimeError(f"the teacher returned {len(ratings)} ratings for {len(stories)} stories")

        # Budget: decided on the whole (gathered) batch, identically on every process.
        admission = self.budget.admit(
            gather_object(list(prompts)),
            gather_object([_reply_text(r) for r in ratings]),
            gather_object(list(rollout.n_words)),
            self.objective.group_size,
        )
        offset = self.acc.process_index * self.local_n
        admitted = max(0, min(self.local_n, admission.n - offset))

        rewards = [
            story_reward(r, w, length_bonus=c.length_bonus, length_norm_words=c.length_norm_words)
            for r, w in zip(ratings, rollout.n_words)
        ]
        include = [i < admitted and rw is not None for i, rw in enumerate(rewards)]
        exp = Experience(
            sequences=rollout.sequences,
            attention_mask=rollout.attention_mask,
            prompt_width=rollout.prompt_width,
            response_mask=rollout.response_mask,
            old_logprobs=old_logprobs,
            ref_logprobs=ref_logprobs,
            values=values,
            rewards=torch.tensor([rw if inc else 0.0 for rw, inc in zip(rewards, include)], device=self.acc.device),
            include=torch.tensor(include, device=self.acc.device),
        )
        stats, trained = {}, include
        if sum(gather_object([sum(include)])) > 0:  # every process updates, or none does
            result = self.objective.update(self.policy, self.optimizer, exp, accelerator=self.acc)
            stats, trained = result.metrics, result.trained.tolist()
        t_upd = time.perf_counter()
        self.budget.commit(admission)

        # A story the update did not learn from (no reward, or a group without a baseline)
        # is recorded with a null reward.
        records = [
            record(self.step_no, offset + i, prompts[i], rollout.continuations[i], ratings[i],
                   rewards[i] if trained[i] else None, rollout.n_words[i], self.budget.input_words)
            for i in range(admitted)
        ]  # fmt: skip
        ent_sum = float((entropy * rollout.response_mask)[:admitted].sum())
        # rating: the teacher's wall time (overlapped with the forward passes);
        # rating_wait: how much longer than the forward passes it took.
        times = {"generation": t_gen - t0, "forward": t_fwd - t_gen, "rating": t_rate - t_gen,
                 "rating_wait": t_rate - t_fwd, "update": t_upd - t_rate}  # fmt: skip
        self._write_batch(records, ent_sum, stats, times, admission)
        return admission.cut

    def _tell(self, prompts: list[str]) -> Rollout:
        """The policy samples one story per prompt."""
        c = self.c
        policy = self.acc.unwrap_model(self.policy)
        with self.acc.autocast():
            return generate_rollout(
                policy.lm,
                self.tokenizer,
                prompts,
                max_new_tokens=c.max_new_tokens,
                temperature=c.temperature,
                top_k=c.top_k,
                top_p=c.top_p,
                chunk=c.generation_chunk,
                context_length=context_length(policy.lm),
            )

    def _write_batch(self, records: list[dict], ent_sum: float, stats: dict, times: dict, admission: Admission) -> None:
        """Gather every process's stories; the main process appends them to the anthology and
        logs the step's metrics."""
        from accelerate.utils import gather_object

        all_records = gather_object(records)
        all_ent = sum(gather_object([ent_sum]))
        if self.main:
            self.anthology.append(all_records)
            self.metrics.log(self.step_no, self._step_metrics(all_records, stats, all_ent, times, admission))

    # ----------------------------------------------------------------- bookkeeping
    def _step_metrics(self, recs: list[dict], stats: dict, ent_sum: float, times: dict, admission) -> dict:
        valid = [r for r in recs if r["score"] is not None]
        rewarded = [r["reward"] for r in recs if r["reward"] is not None]
        words = [r["n_words"] for r in recs]
        m: dict[str, float | None] = {}
        criteria = sorted({k for r in valid if r["scores"] for k in r["scores"]})
        for k in criteria:
            vals = [r["scores"][k] for r in valid if r["scores"] and k in r["scores"]]
            m[f"score/{k}"] = sum(vals) / len(vals)
        m["score/mean"] = _mean([r["score"] for r in valid])
        totals = [r["total"] for r in valid if r["total"] is not None]
        m["score/total"] = _mean(totals)
        m["reward/mean"] = _mean(rewarded)
        m["reward/std"] = _std(rewarded)
        m["invalid_rate"] = (sum(1 for r in recs if not r["valid"]) / len(recs)) if recs else None
        m["words/continuation"] = _mean(words)
        m["entropy/per_word"] = ent_sum / sum(words) if sum(words) else None
        m.update(stats)  # the objective's, under their final names
        step_time = sum(v for k, v in times.items() if k in ("generation", "forward", "rating_wait", "update"))
        m["perf/stories_per_s"] = len(recs) / step_time if step_time > 0 else None
        for k, v in times.items():
            m[f"time/{k}"] = v
        m["budget/input_words"] = self.budget.input_words
        m["budget/generated_words"] = self.budget.generated_words
        m["budget/stories"] = self.budget.stories
        m["budget/dropped_stories"] = admission.offered - admission.n
        return m

    def _counters(self) -> dict:
        b = self.budget
        return {
            "stories": b.stories,
            "input_words": b.input_words,
            "prompt_words": b.prompt_words,
            "teacher_words": b.teacher_words,
            "generated_words": b.generated_words,
            "input_budget": b.input_budget,
            "generation_budget": b.generation_budget,
        }

    def _write_state(self, done: bool) -> None:
        atomic_write_json(
            self.run_dir / STATE_FILE,
            {
                "start_checkpoint": str(self.start),
                "algorithm": self.objective.name,
                "step": self.step_no,
                **self._counters(),
                "checkpoint": self.last_ckpt[0] if self.last_ckpt else None,
                "done": done,
            },
        )

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self._own_teacher and self.teacher is not None:
            self.teacher.close()


# --------------------------------------------------------------------------- helpers
def _read_state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(
            f"{run_dir / STATE_FILE} cannot be read; restore it from a backup or start a new run."
        ) from None


def _reply_text(r: Rating) -> str:
    """Every word the teacher said about a story: its answer, and answers a retry replaced."""
    return " ".join(r.answers or [])


def _in_background(fn, *args) -> Future:
    """``fn(*args)`` in a daemon thread. Not a ThreadPoolExecutor: Python joins those threads
    at exit, so a second Ctrl-C would wait for the teacher to finish rating."""
    future: Future = Future()

    def work() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # handed to the caller, who re-raises it
            future.set_exception(e)

    threading.Thread(target=work, name="teacher", daemon=True).start()
    return future


def _resumed_model(ckpt: Path):
    fix = "restore it from a backup, or start a new run from an earlier checkpoint with `onceupon interact --from`"
    return load_student(ckpt, fix).model


def _copy_model(model):
    import copy

    return copy.deepcopy(model)


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _std(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5
