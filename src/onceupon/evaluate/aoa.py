"""BabyLM 2025 age of acquisition (AoA): the surprisal of children's first words, per checkpoint.

The data (``full_eval/aoa/cdi_childes.json``) maps each word of the MacArthur-Bates
Communicative Development Inventory to contexts it follows in a text corpus:
``{"dog": [{"context": "I saw a ", ...}, ...], ...}``. As in the official pipeline, words of
one character are left out, and a word's surprisal in a context is ``-sum ln P`` of the
word's tokens after ``context.strip() + " "`` (context and word tokenized together, a token
counts to the word when its span ends inside it, the first token conditioned on the
begin-of-sequence token; exactly the zero-shot scorer's rule). Text longer than the model
can read makes the official code fail on that context, which it records as NaN; onceupon
records NaN too (never a cut text's score).

Per checkpoint, the task reports the mean surprisal over all contexts (``mean_surprisal``,
lower as the words are learned). Over a run's checkpoints, the submission writes them in the
official ``AoA_word/surprisal.json`` layout (see submission.py), and :func:`curve_fitness` turns
them, with the children's production ages of ``full_eval/aoa/cdi_human.csv``, into the official
AoA score (below): each word's model and child AoA and their correlation.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from onceupon.errors import UserError
from onceupon.files import json_object, read_text_file

from .reading import NA_TEXT

AOA_FILE = Path("aoa") / "cdi_childes.json"
#: Children's word production by age (MacArthur-Bates CDI), which the official score compares with.
CDI_FILE = Path("aoa") / "cdi_human.csv"


def aoa_file(root: Path) -> Path | None:
    path = Path(root) / AOA_FILE
    return path if path.is_file() else None


def read_words(path: Path, min_context: int = 0) -> list[tuple[str, list[str]]]:
    """(word, contexts) in the file's order, as the official reader keeps them."""
    # json_object: not JSON, not an object, or beyond the bounds every file keeps is one sentence
    data = json_object(read_text_file(path), str(path), "; it must map each word to its contexts")
    words = []
    for word, entries in data.items():
        if len(word) <= 1 or not isinstance(entries, list) or len(entries) < min_context:
            continue
        contexts = []
        for k, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("context"), str):
                raise UserError(f"{path}: context {k + 1} of '{word}' has no 'context' text.")
            contexts.append(entry["context"])
        words.append((word, contexts))
    return words


def requests(words: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    return [(context.strip() + " ", word.strip()) for word, contexts in words for context in contexts]


def surprisals(scorer, tokenizer, words: list[tuple[str, list[str]]], progress=None) -> list[float]:
    """Surprisal of every (word, context), NaN where the text is longer than the model reads."""
    reqs = requests(words)
    limit = scorer.max_length + 1
    lengths = [len(ids) for ids in tokenizer([c + w for c, w in reqs], add_special_tokens=True)["input_ids"]]
    fits = [i for i, n in enumerate(lengths) if n <= limit]
    scores = scorer.score([reqs[i] for i in fits], progress)
    out = [math.nan] * len(reqs)
    for i, s in zip(fits, scores):
        out[i] = -s
    return out


def summary(values: list[float]) -> dict:
    done = [v for v in values if not math.isnan(v)]
    return {"mean_surprisal": sum(done) / len(done) if done else None, "n": len(values), "failed": len(values) - len(done)}


# --------------------------------------------------------------------------- the official AoA score
# What follows is the official pipeline's AoAEvaluator (evaluation_pipeline/utils.py, used by
# calculate_results_from_pred.py), step for step: the same sigmoid, initial guesses, bounds,
# maxfev, None rules and grouping, so every word's AoA and the score are the leaderboard's.
# It is the one definition of a word's age of acquisition in onceupon.

#: The children's ages (months) the CDI file may give, one column each.
CDI_AGES = tuple(range(16, 31))
#: The official chance level: log2 of an assumed 300,000-word vocabulary, i.e. in *bits*, while
#: the surprisals it is compared with are in *nats* (-ln P, AoA_word/evaluation_functions.py).
#: Odd, but it is what the leaderboard computes, so onceupon keeps it.
CHANCE = math.log2(300_000)
_STEP = re.compile(r"(\d+(?:\.\d+)?)\s*([KMB]?)", re.IGNORECASE)
_UNITS = {"K": 1_000, "M": 1_000_000, "B": 1_000_000_000}


@dataclass(frozen=True)
class Cdi:
    """Children's production of each CDI word: ``proportions[i][k]`` of the children aged
    ``ages[k]`` months say ``words[i]`` (NaN where the file gives none)."""

    words: list[str | None]  # None: a cell pandas reads as missing; it matches no word, as officially
    ages: list[int]
    proportions: list[list[float]]

    def row(self, word: str) -> int | None:
        """The first row of the word, as the official lookup takes."""
        for i, w in enumerate(self.words):
            if w == word:
                return i
        return None


def cdi_file(root: Path) -> Path | None:
    path = Path(root) / CDI_FILE
    return path if path.is_file() else None


def read_cdi(path: Path) -> Cdi:
    """cdi_human.csv as the official code reads it with pandas (first of a repeated column,
    pandas' missing-value texts, blank lines skipped); anything that is not a share of
    children (a number in 0..1 or empty) is one sentence naming the row and column."""
    hint = "a 'word' column and one column per age 16 ... 30 (months) holding the share of children producing the word"
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            table = [r for r in csv.reader(f) if r]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not valid UTF-8 text.") from None
    except csv.Error as e:
        raise UserError(f"{path} is not a valid CSV file ({e}).") from None
    if not table:
        raise UserError(f"{path} is empty; it must hold {hint}.")
    header = table[0]
    column: dict[str, int] = {}
    for k, name in enumerate(header):
        column.setdefault(name, k)
    ages = [a for a in CDI_AGES if str(a) in column]
    if "word" not in column or not ages:
        lacks = "a 'word' column" if "word" not in column else "an age column (16 ... 30)"
        raise UserError(f"{path} lacks {lacks}; it must hold {hint}.")
    if len(table) == 1:
        raise UserError(f"{path} holds no words.")
    words, proportions = [], []
    for line, cells in enumerate(table[1:], 2):
        if len(cells) > len(header):
            raise UserError(f"{path}, row {line}: {len(cells)} cells for the header's {len(header)} columns.")
        cells = cells + [""] * (len(header) - len(cells))  # missing trailing cells are missing values
        word = cells[column["word"]]
        words.append(None if word in NA_TEXT else word)
        values = []
        for age in ages:
            text = cells[column[str(age)]].strip()
            try:
                if "_" in text:  # Python's float() reads "1_0" as 10; pandas does not
                    raise ValueError(text)
                value = math.nan if text in NA_TEXT else float(text)
            except ValueError:
                raise UserError(f"{path}, row {line}: the {age}-month cell is not a number ({text[:40]!r}).") from None
            if not (math.isnan(value) or 0.0 <= value <= 1.0):
                raise UserError(f"{path}, row {line}: the {age}-month cell is {text}, not a share of children (0 ... 1).")
            values.append(value)
        proportions.append(values)
    return Cdi(words, ages, proportions)


def _sigmoid(x, a, b, c, d):
    import numpy as np

    return a / (1 + np.exp(-b * (x - c))) + d


def _quiet():
    """Warnings off and numpy's floating errors silent during a fit: the official code lets them
    print (a curve that cannot be fitted is common) and they change no result."""
    import contextlib

    import numpy as np

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(np.errstate(all="ignore"))
    return stack


def child_aoa(ages: list[int], proportions: list[float], threshold: float = 0.5) -> float | None:
    """Age (months) at which half the children produce the word: a bounded sigmoid fitted to
    the proportions over the ages, as ``AoAEvaluator.compute_child_aoa``; None when fewer than
    3 ages have data, the fit fails or its 50 % point falls outside the ages."""
    import numpy as np
    from scipy.optimize import curve_fit

    proportions = np.array(proportions, dtype=float)
    valid = ~np.isnan(proportions)
    if not np.any(valid):
        return None
    x, y = np.array(ages)[valid], proportions[valid]
    if len(y) < 3:
        return None
    with _quiet():
        try:  # the official code returns None on any exception of the fit or what follows it
            p0 = [1.0, 0.1, np.mean(x), 0.0]
            bounds = ([0, 0, x[0], -0.5], [2.0, 1.0, x[-1], 0.5])
            (a, b, c, d), _ = curve_fit(_sigmoid, x, y, p0=p0, bounds=bounds, maxfev=1000)
            if b <= 0 or a <= 0:
                return None
            if threshold <= d or threshold >= a + d:
                return None
            age = c - np.log((a / (threshold - d)) - 1) / b
            if age < x[0] or age > x[-1]:
                return None
            return float(age)
        except Exception:
            return None


def model_aoa(surprisals: list[float], steps: list[float], threshold: float = 0.5) -> float | None:
    """The model's AoA of a word, as ``AoAEvaluator.compute_model_aoa``: a sigmoid fitted to
    minus every (checkpoint, context) surprisal over log10(1 + step), one point per context (not
    a mean per checkpoint); the word is acquired where the fit crosses the point ``threshold``
    of the way from chance (:data:`CHANCE`) down to the lowest surprisal seen. Returns that
    log10(1 + step); None with fewer than 3 points (NaN ones counted), no valid one, a failed
    fit, a crossing the fit never makes, or one before the first or after the last step given
    (in the order given)."""
    import numpy as np
    from scipy.optimize import curve_fit

    if len(surprisals) != len(steps):
        raise ValueError("surprisals and steps must have the same length")
    if len(surprisals) < 3:
        return None
    values, steps = np.array(surprisals), np.array(steps)
    valid = ~np.isnan(values)
    if not np.any(valid):
        return None
    x_steps, y = steps[valid], values[valid]
    target = CHANCE - threshold * (CHANCE - np.min(y))
    with _quiet():
        try:  # the official code returns None on any exception of the fit or what follows it
            neg = -y
            x = np.log10(x_steps + 1)
            p0 = [np.max(neg) - np.min(neg), 1.0, np.mean(x), np.min(neg)]
            (a, b, c, d), _ = curve_fit(_sigmoid, x, neg, p0=p0, maxfev=1000)
            level = -target
            if b <= 0 or a <= 0:
                return None
            if level <= d or level >= a + d:
                return None
            log_step = c - np.log((a / (level - d)) - 1) / b
            step = 10**log_step - 1
            if step < x_steps[0] or step > x_steps[-1]:
                return None
            return float(log_step)
        except Exception:
            return None


def step_number(name) -> float | None:
    """The step a revision name stands for, as ``AoAEvaluator.extract_step_number``: the first
    number in it times its K/M/B unit (chck_10M -> 1e7); None without a number."""
    if isinstance(name, (int, float)):
        return float(name)
    match = _STEP.search(str(name))
    if not match:
        return None
    return float(match.group(1)) * _UNITS.get(match.group(2).upper(), 1)


def curve_fitness(results: list[dict], cdi: Cdi) -> dict:
    """The official AoA score from surprisal.json's results: the Pearson correlation of the
    words' model AoAs with their child AoAs, over the words where both exist (0.0 when fewer
    than 3, as officially), plus each word's two ages (``model``: log10(1 + step), ``child``:
    months; null when not defined, ``child`` null too for a word not in the CDI file)."""
    from scipy.stats import pearsonr

    if not results:  # the official code stops with "No results found in model data"
        return {"curve_fitness": None, "n_words": 0, "words": {}, "reason": "no AoA surprisals"}
    by_word: dict[str, tuple[list[float], list[float]]] = {}
    for r in results:
        steps, values = by_word.setdefault(r["target_word"], ([], []))
        try:  # a result whose surprisal is not a number is skipped, as officially
            step, value = step_number(r["step"]), float(r["surprisal"])
        except (TypeError, ValueError):
            continue
        if step is not None:
            steps.append(step)
            values.append(value)
    words: dict[str, dict] = {}
    model, child = [], []
    for word, (steps, values) in by_word.items():
        row = cdi.row(word)
        c = None if row is None else child_aoa(cdi.ages, cdi.proportions[row])
        m = model_aoa(values, steps)
        words[word] = {"model": m, "child": c, "in_cdi": row is not None}
        if m is not None and c is not None:
            model.append(m)
            child.append(c)
    if len(model) < 3:
        return {"curve_fitness": 0.0, "n_words": len(model), "words": words}
    with _quiet():  # equal ages on one side: NaN (pearsonr warns), as officially
        r, p = pearsonr(model, child)
    return {"curve_fitness": float(r), "p_value": float(p), "n_words": len(model), "words": words}
