"""``onceupon interact``: tell stories, get them rated, learn from the ratings, on a word budget.

One RL step, top to bottom (:meth:`Interaction.step`):

1. **rollout**: take the step's prompts (``group_size`` copies of each when the objective
   learns from groups) and sample a story for each, the whole batch at once (rollout.py);
2. **rating**: hand the stories to the teacher in a background thread and, meanwhile, score
   their tokens under the policy and the frozen reference (nothing there waits for the ratings);
3. **reward**: admit the longest prefix of the batch that fits the word budgets (budget.py) and
   turn the ratings into rewards (reward.py); a story that is not admitted or has no score is
   False in the one exclusion mask, ``Experience.include`` (update.py);
4. **update**: the objective learns from one :class:`Experience` (objective.py names the
   algorithms; the loop knows none by name);
5. **record**: the watch measures the step beside a held-out judge (watch.py); the batch goes
   to the anthology and the metrics (record.py's :class:`RunRecords`, which the loop gives
   what it writes).

After a step the watch may stop the run (``interact.watch.on_alarm: stop``) as a signal does.

Between steps (:meth:`Interaction.train`): a checkpoint when the input words crossed a
``checkpoint_every`` milestone, then ``state.json`` (so it names the newest checkpoint on disk).
The budget says when the run is done (a budget spent, or the last batch cut to fit), or
``max_steps``; a final checkpoint holds the end state.

Unattended runs: the output location and the kind of run are checked first, then the run lock
is taken (``RUN/.lock``: a second process is refused at once, naming the holder's PID), then
everything else that can be checked is checked before anything is written (validate.py). The
first Ctrl-C or SIGTERM stops after the current step, saves ``RUN/resume_point`` (unless the
step just wrote a checkpoint) and says how to resume; a second one aborts at once.
``--resume`` continues from the latest checkpoint or resume point with everything it saved
(weights, value head, optimizer, objective state, RNG states, budget counters, prompt
position), after checking that the anthology and metrics still hold what the checkpoint
recorded (count and hash of the stories), then cuts them back to it, so a killed, stopped or
crashed run ends exactly like an uninterrupted one.

Data parallel: under ``accelerate launch`` every process tells, rates and scores its share of
the batch; the budget is decided on the gathered batch in rank order (the same on every
process), gradients are averaged by DDP, and the main process writes files.
"""

from __future__ import annotations

import math
import random
import threading
import time
from concurrent.futures import Future, wait
from pathlib import Path
from typing import TYPE_CHECKING

from onceupon.config import ExperimentConfig, resume_config, save_config
from onceupon.errors import UserError
from onceupon.interact.anthology import Anthology
from onceupon.interact.budget import Admission, Budget
from onceupon.interact.invalid import InvalidAnswers
from onceupon.interact.objective import Objective, make_objective
from onceupon.interact.prompts import PromptSource, load_prompts
from onceupon.interact.record import Batch, RunRecords, counters, read_state
from onceupon.interact.reward import story_reward
from onceupon.interact.unfinished import UnfinishedStep
from onceupon.interact.watch import Watch, resolve_judge
from onceupon.interact.validate import RUN_MARKERS, Student, check_fits, check_run_dir, load_student, unused_settings, validate
from onceupon.lifecycle import divergence, rng, stop
from onceupon.lifecycle.divergence import Diverged, SkippedSteps, all_finite
from onceupon.lifecycle.lock import is_global_main, run_lock
from onceupon.lifecycle.stop import Stopped
from onceupon.lifecycle.precision import mixed_precision
from onceupon.lifecycle.resume import check_new_run, find_resume_point, passed_over
from onceupon.student.model import context_length
from onceupon.teacher.base import Rating, Story, Teacher
from onceupon.teacher.before_run import check_before_run
from onceupon.teacher.judges import teacher_key
from onceupon.teacher.pipeline import RubricTeacher
from onceupon.tracking import RUN_LOG, log, progress_bar, run_log
from onceupon.words import crossed, every_milestones

if TYPE_CHECKING:
    from onceupon.interact.rollout import Rollout
    from onceupon.interact.update import Experience

# torch and what is built on it (rollout.py, update.py, the objectives) are imported where
# they are used: the run lock is taken before any of it is loaded (tens of seconds on a busy
# machine), so a second process on the same run is refused at once.


# --------------------------------------------------------------------------- entry points
def run(cfg: ExperimentConfig | None, start: str | Path | None, run_dir: str | Path, resume: bool = False) -> None:
    """CLI entry: a new run (``cfg``, ``start``) or ``--resume`` of ``run_dir``."""
    run_dir = Path(run_dir)
    path = interact(cfg, None, run_dir, resume=True) if resume else interact(cfg, start, run_dir)
    state = read_state(run_dir)
    if not is_global_main():  # said once, by the main process
        return
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
    if not resume and (cfg is None or start is None):
        raise UserError("A new interaction run needs a config and a start checkpoint.")
    check_run_dir(run_dir, resume)  # cheap: the location, and the kind of run it holds
    with run_lock(run_dir):  # before anything is loaded: a second process is refused at once
        if resume:
            state = read_state(run_dir)
            if state.get("done"):
                final = run_dir / "checkpoints" / state["checkpoint"]
                print(f"{run_dir} is already complete; final checkpoint {final}")
                return final
            # the run's config, or a change --resume may make (config.resume_config)
            cfg, start = resume_config(run_dir, cfg), state["start_checkpoint"]
        else:
            check_new_run(run_dir, "interact", RUN_MARKERS)  # again: another process may have begun
        warning = None if resume or objective is not None else unused_settings(cfg.interact)
        objective = objective or make_objective(cfg.interact)
        validate(cfg.interact, objective)
        prompts = load_prompts(cfg.interact)
        student = load_student(Path(start))
        check_fits(cfg.interact, student, prompts)
        with run_log(run_dir / RUN_LOG):
            if warning:
                log(warning, echo=True)
            own_teacher, session, judge = teacher is None, None, None
            if teacher is None:
                from onceupon.teacher.factory import build_teacher

                teacher = build_teacher(cfg.teacher)
            try:
                judge = held_out_judge(cfg, teacher)  # built (and so checked) before anything is written
                before_first_step(cfg, teacher, run_dir, resume, student, prompts)
                session = Interaction(cfg, student, prompts, run_dir, objective, teacher, judge=judge, resume=resume)
                return session.train()
            finally:
                if session is not None:
                    session.close()
                if judge is not None:
                    judge.close()
                if own_teacher:
                    teacher.close()


def held_out_judge(cfg: ExperimentConfig, teacher: Teacher) -> Teacher | None:
    """The watch's held-out judge (``interact.watch.judge``), built by the main process only."""
    if not is_global_main():
        return None
    return resolve_judge(cfg.interact.watch, teacher, getattr(teacher, "identity", "").startswith("heuristic:"))


def before_first_step(
    cfg: ExperimentConfig, teacher: Teacher, run_dir: Path, resume: bool, student: Student | None = None, prompts: list[str] | None = None
) -> None:
    """The one place for checks of the built parts before the run writes anything (a new run)
    or continues (``--resume``): the settings, student and prompts passed their checks, the
    teacher is built, nothing is written yet. A new run checks its teacher on storyworld
    stories told after the run's prompts and on stories the student itself tells, and keeps
    both checks (a FAIL stops it here unless ``interact.teacher_check`` allows it:
    teacher/before_run.py); a resumed run keeps the checks it made when it started."""
    if resume:
        return

    def student_samples() -> list[tuple[str, str]]:
        import torch

        from onceupon.interact.check_samples import sample_for_check

        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = student.model.to(device)
        try:
            return sample_for_check(model, student.tokenizer, prompts, cfg.interact)
        finally:
            student.model.to("cpu")

    check_before_run(cfg, teacher, run_dir, prompts, student_samples if student is not None and prompts else None)


# --------------------------------------------------------------------------- the run
class Interaction:
    def __init__(
        self,
        cfg: ExperimentConfig,
        student: Student,
        prompts: list[str],
        run_dir: Path,
        objective: Objective,
        teacher: Teacher,
        *,
        judge: Teacher | None = None,
        resume: bool = False,
    ):
        """``judge``: the watch's held-out judge (None: none), closed by the caller."""
        from accelerate import Accelerator

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
        self.objective = objective
        self.budget = Budget(c.input_budget, c.generation_budget, c.count_prompt)
        self.step_no = 0
        self.nonfinite = SkippedSteps(c.skip_nonfinite)  # gradient steps not applied (interact.skip_nonfinite)
        self.invalid = InvalidAnswers(c)  # invalid ratings over the last steps (interact.invalid_limit)
        self.unfinished = UnfinishedStep(run_dir, teacher_key(teacher))  # ratings of a step the teacher failed in
        self.milestones = every_milestones(c.checkpoint_every, c.input_budget)
        self.teacher = teacher
        self._show = lambda text: None  # the progress line's status text, once train() shows one
        self.watch = Watch(c.watch, judge, run_dir, main=self.main, length_norm_words=c.length_norm_words, seed=c.seed)
        self.records = RunRecords(
            run_dir,
            self.acc,
            start=self.start,
            pretrain_words=student.meta.pretrain_words if student.meta else 0,
            tokenizer=self.tokenizer,
            objective=objective,
            budget=self.budget,
            prompts=self.prompts,
            anthology=Anthology(run_dir),
            local_n=self.local_n,
            keep_resume_state=c.keep_resume_state,
            parts={"watch": self.watch, "nonfinite": self.nonfinite, "invalid": self.invalid},
        )

        resume_from = find_resume_point(run_dir) if resume else None
        recorded = read_state(run_dir) if resume else None  # where the run last said it was
        saved_anthology = self._build_models(student.model, resume_from)
        if resume:  # checked before anything is written
            cut = self.records.check_resume(resume_from, self.step_no, saved_anthology)
            note = _fallback(run_dir, resume_from, self.step_no, recorded, counters(self.budget), cut) if self.main else None
            if note:
                log(note, echo=True)
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                save_config(cfg, run_dir)
        if self.main and world > 1:  # said, so a launcher that started fewer processes than asked is seen
            log(f"data-parallel: {world} processes, {self.local_n} stories each per step", echo=True)
        self.records.open(self.step_no)
        self.watch.open(self.step_no)
        self.acc.wait_for_everyone()

    def _build_models(self, start_model, resume_from: Path | None) -> dict:
        """Policy (with a value head if the objective needs one), frozen reference, optimizer;
        restored from ``resume_from`` when given. Returns what the anthology held there."""
        import torch

        from onceupon.interact.rollout import PolicyWithValue

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
            self.step_no, saved_anthology = self.records.restore(resume_from, self.policy, self.optimizer)
        self.policy, self.optimizer = self.acc.prepare(self.policy, self.optimizer)
        self.ref.to(self.acc.device)
        self.policy.train()  # with dropout at 0, train and eval mode compute the same numbers
        return saved_anthology

    # ----------------------------------------------------------------- the loop
    @property
    def over(self) -> bool:
        """The budget is done, or ``max_steps`` steps were taken."""
        return self.budget.done or (self.c.max_steps is not None and self.step_no >= self.c.max_steps)

    def train(self) -> Path:
        try:
            return self._train()
        except UserError as e:  # what stopped the run mid-way, kept with the run's own record
            log(f"error: {e}")
            raise
        except Stopped as e:
            log(str(e))
            raise

    def _train(self) -> Path:
        with progress_bar("words") as bar, stop.stop_on_signals():
            task = bar.add_task(f"interact ({self.objective.name})", total=self.c.input_budget, completed=self.budget.input_words)
            # A slow teacher can take minutes per step: the line says how far its rating is.
            self._show = lambda text: bar.update(task, status=text)
            while not self.over:
                before = self.budget.input_words
                self.step()
                bar.update(task, completed=self.budget.input_words)
                hit = crossed(self.milestones, before, self.budget.input_words)
                if hit and not self.budget.cut:  # a cut batch ends the run: the final checkpoint follows
                    self._save(max(hit))
                self.records.write_state(self.step_no, done=False)  # after the checkpoint: it names the newest one
                alarm = self.watch.alarm_to_stop(self.acc)
                # A teacher that no longer answers validly stops the run, even at its last step.
                invalid = self.invalid.exceeded()
                if invalid is not None or (not self.over and (alarm is not None or stop.stop_agreed(self.acc))):
                    self.records.stop(self.step_no, bool(hit) and not self.budget.cut, self.policy, self.optimizer, why=invalid or alarm)
            newest = self.records.newest
            if newest is None or newest[1] != self.step_no:
                self._save(self.budget.input_words)
            self.records.write_state(self.step_no, done=True)
        return self.records.newest_path

    def _save(self, words: int) -> None:
        """A checkpoint after this step, named for ``words`` input words."""
        name = self.records.checkpoint_name(self.step_no, words)
        self.records.save(name, self.step_no, self.policy, self.optimizer)

    def step(self) -> None:
        """One RL step: rollout -> rating -> reward -> update -> record."""
        import torch

        from onceupon.interact.update import Experience

        self.step_no += 1
        at = {"start": time.perf_counter()}
        # What the step changes before its update: put back if the teacher fails in it.
        before = {"rng": rng.capture_rng(), "prompts_drawn": self.prompts.drawn}

        # 1. rollout: the policy tells one story per prompt (this process's share of the batch)
        prompts = self._step_prompts()
        self._show(f"step {self.step_no}: telling {len(prompts)} stories")
        rollout = self._tell(prompts)
        if not rollout.finite:
            self._diverged("the student's logits are", None)
        at["told"] = time.perf_counter()

        # 2. rating, in the teacher's thread, while the policy and the reference score the tokens
        stories = [Story(p, s, id=f"{self.step_no}-{i}") for i, (p, s) in enumerate(zip(prompts, rollout.continuations))]
        arrived: list[tuple[int, Rating]] = []  # (story, rating) in so far, as the teacher reports them
        self.watch.start(self.step_no, stories)  # the held-out judge rates its share meanwhile
        pending = _in_background(self._rate, stories, arrived)
        old_logprobs, ref_logprobs, values, entropy = self._score(rollout)
        mask = rollout.response_mask.bool()
        if not all_finite(*(x[mask] for x in (old_logprobs, ref_logprobs, values) if x is not None)):
            self._diverged("the student's log-probabilities or values are", None)
        at["scored"] = time.perf_counter()
        try:
            ratings = self._wait_for_ratings(pending, arrived, len(stories))
        except UserError as e:  # the teacher failed (stalled, refused, unreachable)
            self._teacher_failed(e, before, stories, arrived)
        at["rated"] = time.perf_counter()
        if len(ratings) != len(stories):
            raise RuntimeError(f"the teacher returned {len(ratings)} ratings for {len(stories)} stories")

        # 3. reward: what the budget admits, what each story earns, and the one exclusion mask
        admission, admitted = self._admit(prompts, ratings, rollout)
        c = self.c
        rewards = [story_reward(r, w, length_bonus=c.length_bonus, length_norm_words=c.length_norm_words)
                   for r, w in zip(ratings, rollout.n_words)]  # fmt: skip
        include = [i < admitted and r is not None for i, r in enumerate(rewards)]
        exp = Experience(
            sequences=rollout.sequences,
            attention_mask=rollout.attention_mask,
            prompt_width=rollout.prompt_width,
            response_mask=rollout.response_mask,
            old_logprobs=old_logprobs,
            ref_logprobs=ref_logprobs,
            values=values,
            rewards=torch.tensor([r if inc else 0.0 for r, inc in zip(rewards, include)], device=self.acc.device),
            include=torch.tensor(include, device=self.acc.device),
        )

        # 4. update (every process updates, or none does: a batch with nothing to learn from)
        stats, learned = self._update(exp)
        self._count_nonfinite(stats)
        at["updated"] = time.perf_counter()
        self.budget.commit(admission)

        # 5. record
        batch = Batch(prompts, rollout, ratings, rewards, admission, admitted)
        told = self.records.gather(self.step_no, batch, learned, entropy)
        if self.watch.judging(self.step_no):  # else the line still shows the teacher's last count while observe() waits
            self._show(f"step {self.step_no}: waiting for the held-out judge")
        watched = self.watch.observe(self.step_no, told.records, ratings, admitted)
        self.records.write_batch(self.step_no, told, stats, _times(at), extra=watched)
        if self.main:
            self.unfinished.clear()  # its ratings are in the anthology now
        self._count_invalid(ratings)

    # ----------------------------------------------------------------- the step's parts
    def _step_prompts(self) -> list[str]:
        group = self.objective.group_size
        prompts = [p for p in self.prompts.take(self.c.batch_size // group) for _ in range(group)]
        rank = self.acc.process_index
        return prompts[rank * self.local_n : (rank + 1) * self.local_n]

    def _tell(self, prompts: list[str]) -> Rollout:
        """The policy samples one story per prompt."""
        from onceupon.interact.rollout import generate_rollout

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

    def _rate(self, stories: list[Story], arrived: list[tuple[int, Rating]]) -> list[Rating]:
        """The teacher's ratings of a step (in the teacher's thread); the pipeline's teacher also
        reports each finished rating, appended to ``arrived`` and shown at once. Ratings kept
        from this step's earlier try (the teacher failed in it: unfinished.py) are taken as
        they are; the teacher is asked only for the other stories."""
        kept, note = self.unfinished.reusable(self.step_no, stories) if self.main else ({}, None)
        if note:
            log(note, echo=True)
        arrived.extend(sorted(kept.items()))
        todo = [i for i in range(len(stories)) if i not in kept]
        ratings: list[Rating | None] = [kept.get(i) for i in range(len(stories))]
        if todo and not isinstance(self.teacher, RubricTeacher):  # a programmatic teacher: rate() only
            fresh = self.teacher.rate([stories[i] for i in todo])
        elif todo:

            def on_rated(j: int, rating: Rating) -> None:
                arrived.append((todo[j], rating))
                self._show(self._rating_status(arrived, len(stories)))

            fresh = self.teacher.rate([stories[i] for i in todo], on_rated=on_rated)
        else:
            fresh = []
        if len(fresh) != len(todo):
            raise RuntimeError(f"the teacher returned {len(fresh)} ratings for {len(todo)} stories")
        for i, rating in zip(todo, fresh):
            ratings[i] = rating
        return ratings  # type: ignore[return-value]  # every slot is filled

    def _wait_for_ratings(self, pending: Future, arrived: list[tuple[int, Rating]], n: int) -> list[Rating]:
        """The step's ratings, once the teacher is done; while it rates, the progress line is
        refreshed every 0.2 s (as ``onceupon rate`` refreshes its own), so a teacher that
        stalls shows as one: its requests in flight and the seconds since its last answer."""
        while not wait([pending], timeout=0.2).done:
            self._show(self._rating_status(arrived, n))
        ratings = pending.result()
        self._show(self._rating_status(list(enumerate(ratings)), n))
        return ratings

    def _teacher_failed(self, error: UserError, before: dict, stories: list[Story], arrived: list[tuple[int, Rating]]) -> None:
        """The teacher failed in this step: put back what the step changed (its number, the
        prompts it drew, the random state it told its stories with: nothing was updated yet),
        save a resume point of every step done, keep the ratings this step got, and stop with
        the teacher's sentence saying so."""
        self.step_no -= 1
        self.prompts.drawn = before["prompts_drawn"]
        rng.restore_rng(before["rng"])
        if self.step_no:  # with no step done, --resume starts afresh, as it would from here
            newest = self.records.newest
            self.records.keep_progress(self.step_no, newest is not None and newest[1] == self.step_no, self.policy, self.optimizer)
        kept = self.unfinished.keep(self.step_no + 1, stories, list(arrived)) if self.main else 0
        done = f"steps 1-{self.step_no} are saved" if self.step_no > 1 else (
            "step 1 is saved" if self.step_no else "no step was done yet"
        )
        got = (
            f"the {kept} ratings step {self.step_no + 1} got are kept in {self.unfinished.path}"
            if kept
            else f"step {self.step_no + 1} got no rating to keep"
        )
        raise type(error)(
            f"{str(error).rstrip('.')}; {done}, and {got}: continue with `onceupon interact --resume {self.run_dir}` "
            "once the teacher answers (it is asked only for what it has not answered)."
        ) from None

    def _rating_status(self, ratings: list[tuple[int, Rating]], n: int) -> str:
        """``step S: R/N rated[, F failed][, the teacher's status]``: a story whose request got
        no answer (refused or failed after every retry) counts as failed, not rated."""
        got = list(ratings)  # a copy: the teacher's thread appends to the step's ``arrived``
        failed = sum(r.request_failed for _, r in got)
        text = f"step {self.step_no}: {len(got) - failed}/{n} rated" + (f", {failed} failed" if failed else "")
        status = self.teacher.status() if isinstance(self.teacher, RubricTeacher) else ""
        return text + (f", {status}" if status else "")

    def _score(self, rollout: Rollout):
        """Log-probabilities of the sampled tokens under the policy (with values and entropy)
        and under the frozen reference."""
        from onceupon.interact.rollout import score_rollout

        c = self.c
        with self.acc.autocast():
            old_logprobs, values, entropy = score_rollout(self.policy, rollout, c.temperature, c.micro_batch_size)
            ref_logprobs, _, _ = score_rollout(self.ref, rollout, c.temperature, c.micro_batch_size, entropy=False)
        return old_logprobs, ref_logprobs, values, entropy

    def _admit(self, prompts: list[str], ratings: list[Rating], rollout: Rollout) -> tuple[Admission, int]:
        """What the budget admits, decided on the whole (gathered) batch, identically on every
        process; and how many of this process's stories that is."""
        from accelerate.utils import gather_object

        admission = self.budget.admit(
            gather_object(list(prompts)),
            gather_object([_reply_text(r) for r in ratings]),
            gather_object(list(rollout.n_words)),
            self.objective.group_size,
        )
        offset = self.acc.process_index * self.local_n
        return admission, max(0, min(self.local_n, admission.n - offset))

    def _update(self, exp: Experience) -> tuple[dict, list[bool]]:
        """The objective's update; returns its metrics and the stories it learned from."""
        from accelerate.utils import gather_object

        if sum(gather_object([int(exp.include.sum())])) == 0:  # every process updates, or none does
            return {}, exp.include.tolist()
        result = self.objective.update(self.policy, self.optimizer, exp, accelerator=self.acc)
        return result.metrics, result.include.tolist()

    def _count_invalid(self, ratings: list[Rating]) -> None:
        """The step's invalid ratings, every process's, for the bound on them (invalid.py)."""
        from accelerate.utils import gather_object

        counts = gather_object([(sum(not r.valid for r in ratings), len(ratings))])
        self.invalid.add(self.step_no, ratings, sum(c[0] for c in counts), sum(c[1] for c in counts))

    def _count_nonfinite(self, stats: dict) -> None:
        """Add up the update's gradient steps not applied for a non-finite loss or gradient
        (update.py); one more than ``interact.skip_nonfinite`` allows, or a statistic that is
        not finite (an objective of one's own), stops the run."""
        from onceupon.interact.update import NONFINITE_STEPS

        bad = [k for k, v in stats.items() if v is not None and not math.isfinite(v)]
        if bad:
            self._diverged(f"the update's {bad[0]} is", None)
        skipped = int(stats.get(NONFINITE_STEPS, 0))
        if not skipped:
            return
        if not self.nonfinite.add(skipped):
            self._diverged("the loss or gradients are", self.c.skip_nonfinite)
        if self.main:
            log(
                f"step {self.step_no}: the loss or gradients of {skipped} gradient step(s) are not finite; they were skipped "
                f"({self.nonfinite.count} of {self.c.skip_nonfinite} allowed by interact.skip_nonfinite).",
                echo=True,
            )

    def _diverged(self, what: str, allowed: int | None) -> None:
        """Stop: nothing of this step is saved, the last checkpoint or resume point stays
        what ``--resume`` continues from (lifecycle/divergence.py)."""
        raise Diverged(divergence.message("interact", self.step_no, what, self.run_dir, allowed))

    def close(self) -> None:
        self.records.close()


# --------------------------------------------------------------------------- helpers
def _times(at: dict[str, float]) -> dict[str, float]:
    """The step's timings. rating: the teacher's wall time (overlapped with the forward
    passes); rating_wait: how much longer than the forward passes it took."""
    return {
        "generation": at["told"] - at["start"],
        "forward": at["scored"] - at["told"],
        "rating": at["rated"] - at["told"],
        "rating_wait": at["rated"] - at["scored"],
        "update": at["updated"] - at["rated"],
    }


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


def _fallback(run_dir: Path, point: Path | None, step: int, recorded: dict, resumed: dict, cut: int) -> str | None:
    """The sentence a resume says when it continues from an earlier point than the run's
    newest record (``state.json``, written after every step; the anthology), naming what is
    lost and why; None when it continues from where the run stopped."""
    where = f"{point} (step {step})" if point is not None else "the start checkpoint (step 0)"
    told = f"the {cut} stories told after it are dropped, and " if cut else ""
    if recorded["step"] > step:
        return (
            f"--resume continues from {where}, not from step {recorded['step']} where {run_dir / 'state.json'} says the run was: "
            f"{passed_over(run_dir, point)}; {told}steps {step + 1}-{recorded['step']} are told and rated again."
        )
    differ = [k for k, v in resumed.items() if k in recorded and recorded[k] != v]
    if recorded["step"] < step or differ:
        field = "step" if recorded["step"] != step else differ[0]
        return (
            f"{run_dir / 'state.json'} does not match {where} ({field} {recorded[field]!r}, the resume state says "
            f"{step if field == 'step' else resumed[field]!r}): the run continues from the resume state's counters."
        )
    if cut:
        return f"{run_dir / 'anthology.jsonl'} held {cut} stories after the ones {where} recorded, which no step of the run told; they are dropped."
    return None


def _resumed_model(ckpt: Path):
    fix = "restore it from a backup, or start a new run from an earlier checkpoint with `onceupon interact --from`"
    return load_student(ckpt, fix).model


def _copy_model(model):
    import copy

    return copy.deepcopy(model)
