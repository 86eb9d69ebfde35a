"""Which stories the annotators see: read, sampled (stratified), shuffled, then kept fixed.

SOURCE is one or more of: a stories JSONL (``continuation`` or ``text``, optional ``prompt``
and ``id``: what ``onceupon rate`` reads), a ratings JSONL (what ``onceupon rate`` writes) or a
run directory (its ``anthology.jsonl`` and its ``evaluation/*/stories.jsonl``).

Stories are grouped by where they come from: the file, and within a file its ``run`` and
``checkpoint`` fields when it has them. Sampling takes from the groups in turn, so every run
and checkpoint is equally represented (a small group gives what it has, the others make up
the rest). The sample is then shuffled: neither the order nor anything on the page tells
which run, checkpoint or teacher score a story has.

Ids: when every story comes from one file a story keeps the id ``onceupon rate`` gives it
(its ``id`` field, else its line number), so ``onceupon rate STORIES --compare human.jsonl``
matches them; from several files the id names the file too (``rl_8K/anthology.jsonl:17``).

The sample file (``OUT`` with the suffix ``.sample.jsonl``) holds the stories in the order
shown: ``id``, ``prompt``, ``continuation``, ``origin``, ``shared`` (shown to every
annotator) and the rating the source gave the story (``valid``, ``scores``; never sent to the
page). It is written once, at the first start, and a restart shows the same stories whatever
the source has become since (an anthology that grew). It is a ratings file too:
``onceupon rate OUT.sample.jsonl --as-rated --compare OUT`` compares the source's teacher with
the annotators.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from onceupon.errors import UserError
from onceupon.files import atomic_write_text
from onceupon.schemas.stories import read_sample_records, read_story_records


@dataclass
class Item:
    id: str
    prompt: str
    continuation: str
    origin: str  # the file (and run/checkpoint) it came from: for stratifying, never shown
    shared: bool = False
    valid: bool | None = None  # the source's own rating, if it had one (never shown)
    scores: dict | None = None


def sample_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".jsonl") + ".sample.jsonl")


def check_source(source: Path) -> None:
    """A UserError when a SOURCE argument does not exist (checked on every start, resumes too)."""
    if not source.exists():
        raise UserError(f"{source} does not exist (give a stories file, a ratings file or a run directory).")


def _story_files(source: Path) -> list[tuple[Path, str]]:
    """(file, origin label) pairs for one SOURCE argument."""
    check_source(source)
    if source.is_file():
        return [(source, str(source))]
    files = [source / "anthology.jsonl"] if (source / "anthology.jsonl").is_file() else []
    files += sorted(source.glob("evaluation/*/stories.jsonl"))
    if not files:
        raise UserError(f"{source} has no anthology.jsonl and no evaluation/*/stories.jsonl to annotate.")
    return [(f, f"{source.resolve().name}/{f.relative_to(source).as_posix()}") for f in files]


def _read_file(path: Path, origin: str, prefix: bool) -> list[Item]:
    items = []
    for rid, story in read_story_records(path):  # the same reading (and errors) as `onceupon rate`
        extra = story.model_extra or {}  # an anthology's or a ratings file's own fields
        group = "/".join(str(extra[k]) for k in ("run", "checkpoint") if extra.get(k) is not None)
        valid, scores = extra.get("valid"), extra.get("scores")
        items.append(
            Item(
                id=f"{origin}:{rid}" if prefix else rid,
                prompt=story.story_prompt,
                continuation=story.story_continuation,
                origin=f"{origin} {group}".strip(),
                valid=valid if isinstance(valid, bool) else None,
                scores=scores if isinstance(scores, dict) else None,
            )
        )
    return items


def collect(sources: list[Path]) -> list[Item]:
    """Every story of the SOURCE arguments (checked before anything is written)."""
    files = [pair for source in sources for pair in _story_files(Path(source))]
    if len({f.resolve() for f, _ in files}) != len(files):
        raise UserError("The same stories file is given twice.")
    prefix = len(files) > 1
    return [item for path, origin in files for item in _read_file(path, origin, prefix)]


def choose(items: list[Item], n: int, seed: int, share: float) -> list[Item]:
    """``n`` stories taken from the origins in turn, shuffled; an evenly spread ``share`` of
    the positions is marked shared (shown to every annotator)."""
    rng = random.Random(seed)
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.origin, []).append(item)
    pools = [rng.sample(g, len(g)) for _, g in sorted(groups.items())]
    chosen: list[Item] = []
    while len(chosen) < n and any(pools):
        for pool in rng.sample(pools, len(pools)):
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    rng.shuffle(chosen)
    for i, item in enumerate(chosen):
        item.shared = math.floor((i + 1) * share + 1e-9) > math.floor(i * share + 1e-9)
    return chosen


def write(path: Path, items: list[Item]) -> None:
    atomic_write_text(path, "".join(json.dumps(asdict(i), ensure_ascii=False) + "\n" for i in items))


def read(path: Path) -> list[Item]:
    """The sample written at the first start (:func:`write`), checked line by line."""
    fields = set(Item.__dataclass_fields__)
    return [Item(**{k: v for k, v in r.model_dump().items() if k in fields}) for r in read_sample_records(path)]
