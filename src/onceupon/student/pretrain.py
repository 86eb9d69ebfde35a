"""``onceupon pretrain``: train a tokenizer and a student from scratch on a word budget.

The stage, top to bottom:

1. :func:`run`, the one entry: the output location and the kind of run, then the run lock
   (:func:`onceupon.lifecycle.lock.run_lock`), then the checks that need nothing but the
   config (:func:`validate`: sizes against memory, milestone settings);
2. the data (prepare.py): the corpus and the word target it allows, the tokenizer and the
   packed data, each built once and reused on resume;
3. :func:`setup`: the plan (which sequences each optimizer step sees and the exact words seen
   after it, :mod:`.plan`), the model, AdamW with warmup and decay, and on resume the state it
   continues from;
4. :func:`train`, the loop: one :func:`train_step` after another (next-word prediction with
   gradient accumulation and bf16 autocast where the hardware has it, through ``accelerate`` so
   that ``accelerate launch`` runs the very same code on several GPUs or nodes), a metrics row
   every ``log_every`` steps, a checkpoint ``RUN/checkpoints/chck_{N}M`` after the step at
   which the words seen first reach each milestone and a final one at the word target
   (:func:`save_milestone`).

Milestones and overshoot: a step adds a whole global batch of words at once, so the words
seen usually pass a milestone mid-step. The checkpoint is written after that step, is named
after the milestone (``chck_2M``), and its ``onceupon.json`` records the exact words seen
(``pretrain_words``, at least the milestone, at most one step's words above it). When one
step passes several milestones (only in tiny runs), each gets a checkpoint of the same
weights. The word target (``epochs x corpus words``, or ``max_words`` if smaller) is always the
last milestone.

Resume: every checkpoint (by default only the latest, see ``keep_resume_state``) holds
``trainer_state/`` with the optimizer, scheduler, RNG states and the number of steps done, in
the one format and under the one resume rule of :mod:`onceupon.lifecycle.resume`.
Ctrl-C or SIGTERM stops after the current step and writes the same state to
``RUN/resume_point`` (not a checkpoint: it disappears once a later milestone is saved).
Because the plan is a pure function of the data and seed, ``--resume`` restarts at exactly the
next step; on a CPU the resumed run's weights are bit-identical to an uninterrupted run's.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onceupon import preflight
from onceupon.config import ExperimentConfig, resume_config
from onceupon.errors import UserError
from onceupon.lifecycle import divergence, lock, rng, stop
from onceupon.lifecycle.checkpoints import CheckpointMeta, latest_checkpoint, list_checkpoints, read_meta
from onceupon.lifecycle.divergence import Diverged
from onceupon.lifecycle.precision import mixed_precision
from onceupon.lifecycle.resume import (
    RESUME_POINT,
    check_new_run,
    check_resume,
    find_resume_point,
    passed_over,
    prune_resume_states,
    read_resume_state,
    state_writer,
)
from onceupon.schemas.run import read_metrics
from onceupon.student.checkpoints import load_model, save_checkpoint
from onceupon.student.model import resolve_shape
from onceupon.student.prepare import PACKED_DIR, TOKENIZER_DIR, prepare_data, prepare_run
from onceupon.tracking import RUN_LOG, log, run_log
from onceupon.words import babylm_milestones, checkpoint_name, crossed, every_milestones

RUN_MARKERS = (TOKENIZER_DIR, PACKED_DIR, "checkpoints")  # a directory with any of these holds a run


# --------------------------------------------------------------------------- entry points
def run(cfg: ExperimentConfig | None, run_dir: str | Path, resume: bool = False) -> list[Path]:
    """The ``onceupon pretrain`` command, and its programmatic use: a new run (``cfg``) or
    ``--resume`` (config read from ``RUN/config.yaml``); returns the run's checkpoints.

    The location and the kind of run are checked first (cheap), then the run lock is taken,
    then the settings are validated, all before anything is loaded or written. A resumed run
    continues after its latest checkpoint or resume point (or starts over when it has none
    yet); a finished run is left as it is.
    """
    run_dir = Path(run_dir)
    if resume:
        check_resume(run_dir, "pretrain", "config.yaml")
        preflight.output_dir(run_dir, "--resume")
    elif cfg is None:
        raise UserError("A new pretraining run needs a config.")
    else:
        preflight.output_dir(run_dir)
        check_new_run(run_dir, "pretrain", RUN_MARKERS)
    with lock.run_lock(run_dir):
        if resume:  # the run's config, or a change --resume may make (config.resume_config)
            cfg = resume_config(run_dir, cfg)
        else:  # again under the lock: another process may have started meanwhile
            check_new_run(run_dir, "pretrain", RUN_MARKERS)
        validate(cfg)
        with run_log(run_dir / RUN_LOG):
            return _stage(cfg, run_dir, resume)


def milestones_for(cfg: ExperimentConfig, target: int) -> list[int]:
    """The milestone schedule up to the word target, with the target itself as the last."""
    p = cfg.pretrain
    if p.milestones == "every":
        if p.milestone_every is None:
            raise UserError("pretrain.milestones is 'every' but pretrain.milestone_every is not set.")
        found = every_milestones(p.milestone_every, target)
    else:
        found = babylm_milestones(p.milestone_unit, up_to=target)
    if not found or found[-1] != target:
        found.append(target)
    return found


def validate(cfg: ExperimentConfig) -> None:
    """Catch config mistakes before anything is written or imported: shape, milestone
    settings, and a model that cannot fit in this machine's memory."""
    p = cfg.pretrain
    resolve_shape(cfg.student)  # unknown preset, width not divisible by heads
    if p.milestones == "every":
        if p.milestone_every is None:
            raise UserError("pretrain.milestones is 'every' but pretrain.milestone_every is not set.")
        if p.milestone_every <= 0:
            raise UserError(f"pretrain.milestone_every must be a positive word count, got {p.milestone_every}.")
    elif p.milestone_unit <= 0:
        raise UserError(f"pretrain.milestone_unit must be a positive word count, got {p.milestone_unit}.")
    if p.max_words is not None and p.max_words <= 0:
        raise UserError(f"pretrain.max_words must be a positive word count, got {p.max_words}.")
    if cfg.corpus.word_budget is not None:
        most = math.floor(p.epochs * cfg.corpus.word_budget)  # the corpus holds at most its budget
        if most <= 0:
            raise UserError(
                f"pretrain.epochs={p.epochs:g} of at most {cfg.corpus.word_budget:,} corpus words is a target of "
                "zero words; raise pretrain.epochs."
            )
    check_memory(cfg, on_gpu=False)


def check_memory(cfg: ExperimentConfig, on_gpu: bool) -> None:
    """Refuse a student that cannot fit in memory (RAM, or the GPU's): one sentence at once
    instead of the allocator failing after minutes of data preparation."""
    shape = resolve_shape(cfg.student)
    needed = preflight.student_training_bytes(
        n_layer=shape.n_layer,
        n_embd=shape.n_embd,
        context_length=shape.context_length,
        vocab_size=cfg.tokenizer.vocab_size,
        batch_size=cfg.pretrain.batch_size,
        learned_positions=shape.arch == "gpt2",
    )
    what = f"Training this student ({shape.n_layer} layers, width {shape.n_embd}, context {shape.context_length:,})"
    preflight.memory_for(needed, what, on_gpu=on_gpu)


# --------------------------------------------------------------------------- model and optimizer
def build_or_resume_model(cfg: ExperimentConfig, tokenizer, start_from: Path | None):
    """A fresh student, or the weights of the resume point (a damaged file is one sentence)."""
    import torch

    from onceupon.student.model import build_student

    if start_from is None:
        model = build_student(cfg.student, tokenizer)
    else:
        fix = "restore that directory from a backup or start a new run"
        model = load_model(start_from, fix, dtype=torch.float32)
    model.config.use_cache = False
    return model


def make_optimizer(model, p, n_steps: int, device_type: str):
    """AdamW (no weight decay on biases and norms) and the warmup-then-decay schedule."""
    import torch
    from transformers import get_scheduler

    decay = [t for t in model.parameters() if t.dim() >= 2]
    no_decay = [t for t in model.parameters() if t.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=p.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-8,
        fused=device_type in ("cuda", "cpu"),  # one kernel for all parameters
    )
    warmup = math.ceil(p.warmup_fraction * n_steps)
    kind = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[p.schedule]
    scheduler = get_scheduler(kind, optimizer, num_warmup_steps=warmup, num_training_steps=n_steps)
    return optimizer, scheduler


# --------------------------------------------------------------------------- the run in memory
@dataclass
class Counters:
    """What the loop counts; saved in every resume state so a resumed run continues exactly."""

    step: int = 0  # optimizer steps done
    train_seconds: float = 0.0  # time spent training (checkpoint writing excluded)
    loss_sum: Any = 0.0  # token losses since the last metrics row (a device tensor while training)
    loss_targets: int = 0  # targets those losses are over
    last_log_step: int = 0  # step of the last metrics row
    skipped: int = 0  # steps not applied for a non-finite loss or gradient (pretrain.skip_nonfinite)


@dataclass
class Training:
    """One pretraining run while it trains: what :func:`setup` builds and the steps share."""

    cfg: ExperimentConfig
    run_dir: Path
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    tokenizer: Any
    packed: Any
    plan: Any
    milestones: list[int]
    counters: Counters = field(default_factory=Counters)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def global_batch(self) -> int:
        return self.plan.global_batch

    def words_after(self, step: int) -> int:
        return int(self.plan.words_after[step - 1])


def setup(cfg: ExperimentConfig, run_dir: Path, start_from: Path | None) -> Training:
    """Data, plan, model, optimizer and schedule; with ``start_from``, its resume state too."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers.utils import logging as hf_logging

    from onceupon.student.model import context_length
    from onceupon.student.plan import make_plan

    p = cfg.pretrain
    hf_logging.disable_progress_bar()  # one "writing shards" bar per checkpoint drowns our own
    accelerator = Accelerator(mixed_precision=mixed_precision(p.precision))
    if accelerator.device.type == "cuda":
        check_memory(cfg, on_gpu=True)
    tokenizer, packed = prepare_data(cfg, run_dir, accelerator)
    global_batch = p.batch_size * p.grad_accum * accelerator.num_processes
    plan = make_plan(
        packed.words, packed.valid, epochs=p.epochs, max_words=p.max_words, global_batch=global_batch, seed=p.seed, shuffle=p.shuffle
    )
    set_seed(p.seed)
    model = build_or_resume_model(cfg, tokenizer, start_from)
    if context_length(model) != packed.context_length:
        raise UserError(f"The student's context ({context_length(model)}) differs from the packed data's ({packed.context_length}).")
    optimizer, scheduler = make_optimizer(model, p, plan.n_steps, accelerator.device.type)
    model, optimizer = accelerator.prepare(model, optimizer)
    t = Training(cfg, run_dir, accelerator, model, optimizer, scheduler, tokenizer, packed, plan, milestones_for(cfg, plan.target_words))
    if start_from is not None:
        load_resume_state(t, start_from)
    t.counters.loss_sum = torch.tensor(float(t.counters.loss_sum), device=accelerator.device)
    return t


# --------------------------------------------------------------------------- resume state
def resume_state(t: Training) -> dict:
    """Everything a resume needs beyond the weights (:mod:`onceupon.lifecycle.resume`'s format)."""
    c = t.counters
    return {
        "step": c.step,
        "global_batch": t.global_batch,
        "optimizer": t.optimizer.state_dict(),
        "scheduler": t.scheduler.state_dict(),
        "rng": rng.capture_rng(),
        "train_seconds": c.train_seconds,
        "loss_sum": float(c.loss_sum),
        "loss_targets": c.loss_targets,
        "last_log_step": c.last_log_step,
        "skipped": c.skipped,
    }


def load_resume_state(t: Training, start_from: Path) -> None:
    """Continue after ``start_from``: refuse a state from other data or another batch size."""
    p = t.cfg.pretrain
    state = read_resume_state(start_from)
    if state["global_batch"] != t.global_batch:
        raise UserError(
            f"This run was trained with a global batch of {state['global_batch']} sequences "
            f"(batch_size x grad_accum x processes) but would now use {t.global_batch}; resume it with "
            f"{state['global_batch'] // (p.batch_size * p.grad_accum)} process(es)."
        )
    step = int(state["step"])
    if step > t.plan.n_steps or t.plan.words_before(step) != read_meta(start_from).pretrain_words:
        raise UserError(f"{start_from} does not match this run's data (words seen differ); the corpus or packed data changed.")
    t.optimizer.load_state_dict(state["optimizer"])
    t.scheduler.load_state_dict(state["scheduler"])
    rng.restore_rng(state["rng"])
    # Older states lack the running loss: the first metrics row after resuming then averages
    # only the steps since the resume point.
    t.counters = Counters(
        step=step,
        train_seconds=float(state.get("train_seconds", 0.0)),
        loss_sum=float(state.get("loss_sum", 0.0)),
        loss_targets=int(state.get("loss_targets", 0)),
        last_log_step=int(state.get("last_log_step", step)),
        skipped=int(state.get("skipped", 0)),
    )


def write_state_fn(t: Training):
    """``save_checkpoint``'s ``write_state``: the resume state and a readable progress file."""
    step = t.counters.step
    return state_writer(resume_state(t), {"step": step, "words_seen": t.words_after(step), "n_steps": t.plan.n_steps})


def checkpoint_meta(t: Training, name: str, final: bool) -> CheckpointMeta:
    step = t.counters.step
    words = t.words_after(step)
    return CheckpointMeta(
        name=name,
        stage="pretrain",
        pretrain_words=words,
        step=step,
        extra={
            "final": final,
            "target_words": t.plan.target_words,
            "corpus_words": t.packed.total_words,
            "tokens_seen": int(t.plan.tokens_after[step - 1]),
            "epochs_seen": round(words / t.packed.total_words, 6),
            "train_seconds": round(t.counters.train_seconds, 3),
        },
    )


def save_milestone(t: Training, milestone: int) -> Path:
    """The checkpoint for ``milestone`` (reached at the step just done), then the pruning of
    older resume states, the stale resume point and, if configured, the Hub push."""
    p = t.cfg.pretrain
    final = t.counters.step == t.plan.n_steps and milestone == t.milestones[-1]
    name = checkpoint_name(milestone, t.words_after(t.counters.step))
    model = t.accelerator.unwrap_model(t.model)
    path = save_checkpoint(t.run_dir / "checkpoints" / name, model, t.tokenizer, checkpoint_meta(t, name, final), write_state_fn(t))
    if p.keep_resume_state == "latest":
        prune_resume_states(t.run_dir, path)
    shutil.rmtree(t.run_dir / RESUME_POINT, ignore_errors=True)
    if p.push_to_hub:
        from onceupon.student.hub import push_pending

        push_pending(t.run_dir, p.push_to_hub)
    return path


def save_resume_point(t: Training) -> Path:
    """``RUN/resume_point``: weights and resume state after the current step (a safe stop)."""
    model = t.accelerator.unwrap_model(t.model)
    meta = checkpoint_meta(t, RESUME_POINT, final=False)
    return save_checkpoint(t.run_dir / RESUME_POINT, model, t.tokenizer, meta, write_state_fn(t))


# --------------------------------------------------------------------------- one step
def make_batch(packed, indices: np.ndarray, device):
    """Inputs, next-token targets (padding is never a target) and, only for the rare
    micro-batch holding the padded last sequence, an attention mask. Without padding the
    model runs plain causal attention, the fastest path."""
    import torch

    seq_len = packed.context_length
    positions = np.arange(seq_len)
    indices = np.sort(indices)  # reading a memory map in order is faster; order within a step is irrelevant
    x = np.asarray(packed.tokens[indices], dtype=np.int64)
    valid = packed.valid[indices]
    y = np.full_like(x, -100)
    y[:, :-1] = x[:, 1:]
    y[positions[None, :] >= valid[:, None] - 1] = -100
    tensors = [torch.from_numpy(x), torch.from_numpy(y)]
    if (valid < seq_len).any():
        tensors.append(torch.from_numpy((positions[None, :] < valid[:, None]).astype(np.int64)))
    if device.type == "cuda":
        tensors = [t.pin_memory() for t in tensors]
    tensors = [t.to(device, non_blocking=True) for t in tensors]
    return tensors[0], tensors[1], (tensors[2] if len(tensors) == 3 else None)


def train_step(t: Training):
    """One optimizer step on the plan's sequences for ``t.counters.step``; returns the
    learning rate used, the gradient norm before clipping and whether the step was applied.

    A step whose loss or gradient norm is not finite is not applied (no optimizer step, its
    loss kept out of the metrics; lifecycle/divergence.py), but it counts as taken: the plan's
    words and the schedule move on, as a mixed-precision trainer's skipped step does."""
    import torch
    import torch.nn.functional as F

    p, acc, packed, world = t.cfg.pretrain, t.accelerator, t.packed, t.world
    sequences = t.plan.step_sequences(t.counters.step)
    # Loss = sum of token losses / all targets of the global step, so the gradient is the
    # exact per-token mean however the step is split (short last step, several processes).
    # DDP averages over processes, hence the factor ``world``.
    scale = world / max(int(packed.valid[sequences].sum()) - len(sequences), 1)
    step_loss, step_targets = torch.zeros((), device=acc.device), 0
    for micro in range(p.grad_accum):
        first = (micro * world + acc.process_index) * p.batch_size
        mine = sequences[first : first + p.batch_size]
        weight = 1.0
        if len(mine) == 0:
            if world == 1:
                continue
            mine, weight = sequences[:1], 0.0  # keep DDP's collectives in step; contributes zero
        x, y, mask = make_batch(packed, mine, acc.device)
        # Gradients are all-reduced once per step, on the last micro-batch.
        last_micro = micro == p.grad_accum - 1
        with acc.no_sync(t.model) if (world > 1 and not last_micro) else nullcontext():
            logits = t.model(input_ids=x, attention_mask=mask, use_cache=False).logits
            # The loss in fp32 even when the model ran in bf16 (a no-op in fp32).
            logits = logits.float().view(-1, logits.size(-1))
            token_loss = F.cross_entropy(logits, y.view(-1), ignore_index=-100, reduction="sum")
            acc.backward(token_loss * (scale * weight))
        if weight:
            step_loss += token_loss.detach()
            step_targets += int(packed.valid[mine].sum()) - len(mine)
    grad_norm = acc.clip_grad_norm_(t.model.parameters(), p.max_grad_norm) if p.max_grad_norm else None
    lr = t.scheduler.get_last_lr()[0]
    # The gradient norm is all-reduced (the same on every process); a process's own loss is
    # not, so under DDP the processes agree on the flag before deciding.
    finite = torch.isfinite(step_loss) & (torch.isfinite(grad_norm) if grad_norm is not None else True)
    if world > 1:
        finite = acc.reduce(finite.float().reshape(1), reduction="sum") == world
    applied = bool(finite)
    if applied:
        t.optimizer.step()
        t.counters.loss_sum += step_loss
        t.counters.loss_targets += step_targets
    with warnings.catch_warnings():  # torch warns of a schedule step without an optimizer step
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before", UserWarning)
        t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    t.counters.step += 1
    return lr, grad_norm, applied


def log_metrics(t: Training, logger, lr: float, grad_norm, seconds: float) -> None:
    """One metrics row: mean loss per target since the last row, learning rate, words, speed."""
    c, plan = t.counters, t.plan
    words = t.words_after(c.step)
    tokens = int(plan.tokens_after[c.step - 1]) - (int(plan.tokens_after[c.last_log_step - 1]) if c.last_log_step else 0)
    logger.log(
        c.step,
        {
            # .item() waits for the device: only here. None: every step since the last row was skipped.
            "loss": c.loss_sum.item() / c.loss_targets if c.loss_targets else None,
            "learning_rate": lr,
            "words_seen": words,
            "epoch": words / t.packed.total_words,
            "tokens_per_s": tokens / max(seconds, 1e-9),
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "skipped_steps": c.skipped,
        },
    )
    c.loss_sum.zero_()
    c.loss_targets = 0
    c.last_log_step = c.step


# --------------------------------------------------------------------------- the loop
def train(t: Training) -> None:
    """Steps until the word target, a metrics row every ``log_every`` steps, a checkpoint at
    each milestone; on Ctrl-C/SIGTERM a resume point after the current step, then
    :class:`~onceupon.lifecycle.stop.Stopped`."""
    from onceupon.tracking import MetricsLogger, progress_bar

    p, c, plan = t.cfg.pretrain, t.counters, t.plan
    logger = MetricsLogger(t.run_dir, resume_step=c.step) if t.main else None
    t.model.train()
    last_log_time = time.perf_counter()
    try:
        with progress_bar("words", disable=None if t.main else True) as bar, stop.stop_on_signals():
            task = bar.add_task("pretrain", total=plan.target_words, completed=plan.words_before(c.step))
            while c.step < plan.n_steps:
                t0 = time.perf_counter()
                lr, grad_norm, applied = train_step(t)
                if not applied:
                    skip_step(t)
                bar.update(task, completed=min(t.words_after(c.step), plan.target_words))
                if logger is not None and (c.step % p.log_every == 0 or c.step == plan.n_steps):
                    log_metrics(t, logger, lr, grad_norm, time.perf_counter() - last_log_time)
                    last_log_time = time.perf_counter()
                c.train_seconds += time.perf_counter() - t0  # everything but checkpoint writing
                paused = time.perf_counter()
                reached = crossed(t.milestones, plan.words_before(c.step - 1), t.words_after(c.step))
                if reached and t.main:
                    for milestone in reached:
                        save_milestone(t, milestone)
                if c.step < plan.n_steps and stop.stop_agreed(t.accelerator):
                    stop_run(t, saved=bool(reached))
                last_log_time += time.perf_counter() - paused  # checkpoint writing is not training time
    finally:
        if logger is not None:
            logger.close()


def skip_step(t: Training) -> None:
    """Count a step that was not applied (non-finite loss or gradient); one more than
    ``pretrain.skip_nonfinite`` allows stops the run before anything of it is saved."""
    c, allowed = t.counters, t.cfg.pretrain.skip_nonfinite
    c.skipped += 1
    if c.skipped > allowed:
        t.accelerator.wait_for_everyone()
        raise Diverged(divergence.message("pretrain", c.step, "the loss or gradients are", t.run_dir, allowed))
    if t.main:
        log(f"step {c.step}: the loss or gradients are not finite; the step was skipped ({c.skipped} of {allowed} allowed by pretrain.skip_nonfinite).", echo=True)


def stop_run(t: Training, saved: bool) -> None:
    """End a run that was asked to stop: save a resume point (unless the step just done
    wrote a checkpoint) and raise :class:`~onceupon.lifecycle.stop.Stopped`."""
    if t.main and not saved:
        save_resume_point(t)
    t.accelerator.wait_for_everyone()  # no process may exit while the main one still writes
    words = t.words_after(t.counters.step)
    message = (
        f"stopped after step {t.counters.step} of {t.plan.n_steps} ({words:,} words seen), progress saved; "
        f"continue with `onceupon pretrain --resume {t.run_dir}`."
    )
    raise stop.Stopped(message if t.main else "", stop.stop_exit_code())


# --------------------------------------------------------------------------- the stage
def _stage(cfg: ExperimentConfig, run_dir: Path, resume: bool) -> list[Path]:
    """The stage, once :func:`run` holds the lock: data, then the loop, then the summary."""
    latest = latest_checkpoint(run_dir) if resume else None
    if latest is not None and read_meta(latest).extra.get("final"):
        return _already_complete(cfg, run_dir, latest)
    start_from = find_resume_point(run_dir) if resume else None
    main = lock.is_global_main()  # under ``accelerate launch``: the global main process only
    note = _fallback(run_dir, start_from) if resume and main else None
    if note:
        log(note, echo=True)
    try:
        if main:
            prepare_run(cfg, run_dir, resume)
        t = setup(cfg, run_dir, start_from)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while preparing: every write so far is atomic
        raise stop.Stopped(_interrupted_message(run_dir) if main else "", stop.stop_exit_code()) from None
    try:
        train(t)
    except UserError as e:  # what stopped the run mid-way, kept with the run's own record
        log(f"error: {e}")
        raise
    t.accelerator.wait_for_everyone()
    checkpoints = list_checkpoints(run_dir)
    if t.main:
        print(
            f"pretrained {t.plan.words_after[-1]:,} words in {t.plan.n_steps} steps; "
            f"{len(checkpoints)} checkpoints in {run_dir / 'checkpoints'}",
            file=sys.stderr,
        )
    return checkpoints


def _fallback(run_dir: Path, start_from: Path | None) -> str | None:
    """The sentence a resume says when it continues from an earlier step than the run's newest
    record (a checkpoint, the resume point, a metrics row), naming the steps trained again and
    why; None when it continues from the newest."""
    steps = [read_meta(p).step for p in list_checkpoints(run_dir)]
    try:  # unreadable records are no newer record: the resume point's metrics are rewritten anyway
        if (run_dir / RESUME_POINT / "onceupon.json").is_file():
            steps.append(read_meta(run_dir / RESUME_POINT).step)
        if (run_dir / "metrics.csv").is_file():
            steps += [int(row["step"]) for row in read_metrics(run_dir / "metrics.csv") if "step" in row]
    except (UserError, OSError):
        pass
    step = read_meta(start_from).step if start_from is not None else 0
    newest = max(steps, default=0)
    if newest <= step:
        return None
    where = f"{start_from} (step {step})" if start_from is not None else "the start (step 0)"
    return (
        f"--resume continues from {where}, not from step {newest} that {run_dir} recorded: "
        f"{passed_over(run_dir, start_from)}; steps {step + 1}-{newest} are trained again."
    )


def _interrupted_message(run_dir: Path) -> str:
    if (run_dir / "config.yaml").is_file():
        return f"interrupted before training started; continue with `onceupon pretrain --resume {run_dir}`."
    return "interrupted before the run started (nothing to resume); run the same command again."


def _already_complete(cfg: ExperimentConfig, run_dir: Path, final: Path) -> list[Path]:
    if cfg.pretrain.push_to_hub:
        from onceupon.student.hub import push_pending

        push_pending(run_dir, cfg.pretrain.push_to_hub)
    print(f"{run_dir} is already complete ({final.name}); nothing to resume.", file=sys.stderr)
    return list_checkpoints(run_dir)
