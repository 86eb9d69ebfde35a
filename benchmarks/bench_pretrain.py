"""Pretraining throughput: onceupon's loop vs the transformers ``Trainer``, side by side.

Both train the same freshly initialised student (same preset, same seed) on the same packed
storyworld sequences with the same batch, accumulation, learning-rate schedule, clipping and
number of optimizer steps, in one process, alternating runs so both see the same machine
load. Reported: tokens per second of the training loop of each (ours: the whole loop except
checkpoint writing, as recorded in the final checkpoint; Trainer: from ``on_train_begin`` to
``on_train_end``), best of ``--repeats``, and the ratio.

    python benchmarks/bench_pretrain.py                    # gpt2-tiny, 40K words, CPU
    python benchmarks/bench_pretrain.py --preset gpt2-paper --words 2M --context 512 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt2-tiny")
    ap.add_argument("--words", default="40K", help="storyworld corpus size (one epoch is trained)")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    ap.add_argument("--repeats", type=int, default=2)
    return ap.parse_args()


def ours(cfg, workdir: Path, index: int) -> tuple[float, int, float]:
    """Train with ``onceupon.student.pretrain``; returns (seconds, tokens, final loss)."""
    import csv
    import shutil

    from onceupon.student.pretrain import run as pretrain

    from onceupon.config import save_config

    run = workdir / f"ours{index}"
    # Reuse the corpus, tokenizer and packed data of the first run: only training is timed.
    # With its config saved, such a directory is a run that has not taken a step yet, which
    # --resume starts from the beginning.
    if index > 0:
        for part in ("corpus", "tokenizer", "packed"):
            shutil.copytree(workdir / "ours0" / part, run / part)
        save_config(cfg, run)
        pretrain(None, run, resume=True)
    else:
        pretrain(cfg, run)
    final = sorted((run / "checkpoints").glob("chck_*"))[-1]
    meta = json.loads((final / "onceupon.json").read_text())
    with open(run / "metrics.csv", newline="") as f:
        loss = float(list(csv.DictReader(f))[-1]["loss"])
    return meta["extra"]["train_seconds"], meta["extra"]["tokens_seen"], loss


def trainer(cfg, run: Path, workdir: Path) -> tuple[float, int, float]:
    """Train the same student on the same packed sequences with ``transformers.Trainer``."""
    import math

    import numpy as np
    import torch
    from accelerate.utils import set_seed
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from onceupon.student.model import build_student
    from onceupon.student.packing import load_packed
    from onceupon.student.plan import make_plan
    from onceupon.student.tokenizer import load_tokenizer

    p = cfg.pretrain
    tokenizer = load_tokenizer(run / "tokenizer")
    packed = load_packed(run / "packed")
    plan = make_plan(
        packed.words, packed.valid, epochs=p.epochs, max_words=p.max_words,
        global_batch=p.batch_size * p.grad_accum, seed=p.seed, shuffle=p.shuffle,
    )
    positions = np.arange(packed.context_length)

    class Sequences(torch.utils.data.Dataset):
        def __len__(self):
            return packed.n_sequences

        def __getitem__(self, i):
            x = torch.from_numpy(np.asarray(packed.tokens[i], dtype=np.int64))
            labels = x.clone()
            labels[torch.from_numpy(positions >= packed.valid[i])] = -100  # the model shifts them itself
            return {"input_ids": x, "labels": labels}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            self.seconds = time.perf_counter() - self.start

    set_seed(p.seed)
    model = build_student(cfg.student, tokenizer)
    model.config.use_cache = False
    bf16 = p.precision == "bf16" or (p.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    args = TrainingArguments(
        output_dir=str(workdir / "trainer"),
        per_device_train_batch_size=p.batch_size,
        gradient_accumulation_steps=p.grad_accum,
        learning_rate=p.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=math.ceil(p.warmup_fraction * plan.n_steps),
        max_steps=plan.n_steps,
        weight_decay=p.weight_decay,
        max_grad_norm=p.max_grad_norm,
        logging_steps=p.log_every,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=p.seed,
        bf16=bf16,
    )
    clock = Clock()
    hf_trainer = Trainer(model=model, args=args, train_dataset=Sequences(), callbacks=[clock])
    hf_trainer.train()
    last_loss = [row["loss"] for row in hf_trainer.state.log_history if "loss" in row][-1]
    return clock.seconds, int(plan.tokens_after[-1]), float(last_loss)


def main() -> None:
    args = parse_args()
    import torch

    from onceupon.config import ExperimentConfig

    cfg = ExperimentConfig.model_validate(
        {
            "corpus": {"source": "storyworld", "word_budget": args.words},
            "tokenizer": {"vocab_size": args.vocab},
            "student": {"preset": args.preset, "context_length": args.context},
            "pretrain": {
                "epochs": 1,
                "batch_size": args.batch,
                "grad_accum": args.accum,
                "learning_rate": 1e-3,
                "precision": args.precision,
                "milestones": "every",
                "milestone_every": "1000B",  # only the final checkpoint
                "log_every": 10,
            },
        }
    )
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"preset {args.preset}, {args.words} words, context {args.context}, batch {args.batch} x {args.accum}, {device}")
    best = {"ours": 0.0, "Trainer": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for r in range(args.repeats):
            seconds, tokens, loss = ours(cfg, workdir, r)
            best["ours"] = max(best["ours"], tokens / seconds)
            print(f"  ours    run {r + 1}: {tokens:,} tokens in {seconds:6.2f} s = {tokens / seconds:9,.0f} tokens/s (last logged loss {loss:.3f})")
            seconds, tokens, loss = trainer(cfg, workdir / "ours0", workdir)
            best["Trainer"] = max(best["Trainer"], tokens / seconds)
            print(f"  Trainer run {r + 1}: {tokens:,} tokens in {seconds:6.2f} s = {tokens / seconds:9,.0f} tokens/s (last logged loss {loss:.3f})")
    print(f"ours    {best['ours']:10,.0f} tokens/s")
    print(f"Trainer {best['Trainer']:10,.0f} tokens/s")
    print(f"ratio   {best['ours'] / best['Trainer']:.2f}x")


if __name__ == "__main__":
    main()
