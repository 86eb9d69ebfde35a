"""BabyLM 2025 reading task: does the model's surprisal explain human reading times?

The data (``reading/reading_data.csv``, the same file in fast_eval and full_eval) holds one
row per word of 205 English sentences with human measures: four eye-tracking reading times
(``RTfirstfix``, ``RTfirstpass``, ``RTgopast``, ``RTrightbound``) and a self-paced reading
time, plus the baseline predictors ``Subtlex_log10`` (word frequency), ``length`` and
``context_length``, and for the spillover model ``prev_length``.

Surprisal, as the official pipeline computes it for a causal model: the context ``item`` is
tokenized whole (with the tokenizer's begin-of-sequence token) and the model's next-token
distribution read after it; the word is tokenized alone (no leading space, no special tokens)
and its first token's probability taken. A word of several tokens goes on one token at a
time: the decoded token is appended to the *text*, the text is tokenized again, and the next
piece's probability is that of the first token the decoded piece tokenizes to. Surprisal is
``-ln`` of the product. The previous word's surprisal (``prev_item``/``prev_word``) is
computed the same way, missing (NaN) where the row has none. A missing ``item`` reads as the
text "None", as officially.

The figures are the official ones: for each eye-tracking measure, an ordinary least squares
fit on the baseline predictors and their pairwise interactions, once without and once with
surprisal; the gain in R^2 as a share of what was left to explain, ``(R2_model - R2_base) /
(1 - R2_base)``, in percent, averaged over the four measures (``eye_tracking``); and the same
for self-paced reading with the previous word's length and surprisal among the predictors
(one word of spillover; ``self_paced_reading``). Each fit uses the rows where its columns
are all present, as pandas' ``dropna`` does.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from onceupon.errors import UserError

READING_FILE = Path("reading") / "reading_data.csv"
EYE_TRACKING = ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")
SELF_PACED = "self_paced_reading_time"
BASE = ("Subtlex_log10", "length", "context_length")
SPILLOVER = BASE + ("prev_length", "prev_pred")
NUMERIC = EYE_TRACKING + (SELF_PACED,) + BASE + ("prev_length",)
#: Cells pandas' read_csv reads as missing by default (the official code reads the file so).
NA_TEXT = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)  # fmt: skip


def reading_file(root: Path) -> Path | None:
    path = Path(root) / READING_FILE
    return path if path.is_file() else None


def read_rows(path: Path) -> list[dict]:
    """The CSV's rows: texts as strings (None when missing), measures as floats (NaN when missing)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not valid UTF-8 text.") from None
    if not rows:
        raise UserError(f"{path} holds no rows.")
    missing = [c for c in ("item", "word", "prev_item", "prev_word", *NUMERIC) if c not in rows[0]]
    if missing:
        raise UserError(f"{path} lacks the column '{missing[0]}' of the BabyLM reading data.")
    out = []
    for i, raw in enumerate(rows):
        row: dict = {}
        for key in ("item", "word", "prev_item", "prev_word"):
            value = raw[key]
            row[key] = None if value is None or value in NA_TEXT else value
        if row["item"] is None:
            row["item"] = "None"  # the official reader fills a missing context with this text
        if row["word"] is None:
            raise UserError(f"{path}, row {i + 2}: the word is missing.")
        for key in NUMERIC:
            value = (raw[key] or "").strip()
            try:
                row[key] = float("nan") if value in NA_TEXT else float(value)
            except ValueError:
                raise UserError(f"{path}, row {i + 2}: '{key}' is not a number ({value[:40]!r}).") from None
        out.append(row)
    return out


# --------------------------------------------------------------------------- surprisal
def _probes(text: str, word: str, tokenizer) -> list[tuple[str, int]]:
    """(text, token id) pairs whose next-token probabilities multiply to P(word | text)."""
    target = tokenizer(word, add_special_tokens=False)["input_ids"]
    if not target:
        raise UserError(f"The reading word {word!r} tokenizes to nothing.")
    probes = [(text, target[0])]
    text = text + tokenizer.decode(target[0])
    for token in target[1:]:
        piece = tokenizer.decode(token)
        probes.append((text, tokenizer(piece, add_special_tokens=False)["input_ids"][0]))
        text = text + piece
    return probes


def next_token_probabilities(model, tokenizer, probes: list[tuple[str, int]], batch_size: int,
                             progress: Callable[[int], None] | None = None) -> tuple[list[float], int]:
    """P(token | text) for each probe (float32 softmax, as officially), batched with right
    padding; returns the probabilities and how many texts were longer than the context and
    kept only their last tokens."""
    import torch

    from onceupon.student.model import context_length

    device = next(model.parameters()).device
    limit = context_length(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    unique = sorted(set(probes), key=lambda p: len(p[0]))
    encoded = tokenizer([t for t, _ in unique], add_special_tokens=True)["input_ids"]
    cut = sum(len(ids) > limit for ids in encoded)
    encoded = [ids[-limit:] for ids in encoded]
    found: dict[tuple[str, int], float] = {}
    with torch.inference_mode():
        for start in range(0, len(unique), batch_size):
            batch = encoded[start : start + batch_size]
            width = max(len(ids) for ids in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, row in enumerate(batch):
                ids[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            last = logits[torch.arange(len(batch)), mask.sum(1).to(device) - 1].float()
            probs = torch.softmax(last, dim=-1).cpu()
            for r, probe in enumerate(unique[start : start + batch_size]):
                found[probe] = probs[r, probe[1]].item()
            if progress:
                progress(len(batch))
    return [found[p] for p in probes], cut


def surprisals(model, tokenizer, rows: list[dict], batch_size: int = 32,
               progress: Callable[[float], None] | None = None) -> tuple[list[float], list[float], int]:
    """(surprisal, previous word's surprisal or NaN) per row, and the count of cut texts."""
    plans = []
    for row in rows:
        current = _probes(row["item"], row["word"], tokenizer)
        previous = _probes(row["prev_item"], row["prev_word"] or "", tokenizer) if row["prev_item"] is not None else []
        plans.append((current, previous))
    flat = [p for cur, prev in plans for p in cur + prev]
    per_row = len(flat) / max(1, len(rows))
    report = (lambda n: progress(n / per_row)) if progress else None
    probs, cut = next_token_probabilities(model, tokenizer, flat, batch_size, report)
    pred, prev_pred, i = [], [], 0
    for cur, prev in plans:
        pred.append(-math.log(float(np.prod(probs[i : i + len(cur)]))))
        i += len(cur)
        if prev:
            prev_pred.append(-math.log(float(np.prod(probs[i : i + len(prev)]))))
            i += len(prev)
        else:
            prev_pred.append(float("nan"))
    return pred, prev_pred, cut


# --------------------------------------------------------------------------- regression
def _terms(predictors: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Main effects, then every pairwise interaction, in the official formulas' order."""
    pairs = [(a, b) for i, a in enumerate(predictors) for b in predictors[i + 1 :]]
    return [(p,) for p in predictors] + pairs


def r_squared(columns: dict[str, np.ndarray], outcome: str, terms: list[tuple[str, ...]]) -> tuple[float, int]:
    """R^2 of an OLS fit with intercept on the rows where every column used is present."""
    used = sorted({outcome, *(c for t in terms for c in t)})
    keep = np.all([~np.isnan(columns[c]) for c in used], axis=0)
    y = columns[outcome][keep]
    design = np.column_stack([np.ones(int(keep.sum()))] + [np.prod([columns[c][keep] for c in t], axis=0) for t in terms])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    total = y - y.mean()
    return 1.0 - float(residual @ residual) / float(total @ total), int(keep.sum())


def r2_gain(columns: dict[str, np.ndarray], outcome: str, predictors: tuple[str, ...]) -> dict:
    base_terms = _terms(predictors)
    base, n_base = r_squared(columns, outcome, base_terms)
    model, n_model = r_squared(columns, outcome, base_terms + [("pred",)])
    return {"r2_baseline": base, "r2_model": model, "n": n_model, "n_baseline": n_base,
            "gain": 100.0 * (model - base) / (1.0 - base)}


def reading_scores(rows: list[dict], pred: list[float], prev_pred: list[float]) -> tuple[dict, dict]:
    """(summary, breakdown): the official eye-tracking and self-paced reading figures."""
    columns = {key: np.array([r[key] for r in rows], dtype=float) for key in NUMERIC}
    columns["pred"] = np.array(pred, dtype=float)
    columns["prev_pred"] = np.array(prev_pred, dtype=float)
    breakdown = {dv: r2_gain(columns, dv, BASE) for dv in EYE_TRACKING}
    breakdown[SELF_PACED] = r2_gain(columns, SELF_PACED, SPILLOVER)
    summary = {
        "eye_tracking": sum(breakdown[dv]["gain"] for dv in EYE_TRACKING) / len(EYE_TRACKING),
        "self_paced_reading": breakdown[SELF_PACED]["gain"],
        "n": len(rows),
    }
    return summary, breakdown
