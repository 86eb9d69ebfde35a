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
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
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


def plan_steps(root: Path, task: str, hyper: Hyper = Hyper()) -> tuple[int, int, int]:
    """(training examples, optimizer steps, validation examples) of a task, for the plan."""
    files = task_files(root, task)
    if files is None:
        return 0, 0, 0
    count = []
    for f in files:
        with open(f, encoding="utf-8") as lines:
            count.append(sum(1 for line in lines if line.strip()))
    spec = TASKS[task]
    return count[0], (hyper.epochs or spec.epochs) * (count[0] // spec.batch_size), count[1]


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


def finetune(checkpoint: Path, task: str, data_root: Path, out_dir: Path, hyper: Hyper = Hyper(), device: str = "cpu",
             progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Fine-tune a copy of the checkpoint on one GLUE task; writes ``out_dir/predictions.json``
    (the official format) and ``out_dir/results.json``; returns the results."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel

    from onceupon.student.checkpoints import load_checkpoint_tokenizer
    from onceupon.student.model import context_length

    spec = TASKS[task]
    files = task_files(data_root, task)
    if files is None:
        raise UserError(f"No {task}.train.jsonl and {task}.valid.jsonl under {Path(data_root) / GLUE_DIR}.")
    train_texts, train_labels = read_examples(files[0], task)
    valid_texts, valid_labels = read_examples(files[1], task)
    random.seed(hyper.seed)
    torch.manual_seed(hyper.seed)
    tokenizer = load_checkpoint_tokenizer(checkpoint, "copy or save that checkpoint again")
    base = AutoModel.from_pretrained(checkpoint, dtype=torch.float32)
    length = min(hyper.sequence_length, context_length(base))
    model = _classifier(base, spec.labels, hyper).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

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
        m.eval()
        out = []
        for i in range(0, len(valid_texts), hyper.valid_batch_size):
            out += m(*batch(valid_texts[i : i + hyper.valid_batch_size])).argmax(-1).tolist()
        return out

    epochs = hyper.epochs or spec.epochs
    per_epoch = len(train_texts) // spec.batch_size  # the last incomplete batch is dropped
    if per_epoch == 0:
        raise UserError(f"{files[0]} has fewer examples ({len(train_texts)}) than one batch ({spec.batch_size}).")
    total = epochs * per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=hyper.learning_rate, betas=hyper.betas, eps=hyper.eps,
                                  weight_decay=hyper.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(int(hyper.warmup * total), total, hyper.min_factor))
    generator = torch.Generator().manual_seed(hyper.seed)
    best, best_state, history, step = None, None, [], 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_texts), generator=generator).tolist()
        for b in range(per_epoch):
            idx = order[b * spec.batch_size : (b + 1) * spec.batch_size]
            logits = model(*batch([train_texts[i] for i in idx]))
            loss = F.cross_entropy(logits, torch.tensor([train_labels[i] for i in idx], device=device))
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if progress:
                progress(task, step, total)
        score = metric(spec.metric, predict(model), valid_labels)
        history.append(score)
        if best is None or score > best:  # the first best is kept, as officially
            best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    predictions = predict(model)
    preds = {task: {"predictions": [{"id": f"{task}_{i}", "pred": int(p)} for i, p in enumerate(predictions)]}}
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "predictions.json", json.dumps(preds))
    results = {"task": task, "metric": spec.metric, "best": best, "per_epoch": history, "epochs": epochs, "steps": total,
               "accuracy": metric("accuracy", predictions, valid_labels), "n": len(valid_labels),
               "hyper": {k: v for k, v in hyper.__dict__.items()}}
    if spec.labels == 2:
        results["f1"] = metric("f1", predictions, valid_labels)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2))
    return results
