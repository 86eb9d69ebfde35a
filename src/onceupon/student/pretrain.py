"""``onceupon pretrain``: train a tokenizer and a student from scratch on a word budget.

The stage, top to bottom:

1. the corpus (``RUN/corpus``, built by :mod:`onceupon.corpus.build` if absent);
2. the tokenizer (``RUN/tokenizer``), trained on that corpus once and reused on resume;
3. the packed data (``RUN/packed``): documents as ``<s> text </s>``, concatenated, cut into
   sequences of the context length, each with its exact word count (:mod:`.packing`);
4. the plan: which sequences each optimizer step sees and the exact words seen after it
   (:mod:`.plan`);
5. next-word prediction with AdamW, warmup and decay, gradient accumulation and bf16 autocast
   where the hardware has it, through ``accelerate`` so that ``accelerate launch`` runs the
   very same code on several GPUs or nodes (DDP);
6. a checkpoint ``RUN/checkpoints/chck_{N}M`` after the step at which the words seen first
   reach each milestone, and a final one at the word target.

Milestones and overshoot: a step adds a whole global batch of words at once, so the words
seen usually pass a milestone mid-step. The checkpoint is written after that step, is named
after the milestone (``chck_2M``), and its ``onceupon.json`` records the exact words seen
(``pretrain_words``, at least the milestone, at most one step's words above it). When one
step passes several milestones (only in tiny runs), each gets a checkpoint of the same
weights. The word target (``epochs x corpus words``, or ``max_words`` if smaller) is always the
last milestone.

Resume: every checkpoint (by default only the latest, see ``keep_resume_state``) holds
``trainer_state/`` with the optimizer, scheduler, RNG states and the number of steps done.
Because the plan is a pure function of the data and seed, ``--resume`` restarts at exactly the
next step; on a CPU the resumed run's weights are bit-identical to an uninterrupted run's.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from onceupon.config import ExperimentConfig, load_config, save_config
from onceupon.errors import UserError
from onceupon.files import atomic_write_json, replace_dir
from onceupon.student.checkpoints import (
    STATE_DIR,
    CheckpointMeta,
    latest_checkpoint,
    list_checkpoints,
    read_meta,
    save_checkpoint,
)
from onceupon.student.model import resolve_shape
from onceupon.words import babylm_milestones, crossed, every_milestones, milestone_name

TOKENIZER_DIR = "tokenizer"
PACKED_DIR = "packed"
STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"


# --------------------------------------------------------------------------- entry points
def run(cfg: ExperimentConfig | None, run_dir: str | Path, resume: bool = False) -> list[Path]:
    """The ``onceupon pretrain`` command: a new run (``cfg``) or ``--resume`` (config read
    from ``RUN/config.yaml``)."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir} is not a pretraining run to resume (it has no config.yaml).")
        cfg = load_config(run_dir / "config.yaml")
    else:
        assert cfg is not None
        _check_new_run(run_dir)
    return pretrain(cfg, run_dir, resume=resume)


def _check_new_run(run_dir: Path) -> None:
    """A new run may reuse a directory holding only a corpus, never an earlier run's training."""
    if list_checkpoints(run_dir) or (run_dir / TOKENIZER_DIR).exists() or (run_dir / PACKED_DIR).exists():
        raise UserError(f"{run_dir} already holds a pretraining run; continue it with --resume {run_dir} or pick a new --out.")


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
    """Catch config mistakes before anything is written."""
    resolve_shape(cfg.student)  # unknown preset, width not divisible by heads
    if cfg.pretrain.milestones == "every" and cfg.pretrain.milestone_every is None:
        raise UserError("pretrain.milestones is 'every' but pretrain.milestone_every is not set.")


# --------------------------------------------------------------------------- preparation
def ensure_tokenizer(cfg: ExperimentConfig, run_dir: Path, documents_fn, context_length: int):
    """``RUN/tokenizer``: trained on the corpus the first time, loaded afterwards."""
    from onceupon.student.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    directory = run_dir / TOKENIZER_DIR
    if (directory / "tokenizer.json").is_file():
        return load_tokenizer(directory)
    tokenizer = train_tokenizer(documents_fn(), cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency)
    tokenizer.model_max_length = context_length  # lets evaluation truncate to what the model knows
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tokenizer(tokenizer, tmp)
    replace_dir(tmp, directory)
    return load_tokenizer(directory)


def ensure_packed(run_dir: Path, tokenizer, documents_fn, context_length: int, show_progress: bool):
    from onceupon.student.packing import build_packed, load_packed, save_packed

    directory = run_dir / PACKED_DIR
    packed = load_packed(directory)
    if packed is not None and packed.context_length == context_length:
        return packed
    save_packed(build_packed(tokenizer, documents_fn(), context_length, show_progress=show_progress), directory)
    return load_packed(directory)


def _mixed_precision(precision: str) -> str:
    import torch

    if precision == "fp32":
        return "no"
    if precision == "bf16":
        return "bf16"
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


# --------------------------------------------------------------------------- resume state
def _rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- the stage
def pretrain(cfg: ExperimentConfig, run_dir: str | Path, *, resume: bool = False) -> list[Path]:
    """Pretrain a student in ``run_dir``; returns the run's checkpoints (programmatic use).

    With ``resume`` the run continues after its latest checkpoint (or starts over when it has
    none yet); a finished run is left as it is.
    """
    from onceupon.corpus.build import ensure_corpus, load_documents

    run_dir = Path(run_dir)
    p = cfg.pretrain
    validate(cfg)

    start_from = latest_checkpoint(run_dir) if resume else None
    if start_from is not None and read_meta(start_from).extra.get("final"):
        if p.push_to_hub:
            from onceupon.student.hub import push_pending

            push_pending(run_dir, p.push_to_hub)
        print(f"{run_dir} is already complete ({start_from.name}); nothing to resume.", file=sys.stderr)
        return list_checkpoints(run_dir)
    if start_from is not None and not (start_from / STATE_DIR / STATE_FILE).is_file():
        raise UserError(f"{start_from} has no resume state ({STATE_DIR}/); the run cannot continue from it.")

    # Checks that can fail on user input run before torch is even imported, in the global
    # main process only (``RANK`` is set by ``accelerate launch``): a bad corpus or an
    # unreachable Hub ends the command within a second and writes nothing.
    if os.environ.get("RANK", "0") == "0":
        if p.push_to_hub:
            from onceupon.student.hub import check_access, push_pending

            check_access(p.push_to_hub, p.hub_private)
            if resume:
                push_pending(run_dir, p.push_to_hub)
        ensure_corpus(cfg, run_dir)
        if not resume:
            save_config(cfg, run_dir)

    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoModelForCausalLM, get_scheduler
    from transformers.utils import logging as hf_logging

    from onceupon.student.model import build_student, context_length
    from onceupon.student.plan import make_plan
    from onceupon.tracking import MetricsLogger, progress_bar

    hf_logging.disable_progress_bar()  # one "writing shards" bar per checkpoint drowns our own
    accelerator = Accelerator(mixed_precision=_mixed_precision(p.precision))
    main = accelerator.is_main_process

    # ---- data: the main process builds, the others then find it on disk
    shape = resolve_shape(cfg.student)
    with accelerator.main_process_first():
        corpus_dir = ensure_corpus(cfg, run_dir)  # the main process built it above: a quick check
        cache: dict[str, list[str]] = {}

        def documents() -> list[str]:
            if "docs" not in cache:
                cache["docs"] = load_documents(corpus_dir)
            return cache["docs"]

        tokenizer = ensure_tokenizer(cfg, run_dir, documents, shape.context_length)
        packed = ensure_packed(run_dir, tokenizer, documents, shape.context_length, show_progress=main)
        cache.clear()

    world = accelerator.num_processes
    global_batch = p.batch_size * p.grad_accum * world
    plan = make_plan(
        packed.words,
        packed.valid,
        epochs=p.epochs,
        max_words=p.max_words,
        global_batch=global_batch,
        seed=p.seed,
        shuffle=p.shuffle,
    )
    milestones = milestones_for(cfg, plan.target_words)

    # ---- model, optimizer, schedule
    set_seed(p.seed)
    if start_from is not None:
        model = AutoModelForCausalLM.from_pretrained(start_from, dtype=torch.float32)
    else:
        model = build_student(cfg.student, tokenizer)
    model.config.use_cache = False
    if context_length(model) != packed.context_length:
        raise UserError(f"The student's context ({context_length(model)}) differs from the packed data's ({packed.context_length}).")
    decay = [t for t in model.parameters() if t.dim() >= 2]
    no_decay = [t for t in model.parameters() if t.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=p.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-8,
        fused=accelerator.device.type in ("cuda", "cpu"),  # one kernel for all parameters
    )
    warmup = math.ceil(p.warmup_fraction * plan.n_steps)
    kind = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[p.schedule]
    scheduler = get_scheduler(kind, optimizer, num_warmup_steps=warmup, num_training_steps=plan.n_steps)
    model, optimizer = accelerator.prepare(model, optimizer)

    step = 0
    train_seconds = 0.0
    if start_from is not None:
        meta = read_meta(start_from)
        state = torch.load(start_from / STATE_DIR / STATE_FILE, map_location="cpu", weights_only=False)
        if state["global_batch"] != global_batch:
            raise UserError(
                f"This run was trained with a global batch of {state['global_batch']} sequences "
                f"(batch_size x grad_accum x processes) but would now use {global_batch}; resume it with "
                f"{state['global_batch'] // (p.batch_size * p.grad_accum)} process(es)."
            )
        step = int(state["step"])
        if step > plan.n_steps or plan.words_before(step) != meta.pretrain_words:
            raise UserError(f"{start_from} does not match this run's data (words seen differ); the corpus or packed data changed.")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        train_seconds = float(state.get("train_seconds", 0.0))

    logger = MetricsLogger(run_dir, resume_step=step) if main else None

    # ---- helpers bound to this run
    device = accelerator.device
    rank = accelerator.process_index
    seq_len = packed.context_length
    positions = np.arange(seq_len)
    pin = device.type == "cuda"

    def batch(indices: np.ndarray):
        """Inputs, next-token targets (padding is never a target) and, only for the rare
        micro-batch holding the padded last sequence, an attention mask. Without padding
        the model runs plain causal attention, the fastest path."""
        indices = np.sort(indices)  # reading a memory map in order is faster; order within a step is irrelevant
        x = np.asarray(packed.tokens[indices], dtype=np.int64)
        valid = packed.valid[indices]
        y = np.full_like(x, -100)
        y[:, :-1] = x[:, 1:]
        y[positions[None, :] >= valid[:, None] - 1] = -100
        tensors = [torch.from_numpy(x), torch.from_numpy(y)]
        if (valid < seq_len).any():
            tensors.append(torch.from_numpy((positions[None, :] < valid[:, None]).astype(np.int64)))
        if pin:
            tensors = [t.pin_memory() for t in tensors]
        tensors = [t.to(device, non_blocking=True) for t in tensors]
        return tensors[0], tensors[1], (tensors[2] if len(tensors) == 3 else None)

    def write_state_fn(steps_done: int):
        def write(directory: Path) -> None:
            torch.save(
                {
                    "step": steps_done,
                    "global_batch": global_batch,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(),
                    "train_seconds": train_seconds,
                },
                directory / STATE_FILE,
            )
            atomic_write_json(
                directory / PROGRESS_FILE,
                {"step": steps_done, "words_seen": int(plan.words_after[steps_done - 1]), "n_steps": plan.n_steps},
            )

        return write

    def save(name: str, steps_done: int, final: bool) -> Path:
        words = int(plan.words_after[steps_done - 1])
        meta = CheckpointMeta(
            name=name,
            stage="pretrain",
            pretrain_words=words,
            step=steps_done,
            extra={
                "final": final,
                "target_words": plan.target_words,
                "corpus_words": packed.total_words,
                "tokens_seen": int(plan.tokens_after[steps_done - 1]),
                "epochs_seen": round(words / packed.total_words, 6),
                "train_seconds": round(train_seconds, 3),
            },
        )
        path = save_checkpoint(
            run_dir / "checkpoints" / name, accelerator.unwrap_model(model), tokenizer, meta, write_state=write_state_fn(steps_done)
        )
        if p.keep_resume_state == "latest":
            for older in list_checkpoints(run_dir):
                if older != path and read_meta(older).step < steps_done:
                    shutil.rmtree(older / STATE_DIR, ignore_errors=True)
        if p.push_to_hub:
            from onceupon.student.hub import push_pending

            push_pending(run_dir, p.push_to_hub)
        return path

    # ---- the loop
    model.train()
    running_loss = torch.zeros((), device=device)
    running_targets = 0
    last_log_step, last_log_time = step, time.perf_counter()
    grad_norm = None
    with progress_bar("words", disable=None if main else True) as bar:
        task = bar.add_task("pretrain", total=plan.target_words, completed=plan.words_before(step))
        while step < plan.n_steps:
            t0 = time.perf_counter()
            sequences = plan.step_sequences(step)
            # Loss = sum of token losses / all targets of the global step, so the gradient is
            # the exact per-token mean however the step is split (short last step, several
            # processes). DDP averages over processes, hence the factor ``world``.
            n_targets = int(packed.valid[sequences].sum()) - len(sequences)
            scale = world / max(n_targets, 1)
            for micro in range(p.grad_accum):
                first = (micro * world + rank) * p.batch_size
                mine = sequences[first : first + p.batch_size]
                last_micro = micro == p.grad_accum - 1
                if len(mine) == 0:
                    if world == 1:
                        continue
                    mine = sequences[:1]  # keep DDP's collectives in step; contributes zero below
                    weight = 0.0
                else:
                    weight = 1.0
                x, y, mask = batch(mine)
                # Gradients are all-reduced once per step, on the last micro-batch.
                context = accelerator.no_sync(model) if (world > 1 and not last_micro) else nullcontext()
                with context:
                    logits = model(input_ids=x, attention_mask=mask, use_cache=False).logits
                    # The loss in fp32 even when the model ran in bf16 (a no-op in fp32).
                    logits = logits.float().view(-1, logits.size(-1))
                    token_loss = F.cross_entropy(logits, y.view(-1), ignore_index=-100, reduction="sum")
                    accelerator.backward(token_loss * (scale * weight))
                if weight:
                    running_loss += token_loss.detach()
                    running_targets += int(packed.valid[mine].sum()) - len(mine)
            if p.max_grad_norm:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), p.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            words = int(plan.words_after[step - 1])
            bar.update(task, completed=min(words, plan.target_words))

            if logger is not None and (step % p.log_every == 0 or step == plan.n_steps):
                now = time.perf_counter()  # .item() below waits for the device: only here
                tokens = int(plan.tokens_after[step - 1]) - (int(plan.tokens_after[last_log_step - 1]) if last_log_step else 0)
                logger.log(
                    step,
                    {
                        "loss": running_loss.item() / max(running_targets, 1),
                        "learning_rate": lr,
                        "words_seen": words,
                        "epoch": words / packed.total_words,
                        "tokens_per_s": tokens / max(now - last_log_time, 1e-9),
                        "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    },
                )
                running_loss.zero_()
                running_targets = 0
                last_log_step, last_log_time = step, time.perf_counter()
            train_seconds += time.perf_counter() - t0  # everything but checkpoint writing

            reached = crossed(milestones, plan.words_before(step - 1), words)
            if reached and main:
                paused = time.perf_counter()
                for milestone in reached:
                    save(milestone_name(milestone), step, final=(step == plan.n_steps and milestone == milestones[-1]))
                last_log_time += time.perf_counter() - paused  # checkpoint writing is not training time
    accelerator.wait_for_everyone()
    if logger is not None:
        logger.close()
    checkpoints = list_checkpoints(run_dir)
    if main:
        print(
            f"pretrained {plan.words_after[-1]:,} words in {plan.n_steps} steps; "
            f"{len(checkpoints)} checkpoints in {run_dir / 'checkpoints'}",
            file=sys.stderr,
        )
    return checkpoints
