"""BabyLM 2025 zero-shot tasks: read the official files, score them, aggregate officially.

Every task is a list of :class:`Item` s: a few candidate completions (each after its own
context), the correct one at index 0, and the group (``uid``) the official pipeline averages
over. A scorer gives each candidate a log-probability (see ``scoring.py``); the task then says
which candidate won and aggregates:

============================  =====================================  ======================
task                          files (full_eval / fast_eval)          aggregate
============================  =====================================  ======================
blimp                         blimp_filtered/ or blimp_fast/         mean over UID
blimp_supplement              supplement_filtered/ or _fast/         mean over file (=UID)
ewok                          ewok_filtered/ or ewok_fast/           mean over Domain
entity_tracking               entity_tracking/ or _fast/             mean over numops, then files
wug_adj_nominalization        wug_adj_nominalization/ (or .jsonl)    Spearman(P(first), ratio)
wug_past_tense                wug_past_tense/ (or .jsonl)            Spearman(P(first), ratio)
comps                         comps/ (full_eval only)                mean over subset (file)
storyworld_entity_tracking    generated (held-out storyworld seeds)  as entity_tracking
============================  =====================================  ======================

The official pipeline picks the candidate with ``argmax``, which returns the first of equal
maxima, so a tie between the correct candidate (index 0) and the best wrong one counts as
correct. We report that accuracy (``accuracy``), the accuracy with such ties counted as wrong
(``accuracy_ties_wrong``) and the tie rate, all aggregated the same way, so
``accuracy - accuracy_ties_wrong == 100 * tie_rate`` exactly. A model (or a broken scorer)
that gives every candidate the same score gets 100 officially and 0 with ties counted wrong.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from onceupon.errors import UserError
from onceupon.files import read_jsonl

BABYLM_TASKS = (
    "blimp",
    "blimp_supplement",
    "ewok",
    "entity_tracking",
    "wug_adj_nominalization",
    "wug_past_tense",
    "comps",
)
PROBE_TASK = "storyworld_entity_tracking"
TASKS = BABYLM_TASKS + (PROBE_TASK,)
WUG_TASKS = ("wug_adj_nominalization", "wug_past_tense")

#: Folder names per task, full_eval's first (the official scripts' --data_path values).
TASK_DIRS = {
    "blimp": ("blimp_filtered", "blimp_fast"),
    "blimp_supplement": ("supplement_filtered", "supplement_fast"),
    "ewok": ("ewok_filtered", "ewok_fast"),
    "entity_tracking": ("entity_tracking", "entity_tracking_fast"),
    "wug_adj_nominalization": ("wug_adj_nominalization",),
    "wug_past_tense": ("wug_past_tense",),
    "comps": ("comps",),
}

#: COMPS file stems and the subset (UID) the official reader names them; any other stem is
#: "wugs_dist_in_between", as officially (its reader's last branch).
COMPS_SUBSETS = {"comps_base": "base", "comps_wugs": "wugs", "comps_wugs_dist-before": "wugs_dist_before"}

#: A function scoring (context, completion) requests: ``score_fn(requests, progress,
#: group_sizes)``, where progress(n) reports finished requests and group_sizes gives the
#: number of candidates of each item, in order (see ``Scorer.score``).
ScoreFn = Callable[[Sequence[tuple[str, str]], Callable[[int], None] | None, list[int]], list[float]]


@dataclass
class Item:
    contexts: list[str]
    completions: list[str]
    uid: str  # the official aggregation group
    source: str  # file stem the item came from ("regular", "anaphor_agreement", ...)
    line: int  # 0-based position in that file (details refer to items by it, never by text)
    ratio: float | None = None  # WUG: human preference for the first candidate

    @property
    def requests(self) -> list[tuple[str, str]]:
        return list(zip(self.contexts, self.completions))


@dataclass
class TaskResult:
    """What one task gives: the results.json entry plus details kept beside it."""

    summary: dict
    breakdown: dict = field(default_factory=dict)
    item_scores: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- finding data
def resolve_data_dir(path: str | Path, suite: str = "fast") -> Path:
    """The folder holding the task folders, from an ``evaluation_data`` root, one of its
    ``full_eval``/``fast_eval`` folders, or a folder laid out like them."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UserError(f"The evaluation data directory {root} does not exist.")
    if (root / "evaluation_data").is_dir():
        root = root / "evaluation_data"
    preferred = [f"{suite}_eval"] + [f"{s}_eval" for s in ("fast", "full") if s != suite]
    for name in preferred:
        if (root / name).is_dir():
            return root / name
    return root


def task_files(root: Path, task: str) -> list[Path] | None:
    """The task's JSONL files under ``root``, or None when the task's data is absent."""
    for name in TASK_DIRS[task]:
        folder = root / name
        if folder.is_dir():
            files = sorted(folder.glob("*.jsonl"))
            if files:
                return files
        single = root / f"{name}.jsonl"
        if single.is_file():
            return [single]
    return None


# --------------------------------------------------------------------------- reading
def _field(raw: dict, key: str, path: Path, line: int):
    if key not in raw:
        raise UserError(f"{path}, item {line + 1}: missing field '{key}'.")
    return raw[key]


def read_items(task: str, files: list[Path]) -> list[Item]:
    """Items of ``task`` from its official JSONL files."""
    items: list[Item] = []
    for path in files:
        stem = path.stem
        for line, raw in enumerate(read_jsonl(path)):
            f = lambda key: _field(raw, key, path, line)  # noqa: E731
            if task in ("blimp", "blimp_supplement"):
                # BLiMP rows carry their UID; the supplement's are grouped by file.
                uid = str(raw.get("UID", stem)) if task == "blimp" else stem
                items.append(Item(["", ""], [f("sentence_good"), f("sentence_bad")], uid, stem, line))
            elif task == "ewok":
                context = f("Context1")
                targets = [" " + f("Target1"), " " + f("Target2")]
                items.append(Item([context, context], targets, str(raw.get("Domain", stem)), stem, line))
            elif task == "entity_tracking":
                items.append(_entity_item(raw, stem, line, path))
            elif task == "comps":
                # Both sentences end in the same property phrase; only the phrase is scored,
                # each after its own prefix, joined by one space as officially.
                phrase = str(f("property_phrase"))
                prefixes = [str(f("prefix_acceptable")) + " ", str(f("prefix_unacceptable")) + " "]
                uid = COMPS_SUBSETS.get(stem, "wugs_dist_in_between")
                items.append(Item(prefixes, [phrase, phrase], uid, stem, line))
            elif task in WUG_TASKS:
                sentences = str(f("sentences")).split("\t")
                if len(sentences) < 2:
                    raise UserError(f"{path}, item {line + 1}: 'sentences' needs tab-separated candidates.")
                try:
                    ratio = float(f("ratio"))
                except (TypeError, ValueError):
                    raise UserError(f"{path}, item {line + 1}: 'ratio' is not a number.") from None
                items.append(Item([""] * len(sentences), sentences, stem, stem, line, ratio=ratio))
            else:
                raise ValueError(f"unknown task {task!r}")
    return items


def _entity_item(raw: dict, stem: str, line: int, path: Path | str) -> Item:
    prefix = _field(raw, "input_prefix", Path(path), line)
    options = _field(raw, "options", Path(path), line)
    numops = _field(raw, "numops", Path(path), line)
    if not isinstance(options, list) or len(options) < 2:
        raise UserError(f"{path}, item {line + 1}: 'options' must list at least two answers.")
    return Item([prefix] * len(options), [str(o) for o in options], f"{stem}_{numops}_ops", stem, line)


def probe_items(n_items: int, seed: int) -> list[Item]:
    """The storyworld entity-tracking probe (held-out seeds) as items of one 'file'."""
    from onceupon.corpus.storyworld_probe import entity_tracking_probe

    return [_entity_item(raw, "storyworld", i, "storyworld probe") for i, raw in enumerate(entity_tracking_probe(n_items, seed))]


# --------------------------------------------------------------------------- scoring
def score_items(items: list[Item], score_fn: ScoreFn, progress: Callable[[float], None] | None = None) -> list[list[float]]:
    """Scores of every candidate of every item (one batched scorer call for the whole task)."""
    requests = [r for item in items for r in item.requests]
    per_item = len(requests) / max(1, len(items))
    report = (lambda n: progress(n / per_item)) if progress else None
    flat = score_fn(requests, report, [len(item.completions) for item in items])
    out, i = [], 0
    for item in items:
        out.append(flat[i : i + len(item.completions)])
        i += len(item.completions)
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def aggregate_choice(task: str, items: list[Item], scores: list[list[float]]) -> TaskResult:
    """Official accuracy (ties correct), accuracy with ties wrong, and tie rate."""
    per_uid: dict[str, list[tuple[bool, bool]]] = defaultdict(list)  # uid -> (correct, tie)
    source_of: dict[str, str] = {}
    details = []
    for item, s in zip(items, scores):
        best_wrong = max(s[1:])
        tie = s[0] == best_wrong
        correct = s[0] >= best_wrong  # argmax's first-index rule credits a tie at index 0
        per_uid[item.uid].append((correct, tie))
        source_of[item.uid] = item.source
        details.append({"file": item.source, "line": item.line, "uid": item.uid, "scores": s, "correct": correct, "tie": tie})

    def stats(pairs: list[tuple[bool, bool]]) -> dict:
        n = len(pairs)
        correct = sum(c for c, _ in pairs)
        ties = sum(t for _, t in pairs)
        return {
            "accuracy": 100.0 * correct / n,
            "accuracy_ties_wrong": 100.0 * (correct - ties) / n,
            "tie_rate": ties / n,
            "n": n,
        }

    breakdown = {uid: stats(pairs) for uid, pairs in sorted(per_uid.items())}
    keys = ("accuracy", "accuracy_ties_wrong", "tie_rate")
    if task in ("entity_tracking", PROBE_TASK):
        # Official: mean over the numops groups of a file, then over files.
        files: dict[str, list[dict]] = defaultdict(list)
        for uid, st in breakdown.items():
            files[source_of[uid]].append(st)
        per_file = {name: {k: _mean(st[k] for st in groups) for k in keys} for name, groups in sorted(files.items())}
        summary = {k: _mean(pf[k] for pf in per_file.values()) for k in keys}
        breakdown = {"files": per_file, "groups": breakdown}
    else:
        summary = {k: _mean(st[k] for st in breakdown.values()) for k in keys}
    summary["n"] = len(items)
    return TaskResult(summary, breakdown, details)


def aggregate_wug(items: list[Item], scores: list[list[float]]) -> TaskResult:
    """Spearman correlation of the model's P(first candidate) (softmax over candidates) with
    the human ``ratio``, as the official pipeline computes it."""
    from scipy.stats import spearmanr

    probs = []
    details = []
    for item, s in zip(items, scores):
        top = max(s)
        exps = [math.exp(v - top) for v in s]
        p = exps[0] / sum(exps)
        probs.append(p)
        details.append({"file": item.source, "line": item.line, "scores": s, "p_first": p})
    ratios = [item.ratio for item in items]
    rho = float(spearmanr(probs, ratios)[0]) if len(items) > 1 else float("nan")
    # JSON has no NaN: an undefined correlation (constant input) is reported as null.
    summary = {"spearman": None if math.isnan(rho) else rho, "n": len(items)}
    return TaskResult(summary, {}, details)


def evaluate_items(task: str, items: list[Item], score_fn: ScoreFn, progress: Callable[[float], None] | None = None) -> TaskResult:
    """Score and aggregate one task's items."""
    if not items:
        return TaskResult({"absent": True, "reason": "no items"})
    scores = score_items(items, score_fn, progress)
    if task in WUG_TASKS:
        return aggregate_wug(items, scores)
    return aggregate_choice(task, items, scores)
