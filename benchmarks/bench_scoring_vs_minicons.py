"""Minimal-pair scoring throughput: onceupon's batched scorer vs minicons, side by side.

Scores the same 2,000 minimal pairs (4,000 distinct sentences) with the same tiny GPT-2
twice: with ``onceupon.evaluate.scoring.Scorer`` and with minicons'
``scorer.IncrementalLMScorer.sequence_score`` (sum of token log-probabilities, the first token
conditioned on the tokenizer's BOS; the same quantity). Prints pairs/s of each, the ratio,
both accuracies and how far the scores differ.

minicons pins transformers 4.x, so it runs in its own virtual environment
(``.benchmarks/minicons-venv``, made on first use: torch first, so pip takes the local CPU
wheel, then transformers 4.57.x and minicons) as a subprocess that loads the same saved
model; each side is timed inside its own process, excluding model loading, best of
``--repeats`` runs, with the same number of torch threads and the same batch size.

    python benchmarks/bench_scoring_vs_minicons.py            # 2,000 pairs, batch 64, 16k vocabulary
    python benchmarks/bench_scoring_vs_minicons.py --device cuda --preset gpt2-paper
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".benchmarks" / "minicons-venv"

MINICONS_WORKER = r"""
import json, sys, time, torch
from minicons import scorer
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
sentences = json.loads(open(args["sentences"]).read())
lm = scorer.IncrementalLMScorer(args["model"], args["device"])
lm.model.eval()
total = lambda x: x.sum(0).item()
lm.sequence_score(sentences[: args["batch"]], reduction=total)  # warm-up
best, cpu, scores = None, None, None
for _ in range(args["repeats"]):
    start, start_cpu = time.perf_counter(), time.process_time()
    out = []
    for i in range(0, len(sentences), args["batch"]):
        out += lm.sequence_score(sentences[i : i + args["batch"]], reduction=total)
    if args["device"].startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if best is None or elapsed < best:
        best, cpu, scores = elapsed, time.process_time() - start_cpu, out
print(json.dumps({"seconds": best, "cpu_seconds": cpu, "scores": scores}))
"""

NOUNS = [("fox", "foxes"), ("bear", "bears"), ("girl", "girls"), ("king", "kings"), ("cat", "cats"),
         ("teacher", "teachers"), ("dog", "dogs"), ("bird", "birds"), ("child", "children"), ("queen", "queens")]
VERBS = [("runs", "run"), ("sings", "sing"), ("waits", "wait"), ("sleeps", "sleep"), ("laughs", "laugh"),
         ("hides", "hide"), ("dances", "dance"), ("jumps", "jump"), ("smiles", "smile"), ("cries", "cry")]
ADJS = ["little", "old", "happy", "brave", "tired", "clever", "kind", "quiet"]
PLACES = ["near the river", "in the forest", "by the old tree", "behind the house", "under the bridge",
          "on the hill", "at the market", "in the garden"]
ADVS = ["", " every morning", " all day long", " when the sun goes down", " without a sound", " again"]


def minimal_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Subject-verb agreement pairs (sentences of varied length, some with attractors)."""
    rng = random.Random(seed)
    pairs, seen = [], set()
    while len(pairs) < n:
        (sg, pl), (vs, vp) = rng.choice(NOUNS), rng.choice(VERBS)
        plural = rng.random() < 0.5
        subject = pl if plural else sg
        attractor = ""
        if rng.random() < 0.5:  # an attractor noun of the other number
            a_sg, a_pl = rng.choice(NOUNS)
            attractor = f" with the {a_sg if plural else a_pl}"
        head = f"The {rng.choice(ADJS)} {subject}{attractor} {rng.choice(PLACES)}"
        good = f"{head} {vp if plural else vs}{rng.choice(ADVS)}."
        bad = f"{head} {vs if plural else vp}{good[len(head) + 1 + len(vp if plural else vs):]}"
        if good not in seen and bad not in seen:
            seen.update((good, bad))
            pairs.append((good, bad))
    return pairs


def ensure_venv(
    venv: Path = VENV,
    modules: tuple[str, ...] = ("minicons", "transformers"),
    packages: tuple[str, ...] = ("transformers>=4.57,<4.58", "minicons"),
    what: str = "the minicons environment",
) -> Path:
    """The python of a peer's virtual environment in ``venv``, made once: torch first (so the
    local CPU wheel is taken), then ``packages``; it is remade when ``modules`` do not import."""
    python = venv / "bin" / "python"
    if python.exists():
        probe = subprocess.run([str(python), "-c", f"import {', '.join(modules)}"], capture_output=True)
        if probe.returncode == 0:
            return python
    print(f"making {what} in {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + list(packages), check=True)
    return python


def build_model(path: Path, preset: str, pairs: list[tuple[str, str]], vocab: int) -> int:
    import torch

    from onceupon.config import StudentConfig
    from onceupon.corpus.storyworld import generate
    from onceupon.lifecycle.checkpoints import CheckpointMeta
    from onceupon.student.checkpoints import save_checkpoint
    from onceupon.student.model import build_student
    from onceupon.student.tokenizer import train_tokenizer

    torch.manual_seed(0)
    texts = [s.text for s in generate(1500, seed=1)] + [g for g, _ in pairs]
    tokenizer = train_tokenizer(texts, vocab_size=16_000, min_frequency=2)
    model = build_student(StudentConfig(preset=preset), tokenizer)
    if vocab > len(tokenizer):
        # The benchmark's small text cannot fill a 16,000-token BPE vocabulary; give the model
        # the paper's output layer anyway (extra rows are never input but are normalised over).
        model.resize_token_embeddings(vocab, mean_resizing=False)
    save_checkpoint(path, model, tokenizer, CheckpointMeta(name="bench", stage="pretrain", pretrain_words=0))
    return model.get_output_embeddings().weight.shape[0]


def time_ours(model_path: Path, sentences: list[str], batch: int, device: str, repeats: int) -> tuple[float, float, list[float]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from onceupon.evaluate.scoring import Scorer

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    scorer = Scorer(model, tokenizer, batch_size=batch)
    requests = [("", s) for s in sentences]
    pairs = [2] * (len(sentences) // 2)  # each pair is one item: its common start runs once
    scorer.score(requests[:batch], group_sizes=pairs[: batch // 2])  # warm-up
    best, cpu, scores = None, None, None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = scorer.score(requests, group_sizes=pairs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if best is None or elapsed < best:
            best, cpu, scores = elapsed, time.process_time() - start_cpu, out
    return best, cpu, scores


def accuracy(scores: list[float]) -> float:
    """Official convention: a pair is right when good >= bad."""
    return 100.0 * sum(scores[i] >= scores[i + 1] for i in range(0, len(scores), 2)) / (len(scores) // 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64, help="sentences per forward pass, both sides")
    ap.add_argument("--preset", default="gpt2-tiny", help="student preset of the model scored")
    ap.add_argument("--vocab", type=int, default=16_000, help="output vocabulary of the model (paper: 16,000)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides (1: steadiest on a shared machine)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per side; the best counts")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    python = ensure_venv()
    pairs = minimal_pairs(args.pairs)
    sentences = [s for pair in pairs for s in pair]
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "model"
        vocab = build_model(model_path, args.preset, pairs, args.vocab)
        sentence_file = Path(tmp) / "sentences.json"
        sentence_file.write_text(json.dumps(sentences))
        worker_args = {"model": str(model_path), "sentences": str(sentence_file), "batch": args.batch,
                       "device": args.device, "threads": args.threads, "repeats": args.repeats}
        proc = subprocess.run([str(python), "-c", MINICONS_WORKER, json.dumps(worker_args)], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"minicons worker failed:\n{proc.stderr[-3000:]}")
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])
        ours_seconds, ours_cpu, ours_scores = time_ours(model_path, sentences, args.batch, args.device, args.repeats)

    n = len(pairs)
    ours_rate, theirs_rate = n / ours_seconds, n / theirs["seconds"]
    diff = max(abs(a - b) for a, b in zip(ours_scores, theirs["scores"]))
    verdicts_differ = sum(
        (ours_scores[i] >= ours_scores[i + 1]) != (theirs["scores"][i] >= theirs["scores"][i + 1]) for i in range(0, 2 * n, 2)
    )
    print(f"model: {args.preset} ({vocab} tokens vocabulary), {args.device}, {args.threads} threads, batch {args.batch}, {n} pairs")
    print(f"onceupon Scorer : {ours_rate:10.1f} pairs/s  ({ours_seconds:.2f} s wall, {ours_cpu:.2f} s CPU)  accuracy {accuracy(ours_scores):.2f}")
    print(f"minicons        : {theirs_rate:10.1f} pairs/s  ({theirs['seconds']:.2f} s wall, {theirs['cpu_seconds']:.2f} s CPU)  accuracy {accuracy(theirs['scores']):.2f}")
    print(f"ratio           : {ours_rate / theirs_rate:10.2f}x wall-clock, {theirs['cpu_seconds'] / ours_cpu:.2f}x CPU time")
    print(f"max |score difference| {diff:.2e}; pairs judged differently: {verdicts_differ}")
    if verdicts_differ:
        sys.exit("the two scorers disagree on some pairs")


if __name__ == "__main__":
    main()
