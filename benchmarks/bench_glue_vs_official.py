"""onceupon's GLUE fine-tuning against the official BabyLM 2025 trainer, seed by seed.

Both sides fine-tune the same saved tiny GPT-2 on the same task files with the settings of the
official ``eval_finetuning.sh`` (learning rate 3e-5, batch 32, AdamW, 6 % warmup then cosine
to 0.1, the best epoch by validation accuracy, or F1 for MRPC and QQP), each in its own
process with one torch thread: the official ``evaluation_pipeline.finetune.run`` in its own
environment (transformers 4.57), onceupon's ``finetune.finetune``. Fewer epochs and a shorter
sequence length than the official 10 (30 for WSC) and 512 keep it short on a CPU; both sides
get the same ones. For each task and seed it prints both scores, the validation items the two
predict differently, and per side the mean, standard deviation and range over the seeds,
whether onceupon's mean lies within the official seed-to-seed range, and time and peak-memory
ratios.

Two readings of the sequence, like for like:

- ``first``: the official default (no ``--causal``, no ``--take_final``) reads the first
  token's hidden state; onceupon with ``pooling="first"``.
- ``last``: onceupon's default, the last real token. The official ``--causal --take_final``
  does not run on a GPT-2 (it hands the model a 3-D mask), and ``--take_final`` alone reads
  the last position, a padding token in all but the longest row. So the benchmark runs the
  official code with ``--take_final`` and one line of its ``classifier_model.py`` changed in a
  copy (``encoding[:, -1]`` becomes the last position the attention mask marks), which is
  what ``--causal --take_final`` means to do.

The official trainer imports ``wandb`` at the top and uses it only with ``--wandb``; its
environment here has no wandb, so the official process gets an empty ``wandb`` module.

    python benchmarks/bench_glue_vs_official.py --data /path/to/evaluation_data --tasks rte,wsc,mrpc \
        --seeds 3 --epochs 3 --sequence-length 128 --pooling first,last
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_babylm_vs_official import OFFICIAL, ensure_venv, timed  # noqa: E402  (the same peer and process timing)

METRIC = {"mrpc": "f1", "qqp": "f1"}
LABELS = {"mnli": 3}
BATCH = {"boolq": 16, "multirc": 16}
LAST_TOKEN_PATCH = (
    "transformer_output: torch.Tensor = encoding[:, -1]",
    "transformer_output: torch.Tensor = encoding[torch.arange(encoding.size(0), device=encoding.device), attention_mask.sum(-1) - 1]",
)

ONCEUPON = r"""
import json, sys
from pathlib import Path
from onceupon.evaluate.finetune import Hyper, finetune
model, task, root, out, seed, epochs, length, pooling = sys.argv[1:9]
r = finetune(Path(model), task, Path(root), Path(out), Hyper(seed=int(seed), epochs=int(epochs), sequence_length=int(length), pooling=pooling))
print(json.dumps(r))
"""


def build(path: Path, preset: str, layers: int) -> None:
    """A tiny untrained GPT-2 on storyworld text (the zero-shot benchmarks' recipe, fewer layers)."""
    import torch

    from onceupon.config import StudentConfig
    from onceupon.corpus.storyworld import generate
    from onceupon.lifecycle.checkpoints import CheckpointMeta
    from onceupon.student.checkpoints import save_checkpoint
    from onceupon.student.model import build_student
    from onceupon.student.tokenizer import train_tokenizer

    torch.manual_seed(0)
    tokenizer = train_tokenizer([s.text for s in generate(1500, seed=1)], vocab_size=16_000, min_frequency=2)
    model = build_student(StudentConfig(preset=preset, n_layer=layers), tokenizer)
    save_checkpoint(path, model, tokenizer, CheckpointMeta(name="bench", stage="pretrain", pretrain_words=0))


def official_tree(work: Path, pooling: str) -> Path:
    """The official source as it is (``first``), or a copy with the last-token line (``last``)."""
    stub = work / "stub"
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "wandb.py").write_text("# the official trainer imports wandb; it is used only with --wandb\n")
    if pooling == "first":
        return OFFICIAL
    tree = work / "official-last-token"
    if not tree.exists():
        shutil.copytree(OFFICIAL / "evaluation_pipeline", tree / "evaluation_pipeline")
        source = tree / "evaluation_pipeline" / "finetune" / "classifier_model.py"
        text = source.read_text()
        assert text.count(LAST_TOKEN_PATCH[0]) == 1, "the official classifier_model.py changed; update LAST_TOKEN_PATCH"
        source.write_text(text.replace(*LAST_TOKEN_PATCH))
    return tree


def run_official(python: Path, tree: Path, work: Path, model: Path, task: str, root: Path, seed: int, epochs: int,
                 length: int, pooling: str) -> dict:
    out = work / f"official-{pooling}-{task}-{seed}"
    glue = root / "glue_filtered"
    cmd = [str(python), "-m", "evaluation_pipeline.finetune.run", "--model_name_or_path", str(model),
           "--train_data", str(glue / f"{task}.train.jsonl"), "--valid_data", str(glue / f"{task}.valid.jsonl"),
           "--predict_data", str(glue / f"{task}.valid.jsonl"), "--task", task, "--num_labels", str(LABELS.get(task, 2)),
           "--batch_size", str(BATCH.get(task, 32)), "--learning_rate", "3e-5", "--num_epochs", str(epochs),
           "--sequence_length", str(length), "--results_dir", str(out), "--metrics", "accuracy", "f1", "mcc",
           "--metric_for_valid", METRIC.get(task, "accuracy"), "--seed", str(seed), "--verbose"]
    if pooling == "last":
        cmd.append("--take_final")
    wall, memory, log = timed(["env", f"PYTHONPATH={tree}:{work / 'stub'}", *cmd], cwd=tree)
    # --verbose prints each validation's figures on lines of their own ("f1: 0.81..."), one
    # set per epoch and a last one for the best model
    name = METRIC.get(task, "accuracy")
    per_epoch = [float(line.split(": ")[1]) for line in re.split(r"[\r\n]", log) if re.fullmatch(rf"{name}: [-0-9.e]+", line.strip())]
    folder = out / model.stem / "main" / "finetune" / task
    figures = dict(line.split(": ") for line in (folder / "results.txt").read_text().splitlines())
    preds = [p["pred"] for p in json.loads((folder / "predictions.json").read_text())[task]["predictions"]]
    return {"score": float(figures[name]), "preds": preds, "wall": wall, "memory": memory, "per_epoch": per_epoch[:epochs]}


def run_ours(work: Path, model: Path, task: str, root: Path, seed: int, epochs: int, length: int, pooling: str) -> dict:
    out = work / f"ours-{pooling}-{task}-{seed}"
    wall, memory, log = timed([sys.executable, "-c", ONCEUPON, str(model), task, str(root), str(out), str(seed), str(epochs),
                               str(length), pooling])
    result = json.loads(log.strip().splitlines()[-1])
    preds = [p["pred"] for p in json.loads((out / "predictions.json").read_text())[task]["predictions"]]
    score = result[METRIC.get(task, "accuracy")]
    return {"score": score, "preds": preds, "wall": wall, "memory": memory, "per_epoch": result["per_epoch"]}


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"mean {statistics.mean(values):.4f}, sd {sd:.4f}, range {min(values):.4f}..{max(values):.4f}"


def main() -> None:
    global OFFICIAL
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="an evaluation_data folder (its full_eval/glue_filtered is read)")
    ap.add_argument("--tasks", default="rte,wsc,mrpc")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 42, 43, ... on each side")
    ap.add_argument("--epochs", type=int, default=3, help="epochs on both sides (official: 10, WSC 30)")
    ap.add_argument("--sequence-length", type=int, default=128, help="official: 512 (or the model's context)")
    ap.add_argument("--pooling", default="first,last", help="first (official default), last (onceupon's default), or both")
    ap.add_argument("--train-items", type=int, default=None, help="only the first N training examples of each task (both sides)")
    ap.add_argument("--preset", default="gpt2-tiny")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--official", type=Path, default=OFFICIAL, help="checkout of babylm/evaluation-pipeline-2025")
    args = ap.parse_args()
    OFFICIAL = args.official.resolve()
    if not (OFFICIAL / "evaluation_pipeline" / "finetune").is_dir():
        sys.exit(f"{OFFICIAL} holds no evaluation_pipeline/finetune: clone babylm/evaluation-pipeline-2025 there or give --official")
    root = args.data.expanduser() / "full_eval"
    if (args.data / "evaluation_data").is_dir():
        root = args.data / "evaluation_data" / "full_eval"
    python = ensure_venv()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    poolings = [p.strip() for p in args.pooling.split(",") if p.strip()]
    seeds = [42 + i for i in range(args.seeds)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = work / "bench_model"
        build(model, args.preset, args.layers)
        if args.train_items:  # the same shorter training files for both sides
            cut = work / "full_eval"
            (cut / "glue_filtered").mkdir(parents=True)
            for task in tasks:
                for split in ("train", "valid"):
                    lines = (root / "glue_filtered" / f"{task}.{split}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
                    (cut / "glue_filtered" / f"{task}.{split}.jsonl").write_text("".join(lines[: args.train_items] if split == "train" else lines), encoding="utf-8")
            root = cut
        print(f"model: {args.preset} with {args.layers} layers; {args.epochs} epochs, sequence length {args.sequence_length}, "
              f"training examples {args.train_items or 'all'}, seeds {seeds}; cpu, 1 thread per side; official source {OFFICIAL}", flush=True)
        walls, memories = [0.0, 0.0], [0.0, 0.0]
        for pooling in poolings:
            tree = official_tree(work, pooling)
            for task in tasks:
                official, ours = [], []
                for seed in seeds:
                    print(f"{pooling} {task} seed {seed}: official, then onceupon ...", flush=True)
                    o = run_official(python, tree, work, model, task, root, seed, args.epochs, args.sequence_length, pooling)
                    u = run_ours(work, model, task, root, seed, args.epochs, args.sequence_length, pooling)
                    same_epochs = "the same" if o["per_epoch"] == u["per_epoch"] else f"official {o['per_epoch']} vs onceupon {u['per_epoch']}"
                    differ = sum(a != b for a, b in zip(o["preds"], u["preds"])) + abs(len(o["preds"]) - len(u["preds"]))
                    print(f"{pooling} {task} seed {seed}: official {o['score']:.4f}, onceupon {u['score']:.4f}; "
                          f"{differ} of {len(o['preds'])} validation items predicted differently; per-epoch validation scores {same_epochs}; "
                          f"wall {o['wall']:.1f} s vs {u['wall']:.1f} s; peak memory {o['memory']:.2f} GB vs {u['memory']:.2f} GB", flush=True)
                    official.append(o["score"])
                    ours.append(u["score"])
                    walls[0] += o["wall"]
                    walls[1] += u["wall"]
                    memories = [max(memories[0], o["memory"]), max(memories[1], u["memory"])]
                inside = min(official) <= statistics.mean(ours) <= max(official)
                print(f"{pooling} {task} ({METRIC.get(task, 'accuracy')}): official {spread(official)}; onceupon {spread(ours)}; "
                      f"onceupon's mean {'lies' if inside else 'does NOT lie'} within the official seed range", flush=True)
        print(f"all runs: wall {walls[0]:.0f} s official vs {walls[1]:.0f} s onceupon ({walls[1] / walls[0]:.2f}x); "
              f"peak memory {memories[0]:.2f} GB vs {memories[1]:.2f} GB ({memories[1] / memories[0]:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
