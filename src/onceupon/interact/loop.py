"""``onceupon interact``: tell stories, get them rated, learn from the ratings, on a word budget.

One RL step, top to bottom (:meth:`Interaction.step`):

1. take the step's prompts (``group_size`` copies of each when the objective learns from
   groups) and sample a story for each, the whole batch at once (rollout.py);
2. hand the stories to the teacher in a background thread and, meanwhile, score their tokens
   under the policy and the frozen reference (nothing there waits for the ratings);
3. admit the longest prefix of the batch that fits the word budgets (budget.py), turn the
   ratings into rewards (reward.py) and let the objective update the policy on one
   :class:`Experience` (objective.py names the algorithms; the loop knows none by name);
4. append the batch to the anthology, log metrics, write ``state.json``, and save a checkpoint
   when the input words crossed a ``checkpoint_every`` milestone.

The run ends when the input or generation budget is spent (the last batch cut to fit) or
after ``max_steps``; a final checkpoint holds the end state. ``--resume`` restarts from the
latest checkpoint with everything it saved (weights, value head, optimizer, KL controller,
RNG states, budget counters, prompt position), cutting the anthology and metrics back to it,
so a killed and resumed run ends exactly like an uninterrupted one.

Data parallel: under ``accelerate launch`` every process tells, rates and scores its share of
the batch; the budget is decided on the gathered batch in rank order (the same on every
process), gradients are averaged by DDP, and the main process writes files.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from onceupon.config import ExperimentConfig, InteractConfig, load_config, save_config
from onceupon.errors import UserError
from onceupon.files import atomic_write_json
from onceupon.interact.anthology import Anthology, record
from onceupon.interact.budget import Budget
from onceupon.interact.objective import Objective, make_objective
from onceupon.interact.prompts import PromptSource, load_prompts
from onceupon.interact.reward import story_reward
from onceupon.interact.rollout import PolicyWithValue, generate_rollout, score_rollout
from onceupon.interact.update import Experience
from onceupon.student.checkpoints import STATE_DIR, CheckpointMeta, list_checkpoints, read_meta, save_checkpoint
from onceupon.student.model import context_length
from onceupon.teacher.base import Rating, Story, Teacher
from onceupon.tracking import MetricsLogger, progress_bar
from onceupon.words import crossed, every_milestones, milestone_name

STATE_FILE = "state.json"


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
        if not (run_dir / STATE_FILE).is_file():
            raise UserError(f"{run_dir} holds no interaction run to resume (no {STATE_FILE}).")
        cfg = load_config(run_dir / "config.yaml")
        state = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8"))
        start = state["start_checkpoint"]
        if state.get("done"):
            final = run_dir / "checkpoints" / state["checkpoint"]
            print(f"{run_dir} is already complete; final checkpoint {final}")
            return final
    else:
        if cfg is None or start is None:
            raise UserError("A new interaction run needs a config and a start checkpoint.")
        if (run_dir / STATE_FILE).exists() or (run_dir / "anthology.jsonl").exists():
            raise UserError(f"{run_dir} already holds an interaction run; use --resume {run_dir} to continue it.")
    objective = objective or make_objective(cfg.interact)
    validate(cfg.interact, objective)
    session = Interaction(cfg, Path(start), run_dir, objective, teacher=teacher, resume=resume)
    try:
        return session.train()
    finally:
        session.close()


def validate(c: InteractConfig, objective: Objective) -> None:
    """Configuration mistakes that pydantic's per-field checks cannot see."""
    if c.batch_size % objective.group_size:
        raise UserError(
            f"interact.batch_size ({c.batch_size}) must be a multiple of interact.group_size "
            f"({objective.group_size}) for {objective.name}."
        )
    if c.input_budget <= 0 or c.generation_budget <= 0:
        raise UserError("interact.input_budget and interact.generation_budget must be positive.")
    if c.checkpoint_every <= 0:
        raise UserError("interact.checkpoint_every must be a positive word count.")


def load_start(start: Path):
    """Tokenizer, model and onceupon metadata of the start checkpoint (a local directory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not start.is_dir() or not (start / "config.json").is_file():
        raise UserError(f"Start checkpoint {start} is not a model directory (no config.json).")
    try:
        tokenizer = AutoTokenizer.from_pretrained(start)
        model = AutoModelForCausalLM.from_pretrained(start)
    except (OSError, ValueError) as e:
        raise UserError(f"Cannot load the start checkpoint {start}: {str(e).splitlines()[0]}") from None
    tokenizer.padding_side = "left"  # generation continues each prompt right where it ends
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        meta = read_meta(start)
    except UserError:
        meta = None  # a plain transformers model: no pretraining words known
    return tokenizer, model, meta


# --------------------------------------------------------------------------- the run
class Interaction:
    def __init__(
        self, cfg: ExperimentConfig, start: Path, run_dir: Path, objective: Objective, *, teacher=None, resume=False
    ):
        from accelerate import Accelerator

        self.cfg = cfg
        self.c = c = cfg.interact
        self.run_dir = run_dir
        self.start = start.resolve()
        precision = c.precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
        self.acc = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no")
        self.main = self.acc.is_main_process
        world = self.acc.num_processes
        if c.batch_size % world:
            raise UserError(f"interact.batch_size ({c.batch_size}) must be divisible by the {world} processes.")
        self.local_n = c.batch_size // world
        if self.local_n % objective.group_size:
            raise UserError("Each process's share of the batch must hold whole groups (batch_size / processes / group_size).")

        # What the run is made of ------------------------------------------------------
        self.prompts = PromptSource(load_prompts(c), c.seed)
        self.tokenizer, start_model, start_meta = load_start(self.start)
        self.pretrain_words = start_meta.pretrain_words if start_meta else 0
        self.objective = objective
        self.budget = Budget(c.input_budget, c.generation_budget, c.count_prompt)
        self.step_no = 0
        self.milestones = every_milestones(c.checkpoint_every, c.input_budget)
        self.last_ckpt: tuple[str, int] | None = None  # (name, step)
        self.finished = False  # set when a batch was cut: the budget cannot hold another group

        resume_from = self._resume_point() if resume else None
        # The policy starts as the checkpoint being resumed, else as the start checkpoint; the
        # reference is always the start checkpoint, frozen.
        lm = load_start(resume_from)[1] if resume_from is not None else start_model
        for module in lm.modules():  # no dropout in RL: a ratio must be exactly 1 before the first step
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        # Seeded before the value head is initialised; each process samples its own stories.
        torch.manual_seed(c.seed + self.acc.process_index)
        random.seed(c.seed + self.acc.process_index)
        self.policy = PolicyWithValue(lm, objective.needs_value_head)
        self.ref = PolicyWithValue(start_model if resume_from is not None else _copy_model(start_model), False)
        self.ref.requires_grad_(False).eval()
        self.optimizer = torch.optim.Adam([p for p in self.policy.parameters() if p.requires_grad], lr=c.learning_rate)
        if resume_from is not None:
            self._load_state(resume_from)
        self.policy, self.optimizer = self.acc.prepare(self.policy, self.optimizer)
        self.ref.to(self.acc.device)
        self.policy.train()  # with dropout at 0, train and eval mode compute the same numbers

        self.teacher = teacher
        self._own_teacher = teacher is None
        if self.teacher is None:
            from onceupon.teacher.factory import build_teacher

            self.teacher = build_teacher(cfg.teacher)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="teacher")
        self.anthology = Anthology(run_dir)
        self.metrics = None
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                save_config(cfg, run_dir)
            self.anthology.truncate(self.budget.stories)
            self.metrics = MetricsLogger(run_dir, resume_step=self.step_no)
            self._write_state(done=False)
        self.acc.wait_for_everyone()

    # ----------------------------------------------------------------- resume
    def _resume_point(self) -> Path | None:
        """The latest checkpoint of this run that holds resume state (None: start over)."""
        for ckpt in reversed(list_checkpoints(self.run_dir)):
            if (ckpt / STATE_DIR / "state.pt").is_file():
                return ckpt
        return None

    def _load_state(self, ckpt: Path) -> None:
        state = torch.load(ckpt / STATE_DIR / "state.pt", map_location="cpu", weights_only=False)
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
        rng = state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0]
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available() and rng.get("cuda") is not None:
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(rng["python"])
        self.last_ckpt = (ckpt.name, self.step_no)

    def _rng_state(self) -> dict:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(),
        }

    # ----------------------------------------------------------------- checkpoints
    def save(self, name: str) -> Path:
        """Weights, tokenizer and metadata (HF format) plus everything a resume needs."""
        from accelerate.utils import gather_object

        rngs = gather_object([self._rng_state()])
        final = self.run_dir / "checkpoints" / name
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
            }

            def write_state(d: Path) -> None:
                torch.save(state, d / "state.pt")
                atomic_write_json(d / "counters.json", {"step": self.step_no, **self._counters()})

            meta = CheckpointMeta(
                name=name,
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
            save_checkpoint(final, policy.lm, self.tokenizer, meta, write_state=write_state)
            if self.c.keep_resume_state == "latest":
                for other in list_checkpoints(self.run_dir):
                    if other.name != name:
                        shutil.rmtree(other / STATE_DIR, ignore_errors=True)
        self.acc.wait_for_everyone()
        self.last_ckpt = (name, self.step_no)
        return final

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
        with progress_bar("words") as bar:
            task = bar.add_task(f"interact ({self.objective.name})", total=c.input_budget, completed=self.budget.input_words)
            while not self.finished:
                if (c.max_steps is not None and self.step_no >= c.max_steps) or self.budget.spent:
                    break
                before = self.budget.input_words
                self.finished = self.step()
                bar.update(task, completed=self.budget.input_words)
                hit = crossed(self.milestones, before, self.budget.input_words)
                if hit and not self.finished:
                    self.save(self._checkpoint_name(max(hit)))
        self.finished = True
        if self.last_ckpt is None or self.last_ckpt[1] != self.step_no:
            self.save(self._checkpoint_name(self.budget.input_words))
        if self.main:
            self._write_state(done=True)
        return self.run_dir / "checkpoints" / self.last_ckpt[0]

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
        policy = self.acc.unwrap_model(self.policy)
        with self.acc.autocast():
            rollout = generate_rollout(
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
        t_gen = time.perf_counter()

        # The teacher reads while we score tokens: neither needs the other's result.
        stories = [Story(p, s, id=f"{self.step_no}-{i}") for i, (p, s) in enumerate(zip(prompts, rollout.continuations))]
        pending = self.pool.submit(self.teacher.rate, stories)
        with self.acc.autocast():
            old_logprobs, values, entropy = score_rollout(self.policy, rollout, c.temperature, c.micro_batch_size)
            ref_logprobs, _, _ = score_rollout(self.ref, rollout, c.temperature, c.micro_batch_size, entropy=False)
        t_fwd = time.perf_counter()
        ratings: list[Rating] = pending.result()
        t_rate = time.perf_counter()
        if len(ratings) != len(stories):
            raise RuntimeError(f"the teacher returned {len(ratings)} ratings for {len(stories)} stories")

        # Budget: decided on the whole (gathered) batch, identically on every process.
        replies = [_reply_text(r) for r in ratings]
        all_prompts = gather_object(list(prompts))
        all_replies = gather_object(replies)
        all_words = gather_object(list(rollout.n_words))
        admission = self.budget.admit(all_prompts, all_replies, all_words, self.objective.group_size)
        offset = self.acc.process_index * self.local_n
        local_admitted = max(0, min(self.local_n, admission.n - offset))

        rewards = [
            story_reward(r, w, length_bonus=c.length_bonus, length_norm_words=c.length_norm_words)
            for r, w in zip(ratings, rollout.n_words)
        ]
        include = [i < local_admitted and rw is not None for i, rw in enumerate(rewards)]
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
        stats = {}
        if sum(gather_object([sum(include)])) > 0:  # every process updates, or none does
            stats = self.objective.update(self.policy, self.optimizer, exp, accelerator=self.acc).metrics
        t_upd = time.perf_counter()
        self.budget.commit(admission)

        # Anthology and metrics (main process writes).
        records = [
            record(self.step_no, offset + i, prompts[i], rollout.continuations[i], ratings[i], rewards[i],
                   rollout.n_words[i], self.budget.input_words)
            for i in range(local_admitted)
        ]
        ent_sum = float((entropy * rollout.response_mask)[:local_admitted].sum())
        all_records = gather_object(records)
        all_ent = sum(gather_object([ent_sum]))
        if self.main:
            self.anthology.append(all_records)
            # rating: the teacher's wall time (overlapped with the forward passes);
            # rating_wait: how much longer than the forward passes it took.
            times = {"generation": t_gen - t0, "forward": t_fwd - t_gen, "rating": t_rate - t_gen,
                     "rating_wait": t_rate - t_fwd, "update": t_upd - t_rate}
            self.metrics.log(self.step_no, self._step_metrics(all_records, stats, all_ent, times, admission))
            self._write_state(done=False)
        return admission.cut

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
        self.pool.shutdown(wait=True)
        if self.metrics is not None:
            self.metrics.close()
        if self._own_teacher and self.teacher is not None:
            self.teacher.close()


# --------------------------------------------------------------------------- helpers
def _reply_text(r: Rating) -> str:
    """Every word the teacher said about a story: its answer, and answers a retry replaced."""
    return " ".join(r.answers or [])


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
