"""Our PPO loop vs the classic TRL 0.9.4 ``PPOTrainer`` (the library the paper used), side by side.

    python benchmarks/bench_ppo_vs_trl.py [--steps 3] [--threads 2]

One invocation does everything:

1. creates (once) a separate virtual environment with ``trl==0.9.4`` and ``transformers==4.57.*``
   (torch 2.13.0 first, so pip takes the local CPU wheel), under
   ``~/.cache/onceupon/bench-trl094`` (``--venv`` to put it elsewhere);
2. builds one tiny GPT-2 student (4 layers, width 256, byte-level BPE vocabulary 2,000 trained
   on storyworld text) and saves it, so both sides start from identical weights;
3. runs each side in its own process with the same torch thread count, on the identical
   setting: the paper's prompt, batch 64, 90 new tokens, pure sampling (temperature 1,
   top-k 0, top-p 1), 4 PPO epochs over one minibatch of 64, the paper's PPO
   hyperparameters, and a cheap deterministic reward (share of common story words, plus the
   paper's length bonus);
4. prints stories/s of each side and the ratio, with the time split into generation, rating
   and update (TRL's ``step``; ours: scoring tokens + optimisation).

TRL is run as the paper's reference code ran it (``generate`` in chunks of 4, TRL's default)
and, for a fairer reading, also with the whole batch generated at once. The first step of each
side is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "Let me tell you a long, magical tale. Once upon a time, in a faraway land,"
BATCH = 64
NEW_TOKENS = 90
EPOCHS = 4
STORY_WORDS = {"the", "a", "and", "he", "she", "they", "was", "to", "in", "of"}


def cheap_score(continuation: str) -> float:
    """Teacher score in [0, 1]: the share of words that are common story words."""
    words = [re.sub(r"[^a-z]", "", w.lower()) for w in continuation.split()]
    return sum(w in STORY_WORDS for w in words) / len(words) if words else 0.0


def paper_reward(continuation: str) -> float:
    """The paper's reward: (T + 0.4 * n_words / 90) / 1.4."""
    return (cheap_score(continuation) + 0.4 * len(continuation.split()) / 90) / 1.4


# --------------------------------------------------------------------------- TRL side
def trl_worker(model_dir: str, steps: int, gen_batch: int, threads: int, seed: int) -> dict:
    """Runs inside the TRL 0.9.4 venv: no onceupon imports here."""
    import torch
    from transformers import PreTrainedTokenizerFast
    from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

    torch.set_num_threads(threads)
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(Path(model_dir) / "tokenizer.json"),
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", padding_side="left",
    )
    model = AutoModelForCausalLMWithValueHead.from_pretrained(model_dir)
    ref = AutoModelForCausalLMWithValueHead.from_pretrained(model_dir)  # the start checkpoint, frozen
    config = PPOConfig(
        batch_size=BATCH, mini_batch_size=BATCH, ppo_epochs=EPOCHS, learning_rate=1e-6,
        adap_kl_ctrl=True, init_kl_coef=0.2, target=6, horizon=10_000, cliprange=0.2, cliprange_value=0.2,
        vf_coef=0.1, gamma=1.0, lam=0.95, seed=seed, log_with=None,
    )
    trainer = PPOTrainer(config, model, ref, tok)
    query = tok(PROMPT, return_tensors="pt")["input_ids"][0]
    gen_kwargs = dict(min_length=-1, top_k=0, top_p=1.0, do_sample=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, max_new_tokens=NEW_TOKENS)
    times = {"generation": 0.0, "rating": 0.0, "update": 0.0}
    for step in range(steps + 1):
        t0 = time.perf_counter()
        queries = [query.clone() for _ in range(BATCH)]
        responses = trainer.generate(queries, batch_size=gen_batch, return_prompt=False, **gen_kwargs)
        t1 = time.perf_counter()
        texts = tok.batch_decode(responses, skip_special_tokens=True)
        scores = [torch.tensor(paper_reward(t)) for t in texts]
        t2 = time.perf_counter()
        trainer.step(queries, responses, scores)
        t3 = time.perf_counter()
        if step > 0:  # step 0 warms up
            times["generation"] += t1 - t0
            times["rating"] += t2 - t1
            times["update"] += t3 - t2
    total = sum(times.values())
    return {"stories": BATCH * steps, "seconds": total, **times}


# --------------------------------------------------------------------------- our side
def ours_worker(model_dir: str, steps: int, threads: int, seed: int) -> dict:
    import csv

    import torch

    from onceupon.config import load_config
    from onceupon.interact.interact import interact
    from onceupon.teacher.base import Rating

    torch.set_num_threads(threads)

    class CheapTeacher:
        identity = "bench:cheap"

        def rate(self, stories):
            out = []
            for s in stories:
                t = cheap_score(s.continuation)
                out.append(Rating(valid=True, raw=f"{t:.4f}", scores={"story_words": t}, score=t))
            return out

        def close(self):
            pass

    cfg = load_config(None, [
        f"interact.batch_size={BATCH}", f"interact.mini_batch_size={BATCH}", f"interact.epochs={EPOCHS}",
        f"interact.max_new_tokens={NEW_TOKENS}", f"interact.max_steps={steps + 1}", f"interact.seed={seed}",
        "interact.checkpoint_every=1B", "interact.input_budget=1B",
    ])
    with tempfile.TemporaryDirectory() as tmp:
        interact(cfg, Path(model_dir), Path(tmp) / "run", teacher=CheapTeacher())
        with open(Path(tmp) / "run" / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))[1:]  # step 1 warms up
    col = lambda k: sum(float(r[k]) for r in rows)  # noqa: E731
    times = {
        "generation": col("time/generation"),
        # the teacher runs while tokens are scored: only the time beyond that is waited for
        "rating": col("time/rating_wait"),
        "update": col("time/forward") + col("time/update"),
    }
    return {"stories": BATCH * steps, "seconds": sum(times.values()), "rating_wall": col("time/rating"), **times}


# --------------------------------------------------------------------------- driver
def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    marker = venv / ".ready-trl094"
    if marker.exists():
        return python
    print(f"creating the TRL 0.9.4 environment in {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)  # first, so the local CPU wheel is taken
    subprocess.run(pip + ["trl==0.9.4", "transformers==4.57.*", "rich"], check=True)
    marker.write_text("ok\n")
    return python


def build_student(directory: Path, seed: int) -> Path:
    import torch

    from onceupon.config import StudentConfig
    from onceupon.corpus.storyworld import generate
    from onceupon.lifecycle.checkpoints import CheckpointMeta
    from onceupon.student.checkpoints import save_checkpoint
    from onceupon.student.model import build_student as build
    from onceupon.student.tokenizer import train_tokenizer

    torch.manual_seed(seed)
    texts = [s.text for s in generate(3000, seed=seed)]
    tok = train_tokenizer(texts, vocab_size=2000, min_frequency=2)
    model = build(StudentConfig(preset="gpt2-tiny"), tok)  # 4 layers, 4 heads, width 256
    return save_checkpoint(directory, model, tok, CheckpointMeta(name="start", stage="pretrain", pretrain_words=0))


def run_worker(python: str, args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ONCEUPON_PROGRESS": ""}
    res = subprocess.run([python, __file__, *args], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"worker {args[0]} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def show(name: str, r: dict) -> None:
    rate = r["stories"] / r["seconds"]
    print(f"{name:<34} {rate:8.2f} stories/s   generation {r['generation']:7.2f} s   "
          f"rating {r['rating']:6.2f} s   update {r['update']:7.2f} s   ({r['stories']} stories)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed RL steps per side (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for each side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "onceupon" / "bench-trl094")
    ap.add_argument("--skip-whole-batch-trl", action="store_true", help="skip the extra TRL run without chunking")
    ap.add_argument("--trl-worker", nargs=3, metavar=("MODEL", "STEPS", "GEN_BATCH"), help=argparse.SUPPRESS)
    ap.add_argument("--ours-worker", nargs=2, metavar=("MODEL", "STEPS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.trl_worker:
        print(json.dumps(trl_worker(a.trl_worker[0], int(a.trl_worker[1]), int(a.trl_worker[2]), a.threads, a.seed)))
        return
    if a.ours_worker:
        print(json.dumps(ours_worker(a.ours_worker[0], int(a.ours_worker[1]), a.threads, a.seed)))
        return

    trl_python = ensure_venv(a.venv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_student(Path(tmp) / "student", a.seed)
        common = ["--threads", str(a.threads), "--seed", str(a.seed)]
        print(f"setting: gpt2 4x256, vocab 2000, batch {BATCH}, {NEW_TOKENS} new tokens, pure sampling, "
              f"{EPOCHS} PPO epochs, {a.steps} timed steps, {a.threads} threads", flush=True)
        ours = run_worker(sys.executable, ["--ours-worker", str(model_dir), str(a.steps), *common], a.threads)
        trl = run_worker(str(trl_python), ["--trl-worker", str(model_dir), str(a.steps), "4", *common], a.threads)
        trl_whole = None
        if not a.skip_whole_batch_trl:
            trl_whole = run_worker(
                str(trl_python), ["--trl-worker", str(model_dir), str(a.steps), str(BATCH), *common], a.threads
            )
    show("onceupon ppo", ours)
    show("TRL 0.9.4 PPOTrainer (chunks of 4)", trl)
    if trl_whole:
        show("TRL 0.9.4 PPOTrainer (whole batch)", trl_whole)
    speed = lambda r: r["stories"] / r["seconds"]  # noqa: E731
    print(f"ratio onceupon / TRL (as the paper ran it): {speed(ours) / speed(trl):.2f}x")
    if trl_whole:
        print(f"ratio onceupon / TRL (whole-batch generation): {speed(ours) / speed(trl_whole):.2f}x")


if __name__ == "__main__":
    main()
