"""Pretraining's data preparation, apart from its loop: the corpus, the tokenizer and the
packed data of a run, each built once and reused on resume.

1. :func:`prepare_run` (the global main process, before torch is imported): Hub access, the
   corpus (``RUN/corpus``, built by :mod:`onceupon.corpus.corpus` if absent) and the word
   target it allows; then the config is saved;
2. :func:`prepare_data` (every process): the tokenizer (``RUN/tokenizer``), trained on that
   corpus once, and the packed data (``RUN/packed``): documents as ``<s> text </s>``,
   concatenated, cut into sequences of the context length, each with its exact word count
   (:mod:`.packing`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from onceupon.config import ExperimentConfig, save_config
from onceupon.files import replace_dir
from onceupon.student.model import resolve_shape
from onceupon.tracking import progress_bar

TOKENIZER_DIR = "tokenizer"
PACKED_DIR = "packed"


def prepare_run(cfg: ExperimentConfig, run_dir: Path, resume: bool) -> None:
    """The global main process's checks that touch the outside world, before torch is even
    imported: Hub access, the corpus (built if absent) and the word target it allows. A bad
    corpus or an unreachable Hub ends the command within a second; the config is saved only
    when all of them passed, so a failed new run can be rerun with corrected settings."""
    from onceupon.corpus.corpus import ensure_corpus, load_stats
    from onceupon.student.plan import word_target

    p = cfg.pretrain
    if p.push_to_hub:
        from onceupon.student.hub import check_access, push_pending

        check_access(p.push_to_hub, p.hub_private)
        if resume:
            push_pending(run_dir, p.push_to_hub)
    corpus_dir = ensure_corpus(cfg, run_dir)
    word_target(load_stats(corpus_dir)["words"], p.epochs, p.max_words)
    if not resume:
        save_config(cfg, run_dir)


def ensure_tokenizer(cfg: ExperimentConfig, run_dir: Path, documents_fn, context_length: int, show_progress: bool):
    """``RUN/tokenizer``: trained on the corpus the first time, loaded afterwards. Training on
    a large corpus takes minutes: progress counts the documents the trainer has read, then
    says it is learning the merges."""
    from onceupon.student.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    directory = run_dir / TOKENIZER_DIR
    if (directory / "tokenizer.json").is_file():
        return load_tokenizer(directory)
    docs = documents_fn()
    with progress_bar("documents", disable=None if show_progress else True) as bar:
        task = bar.add_task("tokenizer", total=len(docs))

        def read():
            for i, text in enumerate(docs, 1):
                yield text
                if i % 1000 == 0:  # not per document: millions of one-line documents
                    bar.update(task, completed=i)
            bar.update(task, completed=len(docs), status="learning the merges")

        tokenizer = train_tokenizer(read(), cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency)
        bar.update(task, status="")
    tokenizer.model_max_length = context_length  # lets evaluation truncate to what the model knows
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tokenizer(tokenizer, tmp)
    replace_dir(tmp, directory)
    return load_tokenizer(directory)


def ensure_packed(run_dir: Path, tokenizer, documents_fn, context_length: int, show_progress: bool):
    from onceupon.student.packing import build_packed, load_packed, save_packed

    directory = run_dir / PACKED_DIR
    packed = load_packed(directory)
    if packed is not None and packed.context_length == context_length:
        return packed
    save_packed(build_packed(tokenizer, documents_fn(), context_length, show_progress=show_progress), directory)
    return load_packed(directory)


def prepare_data(cfg: ExperimentConfig, run_dir: Path, accelerator):
    """Tokenizer and packed data: the main process builds them, the others find them on disk."""
    from onceupon.corpus.corpus import ensure_corpus, load_documents

    context = resolve_shape(cfg.student).context_length
    with accelerator.main_process_first():
        corpus_dir = ensure_corpus(cfg, run_dir)  # the main process built it already: a quick check
        cache: dict[str, list[str]] = {}

        def documents() -> list[str]:
            if "docs" not in cache:
                cache["docs"] = load_documents(corpus_dir)
            return cache["docs"]

        tokenizer = ensure_tokenizer(cfg, run_dir, documents, context, show_progress=accelerator.is_main_process)
        packed = ensure_packed(run_dir, tokenizer, documents, context, show_progress=accelerator.is_main_process)
    return tokenizer, packed
