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
lower as the words are learned); over a run's checkpoints the per-word curves are what the
official AoA figure is made from, and the submission writes them in the official
``AoA_word/surprisal.json`` layout (see submission.py).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from onceupon.errors import UserError
from onceupon.files import json_object, read_text_file

AOA_FILE = Path("aoa") / "cdi_childes.json"


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


# --------------------------------------------------------------------------- curves
def _sigmoid(x, low, high, middle, slope):
    import numpy as np

    return low + (high - low) / (1.0 + np.exp(slope * (x - middle)))


def acquisition(words_seen: list[int], curve: list[float], chance: float) -> float | None:
    """Words seen when a word is acquired, after Chang & Bergen (2022): a sigmoid fitted to
    its mean surprisal over log10(words seen); the word is acquired where the fitted curve
    passes halfway between chance (``chance``: the surprisal of a uniform guess, ln of the
    vocabulary size) and the lowest surprisal the fit reaches. None when the curve cannot be
    fitted or never comes down to that point within the checkpoints."""
    import numpy as np
    from scipy.optimize import curve_fit

    pairs = [(math.log10(w), s) for w, s in zip(words_seen, curve) if w > 0 and s is not None and not math.isnan(s)]
    if len(pairs) < 4:
        return None
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    start = [y.min(), y.max(), float(np.median(x)), 2.0]
    try:
        with warnings.catch_warnings():  # a flat curve has no covariance estimate; the fit is still usable
            warnings.simplefilter("ignore")
            params, _ = curve_fit(_sigmoid, x, y, p0=start, maxfev=20_000)
    except (RuntimeError, ValueError):
        return None
    fitted = _sigmoid(np.linspace(x.min(), x.max(), 1001), *params)
    target = (chance + fitted.min()) / 2.0
    below = np.nonzero(fitted <= target)[0]
    if below.size == 0:
        return None
    grid = np.linspace(x.min(), x.max(), 1001)
    return float(10 ** grid[below[0]])


def curves(results: list[dict]) -> dict[str, dict[str, float]]:
    """Mean surprisal of each word per checkpoint, from surprisal.json's results."""
    sums: dict[str, dict[str, list[float]]] = {}
    for r in results:
        s = r.get("surprisal")
        if s is None or (isinstance(s, float) and math.isnan(s)):
            continue
        sums.setdefault(r["target_word"], {}).setdefault(r["step"], []).append(s)
    return {w: {step: sum(v) / len(v) for step, v in by.items()} for w, by in sums.items()}


def ages(results: list[dict], words_seen: dict[str, int], chance: float) -> dict[str, float | None]:
    """Each word's acquisition point (words seen) over the named checkpoints."""
    order = sorted(words_seen, key=words_seen.get)
    out = {}
    for word, by_step in curves(results).items():
        out[word] = acquisition([words_seen[s] for s in order if s in by_step], [by_step[s] for s in order if s in by_step], chance)
    return out
