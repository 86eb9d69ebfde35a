"""The reading task on a small file in the official layout: surprisal and the R^2 figures.

The test writes ``reading/reading_data.csv`` (words of a few sentences with made-up reading
times, some cells empty), evaluates the tiny checkpoint through ``evaluate_checkpoint`` and
recomputes everything from the official definition: one unpadded forward pass per text,
multi-token words continued on the decoded text, and the two regressions solved through the
normal equations with the official formulas' terms written out.
"""

import csv
import json
import math
import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.evaluate import reading
from onceupon.evaluate.evaluate import Target, evaluate_checkpoint

SENTENCES = [
    "The little fox ran into the dark forest and found a red box.",
    "A brave girl gave the old bear a shiny key near the river.",
    "The king smiled when the clever cat opened the small door.",
    "Every morning the tired dog slept under the big tree.",
]
COLUMNS = ["item", "word", "prev_item", "prev_word", "RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound",
           "self_paced_reading_time", "ELAN", "LAN", "N400", "P600", "EPNP", "PNP",
           "Subtlex_log10", "length", "context_length", "prev_length"]


def write_reading(root, seed=0, suite="fast_eval"):
    rng = random.Random(seed)
    rows = []
    for sentence in SENTENCES:
        words = sentence.split(" ")
        for i, word in enumerate(words):
            context = " ".join(words[:i])
            row = {"item": context, "word": word if i == 0 else word, "prev_item": "", "prev_word": ""}
            if i > 0:
                row["prev_item"] = " ".join(words[: i - 1])
                row["prev_word"] = words[i - 1]
            for col in ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound", "self_paced_reading_time"):
                row[col] = "" if rng.random() < 0.1 else f"{200 + 30 * len(word) + rng.gauss(0, 40):.1f}"
            for col in ("ELAN", "LAN", "N400", "P600", "EPNP", "PNP"):
                row[col] = f"{rng.gauss(0, 1):.3f}"
            row["Subtlex_log10"] = f"{rng.uniform(1, 5):.3f}"
            row["length"] = len(word)
            row["context_length"] = i
            row["prev_length"] = len(words[i - 1]) if i > 0 else ""
            rows.append(row)
    path = root / "evaluation_data" / suite / "reading" / "reading_data.csv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def p_next(model, tok, text, token_id):
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
    return torch.softmax(logits, dim=-1)[token_id].item()


def official_surprisal(model, tok, text, word):
    target = tok(word, add_special_tokens=False)["input_ids"]
    p = [p_next(model, tok, text, target[0])]
    text += tok.decode(target[0])
    for token in target[1:]:
        piece = tok.decode(token)
        p.append(p_next(model, tok, text, tok(piece, add_special_tokens=False)["input_ids"][0]))
        text += piece
    return -math.log(np.prod(p))


def r2(frame, formula_terms, outcome):
    used = {outcome} | {c for t in formula_terms for c in t.split(":")}
    keep = [r for r in frame if all(not math.isnan(r[c]) for c in used)]
    x = np.array([[1.0] + [math.prod(r[c] for c in t.split(":")) for t in formula_terms] for r in keep])
    y = np.array([r[outcome] for r in keep])
    beta = np.linalg.solve(x.T @ x, x.T @ y)
    return 1 - ((y - x @ beta) ** 2).sum() / ((y - y.mean()) ** 2).sum()


BASE = "Subtlex_log10 + length + context_length + Subtlex_log10:length + Subtlex_log10:context_length + length:context_length"
SPILL = ("Subtlex_log10 + length + context_length + prev_length + prev_pred + Subtlex_log10:length + Subtlex_log10:context_length "
         "+ Subtlex_log10:prev_length + Subtlex_log10:prev_pred + length:context_length + length:prev_length + length:prev_pred "
         "+ context_length:prev_length + context_length:prev_pred + prev_length:prev_pred")


def gain(frame, terms, outcome):
    terms = [t.strip() for t in terms.split("+")]
    base, model = r2(frame, terms, outcome), r2(frame, terms + ["pred"], outcome)
    return 100 * (model - base) / (1 - base)


def test_reading_surprisal_and_r2_gains_are_the_official_ones(tiny_checkpoint, tmp_path):
    path = write_reading(tmp_path)
    cfg = ExperimentConfig()
    cfg.evaluate.tasks = ["reading"]
    cfg.evaluate.stories = 0
    cfg.evaluate.batch_size = 5
    out = tmp_path / "out"
    row = evaluate_checkpoint(cfg, Target("c", tiny_checkpoint, "pretrain", 0, 0, out), path.parent.parent)
    result = row["tasks"]["reading"]

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    with open(path, encoding="utf-8") as f:
        raw = list(csv.DictReader(f))
    assert any(len(tok(r["word"], add_special_tokens=False)["input_ids"]) > 1 for r in raw)  # the multi-token path runs
    frame = []
    for r in raw:
        num = {k: float(r[k]) if r[k] != "" else math.nan for k in COLUMNS[4:]}
        num["pred"] = official_surprisal(model, tok, r["item"] if r["item"] != "" else "None", r["word"])
        num["prev_pred"] = official_surprisal(model, tok, r["prev_item"], r["prev_word"]) if r["prev_item"] != "" else math.nan
        frame.append(num)
    details = [json.loads(x) for x in (out / "tasks" / "reading.scores.jsonl").read_text().splitlines()]
    assert [d["pred"] for d in details] == pytest.approx([f["pred"] for f in frame], abs=1e-4)
    assert [d["prev_pred"] is None for d in details] == [math.isnan(f["prev_pred"]) for f in frame]

    eye = sum(gain(frame, BASE, dv) for dv in ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")) / 4
    assert result["eye_tracking"] == pytest.approx(eye, abs=1e-4)
    assert result["self_paced_reading"] == pytest.approx(gain(frame, SPILL, "self_paced_reading_time"), abs=1e-4)
    assert result["n"] == len(raw)


def test_reading_file_without_a_column_is_one_sentence(tmp_path):
    path = tmp_path / "reading_data.csv"
    path.write_text("item,word\nThe,fox\n", encoding="utf-8")
    with pytest.raises(UserError, match="lacks the column 'prev_item'"):
        reading.read_rows(path)
