"""onceupon's BabyLM 2025 tasks against the official evaluation pipeline, on the same model and files.

For each task named, both implementations score one saved tiny GPT-2 on the same files in the
official layout, each in its own process with one torch thread: the official code
(``babylm/evaluation-pipeline-2025``, its own virtual environment) through its own entry
point, onceupon through ``onceupon evaluate``. Printed per task: items judged differently,
the aggregate of each side and their difference, wall-clock and peak-memory ratios (whole
processes, model loading included). Exits 1 when any item is judged differently.

``aoa`` needs no model: the official ``AoAEvaluator`` (``evaluation_pipeline/utils.py``, what
``calculate_results_from_pred.py`` runs) and onceupon's ``aoa.curve_fitness`` read the same
``cdi_human.csv`` and ``surprisal.json`` (generated: ``--items`` words over 19 checkpoints);
printed are the words whose child or model AoA differs (one side none, or by more than 1e-6)
and both scores.

``aoa_surprisal`` compares the surprisals themselves, on the saved model: the official
``StepSurprisalExtractor.analyze_steps`` (``AoA_word/evaluation_functions.py``, as its ``run.py``
calls it, for one checkpoint) and ``onceupon evaluate`` with the ``aoa`` task read the same
generated ``cdi_childes.json`` (``--items`` contexts over 65 CDI-like words, some of one
character, some of several tokens or words; contexts padded with spaces, tabs, newlines, some
empty, a few at or beyond the model's context); printed are the contexts whose surprisal
differs by more than 1e-6 of its size (at least 1e-6 nats; NaN against a number counts) and the
largest difference.

The official data cannot be fetched here (it lives on OSF), so the files are generated in the
official format, with sizes set by ``--items``; with ``--data DIR`` (an ``evaluation_data``
folder) the real files are used instead.

    python benchmarks/bench_babylm_vs_official.py --tasks comps
    python benchmarks/bench_babylm_vs_official.py --tasks comps --items 8000 --data ~/babylm/evaluation_data
    python benchmarks/bench_babylm_vs_official.py --tasks aoa --items 300
    python benchmarks/bench_babylm_vs_official.py --tasks aoa_surprisal --items 2000

The official source is read from ``--official`` (default ``.benchmarks/evaluation-pipeline-2025``:
a clone of https://github.com/babylm/evaluation-pipeline-2025). Its environment
(``.benchmarks/babylm-official-venv``: torch, transformers 4.57, pandas, statsmodels, scipy,
datasets, aiohttp) is made on first use.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".benchmarks" / "babylm-official-venv"
OFFICIAL = ROOT / ".benchmarks" / "evaluation-pipeline-2025"
AS_IS = False  # --as-is: run the official reading code on the checkpoint exactly as saved
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scoring_vs_minicons import build_model  # noqa: E402  (the same tiny model recipe)
from bench_scoring_vs_minicons import ensure_venv as make_venv  # noqa: E402  (the same peer environment recipe)


# --------------------------------------------------------------------------- environment
def ensure_venv() -> Path:
    return make_venv(
        VENV,
        ("transformers", "statsmodels", "pandas", "datasets", "aiohttp"),
        ("transformers>=4.57,<4.58", "scipy", "pandas", "statsmodels", "scikit-learn", "datasets", "aiohttp", "tqdm"),
        "the official pipeline's environment",
    )


def timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak resident GB, output) of one process, one torch thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ONCEUPON_PROGRESS="off")
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        log.seek(0)
        out = log.read()
    if status:
        sys.exit(f"{' '.join(str(c) for c in cmd[:6])} ... failed:\n{out[-4000:]}")
    return wall, usage.ru_maxrss / 1e6, out


def onceupon_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from onceupon.cli import main; main()", *args]


def evaluate_ours(model: Path, data: Path, out: Path, task: str, *settings: str) -> tuple[float, float, dict, list[dict]]:
    """`onceupon evaluate` of one task and no stories: (wall seconds, peak GB, the task's
    figures in results.json, its per-item rows in tasks/TASK.scores.jsonl)."""
    sets = [x for s in (f"evaluate.tasks=[{task}]", "evaluate.stories=0", *settings) for x in ("--set", s)]
    wall, memory, _ = timed(onceupon_cmd("evaluate", str(model), "--data", str(data), "--out", str(out), *sets))
    figures = json.loads((out / "results.json").read_text())["rows"][0]["tasks"][task]
    details = [json.loads(x) for x in (out / "tasks" / f"{task}.scores.jsonl").read_text().splitlines()]
    return wall, memory, figures, details


# --------------------------------------------------------------------------- COMPS
CONCEPTS = {
    "dog": ["can bark.", "has four legs.", "has fur.", "is a pet."],
    "cat": ["can purr.", "has four legs.", "has whiskers.", "is a pet."],
    "bird": ["can fly.", "has wings.", "lays eggs.", "has feathers."],
    "fish": ["can swim.", "has fins.", "lives in water.", "lays eggs."],
    "cow": ["gives milk.", "eats grass.", "has four legs.", "lives on a farm."],
    "table": ["has four legs.", "is made of wood.", "is furniture.", "stands in a room."],
    "car": ["has wheels.", "needs fuel.", "can drive on roads.", "has an engine."],
    "apple": ["is a fruit.", "grows on trees.", "can be eaten.", "is red or green."],
    "knife": ["can cut bread.", "is sharp.", "is made of metal.", "has a handle."],
    "rose": ["is a flower.", "has thorns.", "smells sweet.", "grows in gardens."],
}
WUG_WORDS = ["wug", "dax", "blicket", "fep", "toma", "zup"]


def comps_files(n: int, seed: int = 0) -> dict[str, list[dict]]:
    """Generated COMPS items in the official four files (base, wugs, two distractor kinds)."""
    rng = random.Random(seed)
    names = list(CONCEPTS)
    files: dict[str, list[dict]] = {"comps_base": [], "comps_wugs": [], "comps_wugs_dist-before": [], "comps_wugs_dist-in-between": []}
    stems = list(files)
    for i in range(n):
        good = rng.choice(names)
        prop = rng.choice(CONCEPTS[good])
        bad = rng.choice([c for c in names if prop not in CONCEPTS[c]])
        stem = stems[i % 4]
        w, d = rng.sample(WUG_WORDS, 2)
        if stem == "comps_base":
            acc, una = f"A {good}", f"A {bad}"
        elif stem == "comps_wugs":
            acc, una = f"A {w} is a {good}. Therefore, a {w}", f"A {w} is a {bad}. Therefore, a {w}"
        elif stem == "comps_wugs_dist-before":
            acc = f"A {d} is a {bad}. A {w} is a {good}. Therefore, a {w}"
            una = f"A {w} is a {good}. A {d} is a {bad}. Therefore, a {d}"
        else:
            acc = f"A {w} is a {good}. A {d} is a {bad}. Therefore, a {w}"
            una = f"A {w} is a {good}. A {d} is a {bad}. Therefore, a {d}"
        files[stem].append({"prefix_acceptable": acc, "prefix_unacceptable": una, "property_phrase": prop,
                            "acceptable_concept": good, "unacceptable_concept": bad, "negative_sample_type": "generated"})
    return files


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def bench_comps(python: Path, model: Path, work: Path, data: Path | None, items: int) -> dict:
    if data is not None:
        comps_dir = Path(data).expanduser() / "full_eval" / "comps"
        files = {p.stem: [json.loads(x) for x in p.read_text().splitlines() if x.strip()] for p in sorted(comps_dir.glob("*.jsonl"))}
    else:
        files = comps_files(items)
        comps_dir = work / "evaluation_data" / "full_eval" / "comps"
        for stem, rows in files.items():
            write_jsonl(comps_dir / f"{stem}.jsonl", rows)
    n = sum(len(v) for v in files.values())

    out_official = work / "official"
    wall_o, mem_o, log_o = timed(
        [str(python), "-m", "evaluation_pipeline.sentence_zero_shot.run", "--model_path_or_name", str(model), "--backend", "causal",
         "--task", "comps", "--data_path", str(comps_dir), "--save_predictions", "--output_dir", str(out_official), "--batch_size", "64"],
        cwd=OFFICIAL,
    )
    official_dir = out_official / model.stem / "main" / "zero_shot" / "causal" / "comps" / "comps"
    preds = json.loads((official_dir / "predictions.json").read_text())
    report = (official_dir / "best_temperature_report.txt").read_text().split("### AVERAGE ACCURACY")[1].split()[0]

    wall_u, mem_u, results, details = evaluate_ours(model, comps_dir.parent, work / "ours", "comps", "evaluate.batch_size=64")

    # The official predictions are the chosen sentence, per subset in file order; a verdict is
    # right when it is the acceptable sentence (what a tie also gives, as argmax takes index 0).
    subset_of = {"comps_base": "base", "comps_wugs": "wugs", "comps_wugs_dist-before": "wugs_dist_before"}
    official_right: dict[tuple[str, int], bool] = {}
    for stem, rows in files.items():
        subset = subset_of.get(stem, "wugs_dist_in_between")
        for line, (row, pred) in enumerate(zip(rows, preds[subset]["predictions"])):
            official_right[(stem, line)] = pred["pred"] == " ".join([row["prefix_acceptable"], row["property_phrase"]])
    differ = sum(official_right[(d["file"], d["line"])] != d["correct"] for d in details)
    by_subset: dict[str, list[bool]] = {}
    for (stem, _), right in official_right.items():
        by_subset.setdefault(subset_of.get(stem, "wugs_dist_in_between"), []).append(right)
    official = sum(100 * sum(v) / len(v) for v in by_subset.values()) / len(by_subset)  # its own aggregation
    assert abs(official - float(report)) < 0.006, (official, report)
    return {"task": "comps", "items": n, "differ": differ, "official": official, "ours": results["accuracy"],
            "wall": (wall_o, wall_u), "memory": (mem_o, mem_u)}


# --------------------------------------------------------------------------- reading
READING_COLUMNS = ["item", "word", "prev_item", "prev_word", "RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound",
                   "self_paced_reading_time", "ELAN", "LAN", "N400", "P600", "EPNP", "PNP",
                   "Subtlex_log10", "length", "context_length", "prev_length"]


def reading_csv(path: Path, n_rows: int, seed: int = 0) -> None:
    """A reading_data.csv in the official columns: words of storyworld sentences with made-up
    measures (longer, rarer words read slower), some cells empty as in the real file."""
    import csv

    from onceupon.corpus.storyworld import generate

    rng = random.Random(seed)
    rows: list[dict] = []
    for story in generate(400, seed=seed + 7):
        for sentence in story.text.split(". "):
            words = sentence.strip().rstrip(".").split(" ")
            if len(words) < 3:
                continue
            for i, word in enumerate(words):
                freq = rng.uniform(1, 5)
                row = {"item": " ".join(words[:i]), "word": word,
                       "prev_item": " ".join(words[: i - 1]) if i else "", "prev_word": words[i - 1] if i else ""}
                for col in READING_COLUMNS[4:9]:
                    row[col] = "" if rng.random() < 0.05 else f"{180 + 25 * len(word) - 20 * freq + rng.gauss(0, 50):.1f}"
                for col in READING_COLUMNS[9:15]:
                    row[col] = f"{rng.gauss(0, 1):.3f}"
                row.update({"Subtlex_log10": f"{freq:.3f}", "length": len(word), "context_length": i,
                            "prev_length": len(words[i - 1]) if i else ""})
                rows.append(row)
                if len(rows) == n_rows:
                    break
            if len(rows) == n_rows:
                break
        if len(rows) == n_rows:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=READING_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


OFFICIAL_READING_FIGURES = r"""
import json, sys
from evaluation_pipeline.collate_preds import _calculate_reading_results
preds = json.load(open(sys.argv[1]))
print(json.dumps(_calculate_reading_results(preds, sys.argv[2])))
"""


def bench_reading(python: Path, model: Path, work: Path, data: Path | None, items: int) -> dict:
    if data is not None:
        csv_path = Path(data).expanduser() / "fast_eval" / "reading" / "reading_data.csv"
    else:
        csv_path = work / "evaluation_data" / "fast_eval" / "reading" / "reading_data.csv"
        reading_csv(csv_path, min(items, 1726))
    official_model = model
    if not AS_IS:
        # The official reading code calls model(**tokenizer(text)): a tokenizer that returns
        # token_type_ids (a generic fast tokenizer does, unless its config lists its model
        # inputs) makes GPT-2 add the embedding of token 0 at every position, which is not
        # the model's surprisal. Declaring the inputs the model takes runs the official code
        # as intended; --as-is keeps the checkpoint as saved.
        import shutil

        official_model = work / "declared_inputs" / model.name
        shutil.copytree(model, official_model)
        config_file = official_model / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config["model_input_names"] = ["input_ids", "attention_mask"]
        config_file.write_text(json.dumps(config))
    out_official = work / "official"
    wall_o, mem_o, _ = timed(
        [str(python), "-m", "evaluation_pipeline.reading.run", "--model_path_or_name", str(official_model), "--backend", "causal",
         "--data_path", str(csv_path), "--output_dir", str(out_official)],
        cwd=OFFICIAL,
    )
    pred_file = out_official / model.stem / "main" / "zero_shot" / "causal" / "reading" / "predictions.json"
    official_preds = json.loads(pred_file.read_text())["reading"]["predictions"]
    figures = subprocess.run([str(python), "-c", OFFICIAL_READING_FIGURES, str(pred_file), str(csv_path)],
                             cwd=OFFICIAL, capture_output=True, text=True, check=True)
    official = json.loads(figures.stdout.strip().splitlines()[-1])

    wall_u, mem_u, ours, details = evaluate_ours(model, csv_path.parent.parent, work / "ours", "reading")

    def far(a, b):  # NaN (no previous word) must be missing on both sides
        if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
            return (a is None) != (b is None or math.isnan(b))
        return abs(a - b) > 1e-4 * max(1.0, abs(b))

    differ = sum(far(d["pred"], o["pred"]) or far(d["prev_pred"], o["prev_pred"]) for d, o in zip(details, official_preds))
    worst = max(abs(d["pred"] - o["pred"]) for d, o in zip(details, official_preds))
    return {"task": "reading", "items": len(details), "differ": differ + abs(len(details) - len(official_preds)),
            "official": 100 * official["rt"], "ours": ours["eye_tracking"],
            "extra": f"self-paced {100 * official['spr']:.4f} vs {ours['self_paced_reading']:.4f}; max |surprisal difference| {worst:.1e}",
            "wall": (wall_o, wall_u), "memory": (mem_o, mem_u)}


# --------------------------------------------------------------------------- AoA
def aoa_files(n_words: int, revisions: list[str], seed: int = 0, words: list[str] | None = None) -> tuple[list[dict], dict]:
    """A cdi_human.csv's rows and a surprisal.json in the official formats: per word a child
    curve (share of children producing it, 16..30 months: a logistic with noise, some cells
    empty) and, per revision and context, a surprisal falling along a noisy sigmoid over
    log10(words) whose midpoint follows the child's AoA; some words never learned, some
    contexts NaN (a failed context), some words missing from the CDI file. With ``words`` (a
    real CDI file's), the curves are made for those words."""
    rng = random.Random(seed)
    rows, results = [], []
    for i in range(len(words) if words else n_words):
        word = words[i] if words else f"w{i:04d}{rng.choice(['a', 'b', 'c'])}"
        age = rng.uniform(15, 31)
        slope = rng.uniform(0.25, 1.5)
        row = {"word": word}
        for month in range(16, 31):
            p = 1 / (1 + math.exp(-slope * (month - age))) + rng.gauss(0, 0.03)
            row[str(month)] = "" if rng.random() < 0.04 else f"{min(1.0, max(0.0, p)):.4f}"
        if rng.random() < 0.95:  # the rest are words the CDI file lacks
            rows.append(row)
        middle = 6.0 + (age - 16) / 14 * 1.8 + rng.gauss(0, 0.4)  # log10 words where it drops
        high, low = rng.uniform(11, 17), rng.uniform(3, 9)
        if rng.random() < 0.1:
            low = high - rng.uniform(0, 1)  # barely learned
        for context in range(rng.randint(2, 12)):
            shift = rng.gauss(0, 1.0)
            for revision in revisions:
                x = math.log10(int(revision[5:-1]) * 1_000_000)
                s = low + (high - low) / (1 + math.exp(3.0 * (x - middle))) + shift + rng.gauss(0, 0.6)
                if rng.random() < 0.01:
                    s = float("nan")
                results.append({"step": revision, "word_count": int(revision[5:-1]) * 1_000_000, "target_word": word,
                                "context_id": context, "context": f"context {context} of {word} ", "surprisal": s})
    meta = {"model_name": "generated", "use_bos_only": False, "total_steps": len(revisions), "completed_steps": len(revisions)}
    return rows, {"metadata": meta, "results": results}


OFFICIAL_AOA = r"""
import json, sys, time
import numpy as np
from utils import AoAEvaluator
start = time.perf_counter()
ev = AoAEvaluator(sys.argv[1])
data = json.load(open(sys.argv[2]))
score = ev.compute_curve_fitness(data)["curve_fitness"]
seconds = time.perf_counter() - start
# Each word's two ages as the official methods give them: compute_curve_fitness again, with
# the child AoA reported as defined, so that it computes the model AoA of every word in the CDI.
child, model, asked = {}, {}, []
official_child, official_model = ev.compute_child_aoa, ev.compute_model_aoa
def every_child(idx, **kw):
    word = str(ev.words[idx])
    child[word] = official_child(idx, **kw)
    asked.append(word)
    return 1.0
def every_model(values, steps, **kw):
    model[asked[-1]] = official_model(values, steps, **kw)
    return model[asked[-1]]
ev.compute_child_aoa, ev.compute_model_aoa = every_child, every_model
ev.compute_curve_fitness(data)
print(json.dumps({"score": score, "seconds": seconds, "child": child, "model": model}))
"""

OURS_AOA = r"""
import json, sys, time
from onceupon.evaluate import aoa
start = time.perf_counter()
cdi = aoa.read_cdi(sys.argv[1])
data = json.load(open(sys.argv[2]))
result = aoa.curve_fitness(data["results"], cdi)
seconds = time.perf_counter() - start
print(json.dumps({"score": result["curve_fitness"], "seconds": seconds, "words": result["words"]}))
"""


def bench_aoa(python: Path, model: Path | None, work: Path, data: Path | None, items: int) -> dict:
    import csv

    revisions = [f"chck_{i}M" for i in range(1, 10)] + [f"chck_{10 * i}M" for i in range(1, 11)]
    work.mkdir(parents=True, exist_ok=True)
    surprisal_file = work / "surprisal.json"
    if data is not None:  # the real CDI file; the curves are still generated (a run of many checkpoints)
        cdi_file = Path(data).expanduser() / "full_eval" / "aoa" / "cdi_human.csv"
        with open(cdi_file, newline="", encoding="utf-8") as f:
            words = [row["word"] for row in csv.DictReader(f)][:items]
        _, surprisal = aoa_files(items, revisions, words=words)
    else:
        cdi_file = work / "evaluation_data" / "full_eval" / "aoa" / "cdi_human.csv"
        rows, surprisal = aoa_files(items, revisions)
        cdi_file.parent.mkdir(parents=True, exist_ok=True)
        with open(cdi_file, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["word", *(str(m) for m in range(16, 31))])
            writer.writeheader()
            writer.writerows(rows)
    surprisal_file.write_text(json.dumps(surprisal), encoding="utf-8")
    wall_o, mem_o, out_o = timed([str(python), "-c", OFFICIAL_AOA, str(cdi_file), str(surprisal_file)], cwd=OFFICIAL / "evaluation_pipeline")
    wall_u, mem_u, out_u = timed([sys.executable, "-c", OURS_AOA, str(cdi_file), str(surprisal_file)])
    official = json.loads(out_o.strip().splitlines()[-1])
    ours = json.loads(out_u.strip().splitlines()[-1])

    def differs(a, b):
        return (a is None) != (b is None) or (a is not None and abs(a - b) > 1e-6)

    words = ours["words"]
    differ = []
    for word, w in words.items():
        if w["in_cdi"] and (differs(w["child"], official["child"].get(word)) or differs(w["model"], official["model"].get(word))):
            differ.append(word)
    differ += [w for w in official["child"] if w not in words or not words[w]["in_cdi"]]
    for word in differ[:10]:
        w = words.get(word, {})
        print(f"  {word}: child {w.get('child')} vs official {official['child'].get(word)}; "
              f"model {w.get('model')} vs official {official['model'].get(word)}", flush=True)
    both = sum(1 for w in words.values() if w["model"] is not None and w["child"] is not None)
    return {"task": "aoa", "items": len(words), "differ": len(differ), "official": official["score"], "ours": ours["score"],
            "extra": f"{len(surprisal['results'])} surprisals over {len(revisions)} checkpoints; {both} words with both ages; "
                     f"scoring alone {official['seconds']:.2f} s vs {ours['seconds']:.2f} s ({ours['seconds'] / official['seconds']:.2f}x)",
            "wall": (wall_o, wall_u), "memory": (mem_o, mem_u)}


# --------------------------------------------------------------------------- AoA surprisals
# CDI-like words: short and long, several tokens, two words in one entry (the CDI has
# "all gone"), a padded key; the one-character ones are dropped by both sides.
AOA_WORDS = ["dog", "cat", "ball", "mommy", "daddy", "juice", "banana", "cookie", "shoe", "hat", "bath", "book",
             "car", "truck", "bird", "fish", "cow", "duck", "milk", "water", "apple", "bear", "teddy bear", "all gone",
             "choo choo", "peekaboo", "grandma", "grandpa", "blanket", "bottle", "spoon", "cup", "bed", "door",
             "outside", "up", "down", "no", "yes", "hi", "bye", "more", "eat", "sleep", "go", "run", "jump", "hug",
             "kiss", "happy", "sad", "hot", "cold", "big", "little", "pretty", "yucky", "uh oh", " owie ", "vroom", "  ",
             "a", "I", "o", "x"]


def aoa_contexts(items: int, model: Path, seed: int = 0) -> dict[str, list[dict]]:
    """A cdi_childes.json in the official format (word -> [{"context": ...}, ...]) with about
    ``items`` contexts: cut storyworld sentences, some with leading or trailing spaces,
    newlines or tabs, some empty, and a few whose text is right at the model's context
    (the last that fits, the first that does not) or far beyond it."""
    from transformers import AutoConfig, AutoTokenizer

    from onceupon.corpus.storyworld import generate

    rng = random.Random(seed)
    tokenizer = AutoTokenizer.from_pretrained(model)
    n_positions = AutoConfig.from_pretrained(model).n_positions
    sentences = [s.strip() for story in generate(300, seed=seed + 3) for s in story.text.split(". ") if s.strip()]
    long_text = " ".join(sentences)
    per_word = max(1, items // len(AOA_WORDS))
    data: dict[str, list[dict]] = {}
    for k, word in enumerate(AOA_WORDS):
        contexts = []
        for _ in range(per_word):
            words = rng.choice(sentences).split(" ")
            context = " ".join(words[: rng.randint(0, len(words))])
            pad = rng.random()
            if pad < 0.15:
                context = "  " + context
            elif pad < 0.3:
                context = context + "   "
            elif pad < 0.4:
                context = "\n" + context + " \t"
            contexts.append(context)
        if k % 12 == 0:
            contexts.append("")
        if k % 8 == 0:  # at the model's context: the official input is the text less its last token
            def tokens(chars: int, word: str = word) -> int:  # the official text's tokens, BOS included
                return len(tokenizer(long_text[:chars].strip() + " " + word.strip())["input_ids"])

            for target in (n_positions + 1, n_positions + 2):  # the last that fits, the first that does not
                lo, hi = 1, len(long_text)
                while lo < hi:  # the shortest start of the text that reaches the target
                    mid = (lo + hi) // 2
                    lo, hi = (mid + 1, hi) if tokens(mid) < target else (lo, mid)
                cut = next((c for c in range(lo, lo + 50) if tokens(c) == target), lo)
                contexts.append(long_text[:cut])
            contexts.append(long_text[: 20 * n_positions])  # far beyond
        data[word] = [{"context": c, "sentence_id": i} for i, c in enumerate(contexts)]
    return data


OFFICIAL_AOA_SURPRISALS = r"""
import json, sys, time
from pathlib import Path
from evaluation_pipeline.AoA_word.eval_util import StepConfig, load_eval
from evaluation_pipeline.AoA_word.evaluation_functions import StepSurprisalExtractor
# run.py's path for one checkpoint: its word reader, StepConfig and analyze_steps (contexts
# included, use_bos_only=False), the checkpoint list cut to its first name. from_pretrained
# of a local directory ignores the revision, so chck_1M is the saved model itself.
words, contexts = load_eval(Path(sys.argv[2]), 0)
config = StepConfig(track="strict-small")
config.steps, config.word_counts = config.steps[:1], config.word_counts[:1]
extractor = StepSurprisalExtractor(config=config, model_name=sys.argv[1], backend="causal", device="cpu")
start = time.perf_counter()
data = extractor.analyze_steps(contexts=contexts, target_words=words)
seconds = time.perf_counter() - start
json.dump(data, open(sys.argv[3], "w"))
print(json.dumps({"seconds": seconds}))
"""


def bench_aoa_surprisal(python: Path, model: Path, work: Path, data: Path | None, items: int) -> dict:
    if data is not None:
        words_file = Path(data).expanduser() / "full_eval" / "aoa" / "cdi_childes.json"
    else:
        words_file = work / "evaluation_data" / "full_eval" / "aoa" / "cdi_childes.json"
        words_file.parent.mkdir(parents=True, exist_ok=True)
        words_file.write_text(json.dumps(aoa_contexts(items, model)), encoding="utf-8")
    official_file = work / "official_surprisal.json"
    wall_o, mem_o, out_o = timed([str(python), "-c", OFFICIAL_AOA_SURPRISALS, str(model), str(words_file), str(official_file)], cwd=OFFICIAL)
    official = json.loads(official_file.read_text())["results"]

    wall_u, mem_u, ours, details = evaluate_ours(model, words_file.parent.parent, work / "ours", "aoa")

    from onceupon.evaluate.aoa import read_words

    words = read_words(words_file)
    mine = [(words[d["word"]][0], words[d["word"]][1][d["context"]], math.nan if d["surprisal"] is None else d["surprisal"]) for d in details]
    theirs = [(r["target_word"], r["context"], float(r["surprisal"])) for r in official]
    differ, worst, nan_both = [], 0.0, 0
    for (w, c, s), (wo, co, so) in zip(mine, theirs):
        if (w, c) != (wo, co):
            sys.exit(f"aoa_surprisal: the two sides list different (word, context) pairs: {(w, c[:40])} vs {(wo, co[:40])}")
        if math.isnan(s) and math.isnan(so):
            nan_both += 1
            continue
        if not (math.isnan(s) or math.isnan(so)):
            worst = max(worst, abs(s - so))
        # relative, as for reading: float32 batch shapes alone move a 76-nat surprisal by ~3e-06
        if math.isnan(s) or math.isnan(so) or abs(s - so) > 1e-6 * max(1.0, abs(so)):
            differ.append((w, c, s, so))
    for w, c, s, so in differ[:10]:
        print(f"  {w!r} after {c[:60]!r}{'...' if len(c) > 60 else ''}: onceupon {s} vs official {so}", flush=True)
    done = [s for _, _, s in theirs if not math.isnan(s)]
    seconds = json.loads(out_o.strip().splitlines()[-1])["seconds"]
    return {"task": "aoa_surprisal", "items": len(mine), "differ": len(differ) + abs(len(mine) - len(theirs)),
            "official": sum(done) / len(done), "ours": ours["mean_surprisal"],
            "extra": f"{len(words)} words; NaN on both sides {nan_both}; max |surprisal difference| {worst:.1e} nats; "
                     f"official surprisals alone {seconds:.1f} s (one checkpoint of run.py's 19)",
            "wall": (wall_o, wall_u), "memory": (mem_o, mem_u)}


# --------------------------------------------------------------------------- main
TASKS = {"comps": bench_comps, "reading": bench_reading, "aoa": bench_aoa, "aoa_surprisal": bench_aoa_surprisal}
MODEL_TASKS = ("comps", "reading", "aoa_surprisal")


def main() -> None:
    global OFFICIAL, AS_IS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="comps", help=f"comma-separated: {', '.join(TASKS)}")
    ap.add_argument("--items", type=int, default=2000, help="generated items per task (without --data)")
    ap.add_argument("--data", type=Path, default=None, help="a real evaluation_data folder instead of generated files")
    ap.add_argument("--preset", default="gpt2-tiny")
    ap.add_argument("--as-is", action="store_true", help="reading: do not declare the tokenizer's model inputs (see bench_reading)")
    ap.add_argument("--official", type=Path, default=OFFICIAL, help="checkout of babylm/evaluation-pipeline-2025")
    args = ap.parse_args()
    OFFICIAL = args.official.resolve()
    AS_IS = args.as_is
    if not (OFFICIAL / "evaluation_pipeline").is_dir():
        sys.exit(f"{OFFICIAL} holds no evaluation_pipeline/: clone babylm/evaluation-pipeline-2025 there or give --official")
    python = ensure_venv()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        sys.exit(f"unknown task {unknown[0]}; choose from {', '.join(TASKS)}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = None
        if any(t in MODEL_TASKS for t in tasks):  # aoa scores given surprisals: no model
            model = work / "bench_model"
            sentences = [(" ".join(["A", c, p]), "") for c, ps in CONCEPTS.items() for p in ps]
            vocab = build_model(model, args.preset, sentences, 16_000)
            print(f"model: {args.preset} ({vocab} tokens vocabulary), cpu, 1 thread per side; official source {OFFICIAL}", flush=True)
        for task in tasks:
            # Both sides run with their output kept for the comparison: say what is under way.
            print(f"{task}: running the official pipeline, then onceupon, on the same items ...", flush=True)
            r = TASKS[task](python, model, work / task, args.data, args.items)
            (wo, wu), (mo, mu) = r["wall"], r["memory"]
            print(f"{task}: {r['items']} items; judged differently: {r['differ']}; "
                  f"official {r['official']:.2f}, onceupon {r['ours']:.2f} (difference {r['ours'] - r['official']:+.2e}); "
                  f"wall {wo:.1f} s vs {wu:.1f} s ({wu / wo:.2f}x official); peak memory {mo:.2f} GB vs {mu:.2f} GB ({mu / mo:.2f}x)"
                  + (f"; {r['extra']}" if r.get("extra") else ""), flush=True)
            failed |= r["differ"] > 0
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
