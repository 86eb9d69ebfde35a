"""BabyLM 2025 GLUE fine-tuning, with the official hyperparameters.

Each task's data is ``full_eval/glue_filtered/<task>.train.jsonl`` and ``<task>.valid.jsonl``
(the official pipeline predicts on the validation file too). The input text is made as the
official reader makes it: one text, or a pair of texts given to the tokenizer as a pair:

=========  ===========================================  ====================================
task       first text                                   second text
=========  ===========================================  ====================================
boolq      question                                     passage
mnli       premise                                      hypothesis
mrpc       sentence1                                    sentence2
multirc    "Question: {question} Answer: {answer}"      paragraph
qqp        question1                                    question2
rte        sentence1                                    sentence2
wsc        'Does "{span2_text}" refer to "{span1_text}" in this passage?'   text
=========  ===========================================  ====================================

The model is the checkpoint's transformer with the official classification head on top
(layer norm, linear, GELU, layer norm, dropout 0.1, linear to the labels; layer norms without
parameters, eps 1e-5), trained on cross-entropy with AdamW (learning rate 3e-5, betas 0.9 and
0.999, eps 1e-8, weight decay 0.01 on every parameter), a linear warmup over the first 6 % of
the steps then a cosine decay to 0.1 of the peak, batch 32 (16 for BoolQ and MultiRC), the
last incomplete training batch dropped, 10 epochs (30 for WSC), text cut at 512 tokens (or
the model's context, if shorter), seed 42, as ``eval_finetuning.sh`` runs it. After every
epoch the model is scored on the validation file (F1 for MRPC and QQP, accuracy otherwise)
and the best one is kept; its predictions are the task's result.

The head reads the hidden state of the last real token (``pooling="last"``), as the official
trainer does with ``--causal --take_final``. The official script's default reads the first
token, which in a causal model has seen only itself (the begin-of-sequence token), so every
input looks the same to the classifier; ``pooling="first"`` reproduces that.

Batches and randomness are drawn as the official trainer draws them: after ``seed`` seeds
Python's and torch's generators, the head is initialised, and each epoch takes its order from
a generator seeded by a number drawn from torch's global generator, one draw after another
that torch's ``DataLoader`` makes and discards each time it is iterated (the validation file
too); dropout draws from the global generator. So with the same tokenizer, model and seed,
onceupon's fine-tuning repeats the official trainer's run number for number: the first token
against the official default, the last token against the official code with its last-token
line mended (benchmarks/bench_glue_vs_official.py).

Resuming: ``out_dir/resume_point/trainer_state/`` (the one resume format of
:mod:`onceupon.lifecycle.resume`) holds the model, the best epoch's weights so far, the
optimizer, the schedule, every random generator, the epoch's order and where in it the run
is, the scores and losses of the epochs done. It is written atomically after every epoch, at least every
``save_every`` seconds and when Ctrl-C or SIGTERM asks to stop (then :class:`Stopped`); a
rerun of the same task, checkpoint, data and settings continues from it, and on a CPU ends
with exactly the numbers of an uninterrupted run. It is deleted once the task is done.

Data-parallel: under ``accelerate launch`` every process takes an equal share of each
global batch (the official batch of 32 or 16 examples, the same examples in the same order as
one process), DDP averages the gradients, so the optimizer sees the same mean gradient as the
single-process run; the validation file is split between the processes and the predictions
gathered. What differs from one process: dropout masks (each process draws its own) and
summation order, so the numbers are not bit-identical to a single-process run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from onceupon.errors import UserError
from onceupon.files import atomic_write_text, read_jsonl

GLUE_DIR = "glue_filtered"


@dataclass(frozen=True)
class GlueTask:
    first: tuple[str, ...]
    second: tuple[str, ...] | None
    first_template: str | None = None
    labels: int = 2
    batch_size: int = 32
    epochs: int = 10
    metric: str = "accuracy"


TASKS = {
    "boolq": GlueTask(("question",), ("passage",), batch_size=16),
    "mnli": GlueTask(("premise",), ("hypothesis",), labels=3),
    "mrpc": GlueTask(("sentence1",), ("sentence2",), metric="f1"),
    "multirc": GlueTask(("question", "answer"), ("paragraph",), "Question: {} Answer: {}", batch_size=16),
    "qqp": GlueTask(("question1",), ("question2",), metric="f1"),
    "rte": GlueTask(("sentence1",), ("sentence2",)),
    "wsc": GlueTask(("span2_text", "span1_text"), ("text",), 'Does "{}" refer to "{}" in this passage?', epochs=30),
}


@dataclass(frozen=True)
class Hyper:
    """The official fine-tuning settings (eval_finetuning.sh and the trainer's defaults)."""

    learning_rate: float = 3e-5
    weight_decay: float = 0.01
    warmup: float = 0.06
    min_factor: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    sequence_length: int = 512
    valid_batch_size: int = 64
    seed: int = 42
    pooling: str = "last"
    epochs: int | None = None  # None: the task's official number


def task_files(root: Path, task: str) -> tuple[Path, Path] | None:
    folder = Path(root) / GLUE_DIR
    train, valid = folder / f"{task}.train.jsonl", folder / f"{task}.valid.jsonl"
    return (train, valid) if train.is_file() and valid.is_file() else None


def read_examples(path: Path, task: str) -> tuple[list, list[int]]:
    """(texts, labels): a text is a string or a (first, second) pair, as the official reader."""
    spec = TASKS[task]
    texts, labels = [], []
    for k, row in enumerate(read_jsonl(path)):
        try:
            first = [str(row[key]) for key in spec.first]
            second = [str(row[key]) for key in spec.second] if spec.second else None
            label = int(row["label"])
        except KeyError as e:
            raise UserError(f"{path}, item {k + 1}: missing field {e}.") from None
        except (TypeError, ValueError):
            raise UserError(f"{path}, item {k + 1}: 'label' is not a whole number.") from None
        if not 0 <= label < spec.labels:
            raise UserError(f"{path}, item {k + 1}: label {label} is not one of the task's {spec.labels} labels.")
        a = spec.first_template.format(*first) if spec.first_template else " ".join(first)
        texts.append((a, " ".join(second)) if second is not None else a)
        labels.append(label)
    return texts, labels


@dataclass(frozen=True)
class TaskPlan:
    """What fine-tuning one task costs: examples, optimizer steps (each a forward and a
    backward pass over one batch), validation examples scored after each epoch."""

    train: int
    steps: int
    valid: int
    epochs: int

    def line(self, task: str) -> str:
        """What fine-tuning ``task`` costs, as the plan says it."""
        return (f"finetune {task}: {self.train:,} training examples, {self.steps:,} optimizer steps (forward and backward) "
                f"over {self.epochs} epochs, {self.valid:,} validation examples scored after each epoch")


def read_task(root: Path, task: str) -> tuple[tuple[Path, Path], tuple[list, list[int]], tuple[list, list[int]]]:
    """(the two files, (texts, labels) to train on, (texts, labels) to validate on) of a task,
    checked: both files there, every line whole (a file that is not UTF-8, a torn line, a
    missing field or label is one sentence), at least one batch to train on."""
    files = task_files(root, task)
    if files is None:
        raise UserError(f"No {task}.train.jsonl and {task}.valid.jsonl under {Path(root) / GLUE_DIR}.")
    train, valid = read_examples(files[0], task), read_examples(files[1], task)
    if len(train[0]) < TASKS[task].batch_size:
        raise UserError(f"{files[0]} has fewer examples ({len(train[0])}) than one batch ({TASKS[task].batch_size}).")
    return files, train, valid


def check_share(task: str, processes: int) -> None:
    """Data-parallel processes share each batch equally, or the official batch size would change."""
    if TASKS[task].batch_size % processes:
        raise UserError(f"{task}'s batch of {TASKS[task].batch_size} cannot be shared equally by {processes} processes; "
                        "use a number of processes that divides it.")


def plan_task(root: Path, task: str, hyper: Hyper = Hyper()) -> TaskPlan:
    """Reads and checks both files of a task (see :func:`read_task`) and says what fine-tuning it costs."""
    spec = TASKS[task]
    _, (train, _), (valid, _) = read_task(root, task)
    epochs = hyper.epochs or spec.epochs
    return TaskPlan(len(train), epochs * (len(train) // spec.batch_size), len(valid), epochs)


def cosine_with_warmup(warmup_steps: int, total_steps: int, min_factor: float) -> Callable[[int], float]:
    """The learning-rate factor at each step: linear warmup, then cosine down to min_factor."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(min_factor, min_factor + (1 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor


def metric(name: str, predictions: list[int], labels: list[int]) -> float:
    if name == "accuracy":
        return sum(p == y for p, y in zip(predictions, labels)) / len(labels)
    tp = sum(p == 1 and y == 1 for p, y in zip(predictions, labels))
    fp = sum(p == 1 and y == 0 for p, y in zip(predictions, labels))
    fn = sum(p == 0 and y == 1 for p, y in zip(predictions, labels))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0  # binary F1 of label 1, 0 when undefined (as scikit-learn)


def _classifier(model, labels: int, hyper: Hyper):
    import torch.nn as nn

    hidden = model.config.hidden_size

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = model
            self.head = nn.Sequential(
                nn.LayerNorm(hidden, hyper.layer_norm_eps, elementwise_affine=False),
                nn.Linear(hidden, hidden),
                nn.GELU(),
                nn.LayerNorm(hidden, hyper.layer_norm_eps, elementwise_affine=False),
                nn.Dropout(hyper.dropout),
                nn.Linear(hidden, labels),
            )

        def forward(self, ids, mask):
            import torch

            states = self.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
            if hyper.pooling == "first":
                pooled = states[:, 0]
            else:  # the last real token (right padding)
                pooled = states[torch.arange(states.size(0), device=states.device), mask.sum(1) - 1]
            return self.head(pooled)

    return Classifier()


RESUME_DIR = "resume_point"  # in a task's output folder, while the task is unfinished
SAVE_EVERY = 600.0  # seconds: a resume state at least this often (and after every epoch)
ETA_AFTER = 5  # steps: the ETA line comes after this many


def _loader_draw() -> int:
    """One number drawn from torch's global generator as a ``DataLoader`` draws it when it is
    iterated (its base seed, and a shuffling sampler's seed)."""
    import torch

    return int(torch.empty((), dtype=torch.int64).random_().item())


@dataclass
class _Progress:
    """Where a fine-tuning is: saved in its resume state."""

    epoch: int = 0  # epochs done
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps done in all
    order: list[int] | None = None  # the current epoch's order (None: not drawn yet)
    history: list[float] = field(default_factory=list)  # validation score after each epoch
    losses: list[float] = field(default_factory=list)  # mean training loss of each epoch
    loss_sum: float = 0.0  # training losses of the current epoch so far
    best: float | None = None
    best_state: dict | None = None


def _save_state(where: Path, key: str, model, optimizer, schedule, at: _Progress, total: int) -> None:
    """The resume state, written to a new folder and moved into place (never half written)."""
    from onceupon.files import replace_dir
    from onceupon.lifecycle import rng
    from onceupon.lifecycle.checkpoints import STATE_DIR
    from onceupon.lifecycle.resume import state_writer

    state = {"key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "rng": rng.capture_rng(), **at.__dict__}
    tmp = where.with_name(f".{where.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / STATE_DIR).mkdir(parents=True)
    state_writer(state, {"epoch": at.epoch, "batch": at.batch, "step": at.step, "steps": total})(tmp / STATE_DIR)
    replace_dir(tmp, where)


def _load_state(where: Path, key: str) -> dict | None:
    """The resume state of this very fine-tuning (same checkpoint, data and settings), if any;
    one of another is dropped (its task would be trained anew anyway)."""
    from onceupon.lifecycle.resume import has_resume_state, read_resume_state

    if not has_resume_state(where):
        return None
    state = read_resume_state(where)
    if state.get("key") != key:
        shutil.rmtree(where, ignore_errors=True)
        return None
    return state


def finetune(checkpoint: Path, task: str, data_root: Path, out_dir: Path, hyper: Hyper = Hyper(), device: str = "cpu",
             progress: Callable[[str, int, int], None] | None = None, *, key: str | None = None,
             save_every: float = SAVE_EVERY, accelerator=None) -> dict:
    """Fine-tune a copy of the checkpoint on one GLUE task; writes ``out_dir/predictions.json``
    (the official format) and ``out_dir/results.json``; returns the results.

    ``progress(task, step, total)`` is called once before training (with the step a resumed
    run starts from) and after every optimizer step. ``key`` names what the run depends on
    (checkpoint, data, settings); a resume state of another key is not continued (default:
    the settings, the data files' digests and the checkpoint's files). ``accelerator``: an
    ``accelerate.Accelerator`` (data-parallel under ``accelerate launch``); default: one
    process on ``device``."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel

    from onceupon.lifecycle import rng, stop
    from onceupon.student.checkpoints import load_checkpoint_tokenizer
    from onceupon.student.model import context_length
    from onceupon.tracking import _duration, log

    spec = TASKS[task]
    files, (train_texts, train_labels), (valid_texts, valid_labels) = read_task(data_root, task)
    epochs = hyper.epochs or spec.epochs
    per_epoch = len(train_texts) // spec.batch_size  # the last incomplete batch is dropped
    world, rank, main = 1, 0, True
    if accelerator is not None:
        world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
        device = accelerator.device
    check_share(task, world)
    share = spec.batch_size // world
    if key is None:
        key = task_key(checkpoint, files, hyper)
    out_dir = Path(out_dir)
    where = out_dir / RESUME_DIR
    state = _load_state(where, key)

    # The official order of what draws random numbers: seeds, the model, the head, the loaders.
    random.seed(hyper.seed)
    torch.manual_seed(hyper.seed)
    tokenizer = load_checkpoint_tokenizer(checkpoint, "copy or save that checkpoint again")
    base = AutoModel.from_pretrained(checkpoint, dtype=torch.float32)
    length = min(hyper.sequence_length, context_length(base))
    model = _classifier(base, spec.labels, hyper).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    total = epochs * per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=hyper.learning_rate, betas=hyper.betas, eps=hyper.eps,
                                  weight_decay=hyper.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(int(hyper.warmup * total), total, hyper.min_factor))
    at = _Progress()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        rng.restore_rng(state["rng"])
        at = _Progress(**{k: state[k] for k in _Progress.__dataclass_fields__})
        if main:
            log(f"finetune {task}: continuing from step {at.step} of {total} (epoch {at.epoch + 1}), saved in {where}", echo=True)
    trained = model
    if accelerator is not None:
        trained, optimizer = accelerator.prepare(model, optimizer)

    def batch(texts):
        if isinstance(texts[0], tuple):
            enc = tokenizer([a for a, _ in texts], [b for _, b in texts], truncation=True, max_length=length)
        else:
            enc = tokenizer(list(texts), truncation=True, max_length=length)
        width = max(len(x) for x in enc["input_ids"])
        ids = torch.full((len(texts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(texts), width), dtype=torch.long)
        for r, row in enumerate(enc["input_ids"]):
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        return ids.to(device), mask.to(device)

    @torch.no_grad()
    def predict(m) -> list[int]:
        """Predictions on the validation file; under several processes each scores a
        contiguous part and the parts are gathered in order."""
        m.eval()
        part = -(-len(valid_texts) // world)
        mine = valid_texts[rank * part : (rank + 1) * part]
        out = []
        for i in range(0, len(mine), hyper.valid_batch_size):
            out += m(*batch(mine[i : i + hyper.valid_batch_size])).argmax(-1).tolist()
        if world > 1:
            from accelerate.utils import gather_object

            out = gather_object([out])
            out = [p for chunk in out for p in chunk]
        return out

    def save() -> None:
        """Only the main process writes; the others go on (a periodic save is decided by each
        process's own clock, so no process waits for another here)."""
        if main:
            _save_state(where, key, model, optimizer, schedule, at, total)

    def stopped(after: str) -> stop.Stopped:
        if accelerator is not None:
            accelerator.wait_for_everyone()  # no process exits while the main one still writes
        text = f"stopped fine-tuning {task} after {after}, progress saved in {where}; run the same command again to continue."
        return stop.Stopped(text if main else "", stop.stop_exit_code())

    if progress:
        progress(task, at.step, total)
    started, first_step, last_save = time.perf_counter(), at.step, time.perf_counter()
    with stop.stop_on_signals():
        while at.epoch < epochs:
            if at.order is None:
                _loader_draw()  # the training loader's base seed, drawn and unused as officially
                order = torch.randperm(len(train_texts), generator=torch.Generator().manual_seed(_loader_draw())).tolist()
                if world > 1:  # every process takes its share of the main process's order
                    from accelerate.utils import broadcast_object_list

                    order = broadcast_object_list([order])[0]
                at.order = order
            trained.train()
            while at.batch < per_epoch:
                idx = at.order[at.batch * spec.batch_size : (at.batch + 1) * spec.batch_size][rank * share : (rank + 1) * share]
                logits = trained(*batch([train_texts[i] for i in idx]))
                loss = F.cross_entropy(logits, torch.tensor([train_labels[i] for i in idx], device=device))
                if accelerator is not None:
                    accelerator.backward(loss)
                else:
                    loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                at.loss_sum += float(loss.detach())
                at.batch += 1
                at.step += 1
                if at.step - first_step == ETA_AFTER and at.step < total and main:
                    pace = (time.perf_counter() - started) / ETA_AFTER
                    log(f"finetune {task}: {ETA_AFTER} steps took {pace:.2f} s each; about {_duration(pace * (total - at.step))} "
                        f"left for its {total - at.step:,} other steps (and {epochs - at.epoch} validation passes of "
                        f"{len(valid_texts):,} examples)", echo=True)
                stopping = stop.stop_agreed(accelerator) if accelerator is not None else stop.stop_requested()
                if at.batch < per_epoch and (stopping or time.perf_counter() - last_save >= save_every):
                    save()
                    last_save = time.perf_counter()
                if progress:
                    progress(task, at.step, total)
                if stopping and at.batch < per_epoch:  # at an epoch's end: after its validation and save
                    raise stopped(f"step {at.step} of {total}")
            _loader_draw()  # the validation loader's base seed
            score = metric(spec.metric, predict(model), valid_labels)
            at.history.append(score)
            at.losses.append(at.loss_sum / per_epoch)
            if at.best is None or score > at.best:  # the first best is kept, as officially
                at.best, at.best_state = score, copy.deepcopy(model.state_dict())
            at.epoch, at.batch, at.order, at.loss_sum = at.epoch + 1, 0, None, 0.0
            if at.epoch < epochs:
                save()
                last_save = time.perf_counter()
                if stop.stop_agreed(accelerator) if accelerator is not None else stop.stop_requested():
                    raise stopped(f"epoch {at.epoch} of {epochs}")
    model.load_state_dict(at.best_state)
    predictions = predict(model)
    results = {"task": task, "metric": spec.metric, "best": at.best, "per_epoch": at.history, "train_loss": at.losses,
               "epochs": epochs, "steps": total, "processes": world,
               "accuracy": metric("accuracy", predictions, valid_labels), "n": len(valid_labels),
               "hyper": {k: v for k, v in hyper.__dict__.items()}}
    if spec.labels == 2:
        results["f1"] = metric("f1", predictions, valid_labels)
    if main:
        preds = {task: {"predictions": [{"id": f"{task}_{i}", "pred": int(p)} for i, p in enumerate(predictions)]}}
        atomic_write_text(out_dir / "predictions.json", json.dumps(preds))
        atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
        shutil.rmtree(where, ignore_errors=True)  # done: the resume state (the size of the model, twice) goes
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return results


def task_key(checkpoint: Path, files: tuple[Path, Path], hyper: Hyper) -> str:
    """What a task's fine-tuning depends on: the checkpoint's files, the data, the settings."""
    from .evaluate import _digest, _file_digest, checkpoint_fingerprint

    return _digest({"checkpoint": checkpoint_fingerprint(checkpoint), "data": [_file_digest(f) for f in files], "hyper": hyper.__dict__})


def finetune_tasks(checkpoint: Path, name: str, root: Path, folder: Path, tasks: list[str], device: str = "auto",
                   accelerator=None, hyper: Hyper = Hyper()) -> Path:
    """Fine-tune the checkpoint on each task, each kept in ``folder/<task>/`` once done (a rerun
    with the same checkpoint, data and settings skips it, and goes on with an unfinished one
    from its resume state); progress per task, in optimizer steps."""
    from onceupon.tracking import progress_bar

    if accelerator is None and device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    main = accelerator is None or accelerator.is_main_process
    for task in tasks:
        key = task_key(checkpoint, task_files(root, task), hyper)
        done = folder / task / "key.json"
        if done.is_file() and json.loads(done.read_text(encoding="utf-8")).get("key") == key:
            continue
        with progress_bar("steps", disable=None if main else True) as bar:
            handle = None

            def advance(task: str, step: int, total: int) -> None:
                nonlocal handle
                if handle is None:  # the first call says where a resumed task starts
                    handle = bar.add_task(f"{name} finetune {task}", total=total, completed=step)
                bar.update(handle, completed=step)

            finetune(checkpoint, task, root, folder / task, hyper, device=device, progress=advance, key=key, accelerator=accelerator)
        if main:
            atomic_write_text(done, json.dumps({"key": key}))
    return folder


def glue_root(data: str | Path) -> Path:
    """The folder holding ``glue_filtered/`` given an ``evaluation_data`` folder, its
    ``full_eval``, or that folder itself."""
    data = Path(data).expanduser()
    for root in (data, data / "full_eval", data / "evaluation_data" / "full_eval"):
        if (root / GLUE_DIR).is_dir():
            return root
    raise UserError(f"{data} holds no {GLUE_DIR}/ (give the evaluation_data directory or its full_eval).")


def run(checkpoint: str | Path, data: str | Path, out: str | Path, tasks: list[str] | None = None, device: str = "auto",
        pooling: str = "last") -> Path:
    """``onceupon finetune``: fine-tune one checkpoint on GLUE tasks into ``out/<task>/`` (the
    official pipeline's ``finetune`` layout, which ``--babylm-submission --finetune`` takes).

    Everything is checked before any work (the checkpoint, every line of every task's files,
    the output folder); the plan says each task's examples and steps. Under ``accelerate
    launch`` the processes share each batch (data-parallel; only the main one writes). A
    rerun goes on where a stopped or killed one was."""
    from onceupon import preflight
    from onceupon.lifecycle.lock import is_global_main, run_lock
    from onceupon.student.checkpoints import check_weights
    from onceupon.tracking import RUN_LOG, log, run_log

    checkpoint, out = Path(checkpoint), Path(out)
    if not (checkpoint / "config.json").is_file():
        raise UserError(f"{checkpoint} is not a checkpoint (no config.json); give a checkpoint directory.")
    check_weights(checkpoint, "give a checkpoint of a causal language model")  # its config and every weights file's header
    if pooling not in ("last", "first"):
        raise UserError(f"--pooling must be 'last' (the last real token) or 'first' (the official default), not '{pooling}'.")
    hyper = Hyper(pooling=pooling)
    if tasks is not None and not tasks:  # `--tasks ""` or `--tasks ,`: not the same as leaving it out
        raise UserError(f"--tasks names no task; give some of {', '.join(TASKS)}, or leave it out for all.")
    tasks = list(TASKS) if tasks is None else tasks
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise UserError(f"Unknown GLUE task{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; choose from {', '.join(TASKS)}.")
    root = glue_root(data)
    plans = {task: plan_task(root, task, hyper) for task in tasks}
    preflight.output_dir(out)
    accelerator = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # accelerate launch / torchrun: data-parallel
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=device == "cpu")
        for task in tasks:
            check_share(task, accelerator.num_processes)
    with run_lock(out), run_log(out / RUN_LOG) if is_global_main() else contextlib.nullcontext():
        if is_global_main():
            for task, plan in plans.items():
                log(plan.line(task), echo=True)
        return finetune_tasks(checkpoint, checkpoint.name, root, out, tasks, device, accelerator, hyper)
