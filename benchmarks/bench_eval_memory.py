"""Peak resident memory of ``onceupon evaluate`` on full_eval-sized data, optionally before/after.

Builds the paper's student shape untrained (gpt2-paper: 12 layers, width 768, context 512,
a 16,000-token BPE vocabulary trained on the synthetic text) and writes synthetic data in
the BabyLM ``evaluation_data/full_eval`` layout, sized like the real thing (the real files
cannot be shipped; these counts are our assumptions, printed with the results):

    blimp_filtered         67 files, 50,000 minimal pairs (6-25 words each)
    supplement_filtered     5 files,  5,000 pairs
    ewok_filtered           5,000 items (contexts of 10-40 words)
    entity_tracking         regular/ambiref/move_contents, 2,000 items each, prefixes of
                            40-400 words (many longer than the 512-token context), 5 options
    wug_*                   200 and 50 items

Each (code version, task) runs as its own ``onceupon evaluate`` process; its peak resident
set (the kernel's VmHWM) is read while it runs. Scoring all of full BLiMP with an 85M-
parameter model takes far longer than minutes on a laptop CPU, so a run stops after
``--seconds``: the peak of both versions is reached early (the old code tokenized the whole
task before its first forward pass and took the longest batches first; the new code holds
one window of requests and a token-bounded batch at a time, its longest batch first in
each window), and the last progress line shows how far it got.

    python benchmarks/bench_eval_memory.py                        # the working tree only
    python benchmarks/bench_eval_memory.py --compare 275e761      # vs the code at that commit
    python benchmarks/bench_eval_memory.py --tasks entity_tracking --seconds 300
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from onceupon.files import append_jsonl

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"blimp": 50_000, "supplement": 5_000, "ewok": 5_000, "entity_tracking": 2_000, "wug_adj": 200, "wug_past": 50}
SYLLABLES = ["ba", "ko", "ri", "mu", "te", "la", "shi", "po", "ne", "gu", "da", "fi", "zo", "re", "ka", "mi", "su", "to"]


def pseudo_words(n: int, rng: random.Random) -> list[str]:
    """Distinct made-up words, so the tokenizer fills a realistic 16,000-token vocabulary."""
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words)


def sentence(words: list[str], rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    return "The " + " ".join(rng.choice(words) for _ in range(n - 1)) + "."


def write_jsonl(path: Path, rows) -> None:
    """Into a fresh temporary directory: appending is writing, and nothing needs an fsync."""
    append_jsonl(path, rows, durable=False)


def write_data(root: Path, words: list[str], seed: int = 0) -> Path:
    rng = random.Random(seed)
    full = root / "evaluation_data" / "full_eval"
    per_file = SIZES["blimp"] // 67
    for k in range(67):
        n = max(1, per_file + (1 if k < SIZES["blimp"] - per_file * 67 else 0))
        rows = []
        for _ in range(n):
            good = sentence(words, rng, 6, 25)
            rows.append({"sentence_good": good, "sentence_bad": good.replace("The ", "A ", 1), "UID": f"phenomenon_{k}"})
        write_jsonl(full / "blimp_filtered" / f"phenomenon_{k}.jsonl", rows)
    for k in range(5):
        rows = []
        for _ in range(SIZES["supplement"] // 5):
            good = sentence(words, rng, 4, 20)
            rows.append({"sentence_good": good, "sentence_bad": good[::-1]})
        write_jsonl(full / "supplement_filtered" / f"supplement_{k}.jsonl", rows)
    write_jsonl(full / "ewok_filtered" / "ewok.jsonl", (
        {"Domain": f"domain_{i % 11}", "Context1": sentence(words, rng, 10, 40), "Context2": sentence(words, rng, 10, 40),
         "Target1": sentence(words, rng, 4, 10), "Target2": sentence(words, rng, 4, 10)}
        for i in range(SIZES["ewok"])
    ))
    objects = words[:300]
    for name in ("regular", "ambiref", "move_contents"):
        rows = []
        for i in range(SIZES["entity_tracking"]):
            clauses, n_words = [], rng.randint(40, 400)
            while sum(len(c.split()) for c in clauses) < n_words:
                clauses.append(f"Box {rng.randint(0, 6)} contains the {rng.choice(objects)} and the {rng.choice(objects)}.")
            options = ["the " + rng.choice(objects)] + [
                rng.choice(["nothing", "the " + rng.choice(objects), f"the {rng.choice(objects)} and the {rng.choice(objects)}"])
                for _ in range(4)
            ]
            rows.append({"input_prefix": " ".join(clauses) + f" Box {rng.randint(0, 6)} contains ", "options": options, "numops": i % 6})
        write_jsonl(full / "entity_tracking" / f"{name}.jsonl", rows)
    for name, n in (("wug_adj_nominalization", SIZES["wug_adj"]), ("wug_past_tense", SIZES["wug_past"])):
        write_jsonl(full / name / f"{name}.jsonl", (
            {"sentences": "\t".join(sentence(words, rng, 5, 12) for _ in range(2)), "ratio": rng.random()} for _ in range(n)
        ))
    return root / "evaluation_data"


def build_checkpoint(directory: Path, preset: str, words: list[str]) -> Path:
    import torch

    from onceupon.config import StudentConfig
    from onceupon.lifecycle.checkpoints import CheckpointMeta
    from onceupon.student.checkpoints import save_checkpoint
    from onceupon.student.model import build_student
    from onceupon.student.tokenizer import train_tokenizer

    rng = random.Random(1)
    texts = [sentence(words, rng, 5, 30) for _ in range(60_000)]
    tokenizer = train_tokenizer(texts, vocab_size=16_000)
    torch.manual_seed(0)
    model = build_student(StudentConfig(preset=preset), tokenizer)
    return save_checkpoint(directory, model, tokenizer, CheckpointMeta(name=directory.name, stage="pretrain", pretrain_words=0))


def old_source(rev: str, into: Path) -> Path:
    """The package as it was at ``rev`` (git archive), to run with PYTHONPATH."""
    raw = subprocess.run(["git", "archive", rev, "src/onceupon"], cwd=ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(raw)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def vm_hwm(pid: int) -> int | None:
    """Peak resident set of a running process, in bytes (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def measure(checkpoint: Path, data: Path, task: str, src: Path | None, seconds: float, work: Path, threads: int) -> dict:
    out = work / f"out_{task}_{'old' if src else 'new'}"
    err_path = work / f"{out.name}.stderr"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ONCEUPON_PROGRESS": "plain", "ONCEUPON_PROGRESS_INTERVAL": "5",
           "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-m", "onceupon.cli", "evaluate", str(checkpoint), "--data", str(data), "--out", str(out),
           "--set", "evaluate.stories=0", "--set", "evaluate.probe_items=0", "--set", f"evaluate.tasks=[{task}]",
           "--set", "evaluate.suite=full"]
    start = time.monotonic()
    with open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        peak, finished, status = 0, False, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                finished, peak = True, max(peak, usage.ru_maxrss * 1024)
                break
            peak = max(peak, vm_hwm(proc.pid) or 0)
            if time.monotonic() - start > seconds:
                proc.kill()
                os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    lines = [line for line in err_path.read_text().splitlines() if line.strip()]
    progress = next((line for line in reversed(lines) if "/" in line and "%" in line), "no progress line")
    return {
        "task": task, "code": "old" if src else "new", "peak_gb": peak / 1024**3, "finished": finished,
        "exit": os.waitstatus_to_exitcode(status) if finished else None,
        "seconds": time.monotonic() - start, "progress": progress, "last": lines[-1] if lines else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpt2-paper")
    ap.add_argument("--tasks", default="blimp,entity_tracking", help="comma-separated onceupon task names")
    ap.add_argument("--seconds", type=float, default=150, help="stop each evaluation after this long")
    ap.add_argument("--compare", metavar="REV", help="also run the code at this git revision")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, help="keep data, checkpoint and outputs here (default: a temporary folder)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every item count (e.g. 0.01 for a smoke test)")
    args = ap.parse_args()
    for key in SIZES:
        SIZES[key] = max(2, int(SIZES[key] * args.scale))

    with tempfile.TemporaryDirectory(prefix="bench-eval-memory-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        words = pseudo_words(20_000, random.Random(0))
        t0 = time.monotonic()
        data = write_data(work / "data", words)
        checkpoint = build_checkpoint(work / "checkpoints" / "chck_0W", args.preset, words)
        print(f"data and {args.preset} checkpoint ready in {time.monotonic() - t0:.0f} s; sizes assumed: {SIZES}", flush=True)
        versions = [None] + ([old_source(args.compare, work / "old")] if args.compare else [])
        results = []
        for task in args.tasks.split(","):
            for src in versions:
                r = measure(checkpoint, data, task, src, args.seconds, work, args.threads)
                results.append(r)
                state = f"finished (exit {r['exit']})" if r["finished"] else f"stopped after {r['seconds']:.0f} s"
                print(f"{task:16s} {r['code']:3s} peak RSS {r['peak_gb']:.2f} GB  {state}; {r['progress']}", flush=True)
                if r["finished"] and r["exit"] != 0:
                    print(f"    {r['last']}", flush=True)
        if args.compare:
            for task in args.tasks.split(","):
                new, old = (next(r for r in results if r["task"] == task and r["code"] == c) for c in ("new", "old"))
                print(f"{task}: peak {old['peak_gb']:.2f} GB ({args.compare}) -> {new['peak_gb']:.2f} GB (working tree), "
                      f"{old['peak_gb'] / new['peak_gb']:.1f}x less")
        print(f"command: python benchmarks/bench_eval_memory.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
