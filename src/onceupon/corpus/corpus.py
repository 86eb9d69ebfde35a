"""Build a run's corpus: read the source, keep a seeded fraction and a word budget, write
``RUN/corpus/`` atomically, report words per source.

Layout of ``RUN/corpus/`` (later stages and other tools read it; keep it stable):

- ``documents.jsonl``: one ``{"text": str, "source": str}`` per line, in corpus order;
- ``stats.json``: ``{"words", "documents", "sources": {name: {"words", "documents"}}}``;
- ``config.json``: the ``corpus`` config section it was built from, so a later stage can tell
  whether an existing corpus is the one its config asks for.

The directory is written under a temporary name and renamed into place only when complete, so
a failed or interrupted build never leaves something that looks like a corpus.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from onceupon import preflight
from onceupon.config import CorpusConfig, ExperimentConfig, save_config
from onceupon.errors import UserError
from onceupon.files import append_jsonl, atomic_write_json, fsync_dir, read_jsonl, replace_dir
from onceupon.tracking import print_table, progress_bar
from onceupon.words import count_words

CORPUS_DIR = "corpus"
DOCUMENTS = "documents.jsonl"
STATS = "stats.json"
CONFIG = "config.json"


def select(word_counts: list[int], fraction: float, word_budget: int | None, seed: int) -> list[int]:
    """Indices of the documents to keep, in corpus order.

    Documents are visited in one seeded random order. The first ``round(fraction * n)`` of
    that order form the fraction (the paper kept 90 %); the budget then keeps them, in the same
    order, until the next whole document would pass ``word_budget``. With ``fraction=1`` and
    no budget everything is kept. The same inputs always give the same indices.
    """
    n = len(word_counts)
    if fraction >= 1 and word_budget is None:
        return list(range(n))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    keep_n = n if fraction >= 1 else max(1, round(fraction * n)) if n else 0
    chosen = order[:keep_n]
    if word_budget is not None:
        total, cut = 0, len(chosen)
        for position, index in enumerate(chosen):
            if total + word_counts[index] > word_budget:
                cut = position
                break
            total += word_counts[index]
        chosen = chosen[:cut]
    return sorted(chosen)


def corpus_stats(documents: list[tuple[str, str]], counts: list[int]) -> dict:
    sources: dict[str, dict[str, int]] = {}
    for (_, source), words in zip(documents, counts):
        entry = sources.setdefault(source, {"words": 0, "documents": 0})
        entry["words"] += words
        entry["documents"] += 1
    return {"words": sum(counts), "documents": len(documents), "sources": sources}


def build_corpus(cfg: CorpusConfig, corpus_dir: str | Path) -> dict:
    """Read, select and write the corpus into ``corpus_dir`` (replacing it); returns the stats."""
    from onceupon.corpus.readers import iter_documents

    corpus_dir = Path(corpus_dir)
    documents: list[tuple[str, str]] = []
    counts: list[int] = []
    expected = int(cfg.word_budget / cfg.fraction) if cfg.word_budget is not None else None
    with progress_bar("words") as bar:
        task = bar.add_task(f"reading {cfg.source}", total=expected)
        for text, source in iter_documents(cfg):
            documents.append((text, source))
            counts.append(count_words(text))
            bar.advance(task, counts[-1])
    if not documents:
        raise UserError(f"The corpus is empty: {_describe_source(cfg)} yielded no text.")
    keep = select(counts, cfg.fraction, cfg.word_budget, cfg.seed)
    if not keep:
        smallest = min(counts)
        raise UserError(
            f"The word budget of {cfg.word_budget} words is smaller than every document (the shortest has {smallest} words)."
        )
    documents = [documents[i] for i in keep]
    counts = [counts[i] for i in keep]
    stats = corpus_stats(documents, counts)

    corpus_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=corpus_dir.parent, prefix=f".{corpus_dir.name}.", suffix=".tmp"))
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the corpus is ordinary data
        append_jsonl(tmp / DOCUMENTS, ({"text": text, "source": source} for text, source in documents))
        atomic_write_json(tmp / STATS, stats)
        atomic_write_json(tmp / CONFIG, cfg.model_dump(mode="json"))
        fsync_dir(tmp)
        replace_dir(tmp, corpus_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats


def _describe_source(cfg: CorpusConfig) -> str:
    if cfg.source == "files":
        return "corpus.paths " + ", ".join(cfg.paths)
    if cfg.source == "hub":
        return f"dataset {cfg.dataset} (split {cfg.split}, column {cfg.text_field})"
    return "storyworld"


def _first_difference(saved: dict, wanted: dict, prefix: str = "corpus") -> str | None:
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}.{key}")
            if found:
                return found
        elif a != b:
            return f"{prefix}.{key} was {a!r}, the config says {b!r}"
    return None


def ensure_corpus(cfg: ExperimentConfig, run_dir: str | Path) -> Path:
    """``RUN/corpus`` for this config: built if absent, reused if present.

    An existing corpus built from a different ``corpus`` section is an error rather than
    silently reused or overwritten (checkpoints of the run were trained on it).
    """
    corpus_dir = Path(run_dir) / CORPUS_DIR
    if (corpus_dir / STATS).is_file() and (corpus_dir / DOCUMENTS).is_file():
        config_path = corpus_dir / CONFIG
        try:
            saved = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"{corpus_dir} exists but has no readable {CONFIG}; delete it to rebuild the corpus.") from None
        try:  # fill in fields added since the corpus was built, with their defaults
            saved = CorpusConfig.model_validate(saved).model_dump(mode="json")
        except ValueError:
            pass  # a field since removed or changed: the raw comparison below names it
        difference = _first_difference(saved, cfg.corpus.model_dump(mode="json"))
        if difference:
            raise UserError(
                f"{corpus_dir} was built from a different corpus config ({difference}); "
                "use a new run directory or delete that corpus."
            )
        return corpus_dir
    build_corpus(cfg.corpus, corpus_dir)
    return corpus_dir


def load_documents(corpus_dir: str | Path) -> list[str]:
    """The texts of ``corpus_dir/documents.jsonl``, in order."""
    path = Path(corpus_dir) / DOCUMENTS
    if not path.is_file():
        raise UserError(f"{Path(corpus_dir)} holds no corpus ({DOCUMENTS} is missing); run `onceupon corpus` first.")
    texts = []
    for lineno, record in enumerate(read_jsonl(path), 1):
        text = record.get("text")
        if not isinstance(text, str):
            raise UserError(f"{path}, record {lineno}: has no 'text' string.")
        texts.append(text)
    return texts


def load_stats(corpus_dir: str | Path) -> dict:
    path = Path(corpus_dir) / STATS
    if not path.is_file():
        raise UserError(f"{Path(corpus_dir)} holds no corpus ({STATS} is missing); run `onceupon corpus` first.")
    return json.loads(path.read_text(encoding="utf-8"))


def stats_table(stats: dict, title: str):
    """A rich table: words and documents per source, and the total."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("source")
    table.add_column("documents", justify="right")
    table.add_column("words", justify="right")
    for name, entry in sorted(stats["sources"].items()):
        table.add_row(name, f"{entry['documents']:,}", f"{entry['words']:,}")
    table.add_row("[bold]total", f"[bold]{stats['documents']:,}", f"[bold]{stats['words']:,}")
    return table


def run(cfg: ExperimentConfig, out: str | Path) -> Path:
    """``onceupon corpus``: build (or reuse) ``OUT/corpus``, save the config, print the table."""
    from onceupon.lifecycle.lock import run_lock

    out = Path(out)
    preflight.output_dir(out)
    with run_lock(out):  # a pretraining run in OUT may be building or reading this corpus
        existed = (out / CORPUS_DIR / STATS).is_file()
        corpus_dir = ensure_corpus(cfg, out)
        if not (out / "config.yaml").exists():
            # An existing run's config.yaml (e.g. a pretraining run's) is its record: keep it.
            save_config(cfg, out)
        stats = load_stats(corpus_dir)
    verb = "reused" if existed else "built"
    print_table(stats_table(stats, f"corpus {verb}: {corpus_dir}"))
    return corpus_dir
