"""Readers: turn a corpus source into documents, each a ``(text, source)`` pair.

Three sources, chosen by ``corpus.source``:

- ``files``: plain-text files or directories (searched recursively for ``corpus.extensions``).
  One document per line, or blank-line separated paragraphs; ``format: auto`` decides per
  file (paragraphs when some blank-line separated block spans several lines).
- ``hub``: a Hugging Face dataset by name and split, loaded with ``datasets``. It also takes
  a local ``save_to_disk`` directory, a local directory of data files, or one data file
  (.jsonl/.json/.csv/.parquet/.txt), so it works offline.
- ``storyworld``: the built-in generator (:mod:`onceupon.corpus.storyworld`).

Every mistake the user can fix becomes a :class:`UserError` with one sentence.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

from onceupon.config import CorpusConfig
from onceupon.errors import UserError
from onceupon.files import read_text_file

Document = tuple[str, str]  # (text, source name)

_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


# --------------------------------------------------------------------------- plain text files
def list_text_files(paths: list[str], extensions: list[str]) -> list[tuple[Path, str]]:
    """Every file to read, with its source name: a file given directly is named by its file
    name, a file found in a directory by its path relative to that directory."""
    if not paths:
        raise UserError("corpus.source is 'files' but corpus.paths is empty; give files or directories to read.")
    found: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            found.append((path, path.name))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(tuple(extensions)))
            if not files:
                raise UserError(f"Directory {path} holds no files ending in {', '.join(extensions)}.")
            found.extend((p, p.relative_to(path).as_posix()) for p in files)
        else:
            raise UserError(f"Corpus path {path} does not exist.")
    return found


def guess_format(text: str) -> str:
    """``paragraphs`` when blank lines separate multi-line blocks of modest size, else ``lines``.

    Wrapped prose (a book) has a blank line every few lines; a one-utterance-per-line file
    (CHILDES, subtitles) has none or only a stray few, so its blocks are long. A block of more
    than 20 lines on average means the blank lines are not paragraph breaks. Files where every
    block is one line read the same either way. ``format: lines|paragraphs`` overrides this.
    """
    blocks = [b for b in _BLANK_LINE.split(text.strip()) if b.strip()]
    line_counts = [len([ln for ln in b.split("\n") if ln.strip()]) for b in blocks]
    if len(blocks) < 2 or max(line_counts) < 2:
        return "lines"
    return "paragraphs" if sum(line_counts) / len(blocks) <= 20 else "lines"


def split_documents(text: str, fmt: str) -> list[str]:
    """Documents of a text in ``lines`` or ``paragraphs`` format; blank documents dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if fmt == "auto":
        fmt = guess_format(text)
    pieces = _BLANK_LINE.split(text) if fmt == "paragraphs" else text.split("\n")
    return [p.strip() for p in pieces if p.strip()]


def read_files(cfg: CorpusConfig) -> Iterator[Document]:
    for path, source in list_text_files(cfg.paths, cfg.extensions):
        for doc in split_documents(read_text_file(path), cfg.format):
            yield doc, source


# --------------------------------------------------------------------------- datasets
_DATA_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def load_hf_dataset(cfg: CorpusConfig):
    """Load ``cfg.dataset`` / ``cfg.split`` as a ``datasets.Dataset`` (local first)."""
    import datasets

    name, split = cfg.dataset, cfg.split
    if not name:
        raise UserError("corpus.source is 'hub' but corpus.dataset is not set; give a dataset name or path.")
    local = Path(name).expanduser()
    looks_local = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1  # Hub ids are owner/name
    if looks_local and not local.exists():
        raise UserError(f"Dataset path {local} does not exist.")
    try:
        if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
            loaded = datasets.load_from_disk(str(local))  # a save_to_disk directory
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise UserError(f"Dataset {name} has no split '{split}'; its splits are {', '.join(loaded)}.")
                loaded = loaded[split]
            return loaded
        if local.is_file():
            builder = _DATA_FILE_BUILDERS.get(local.suffix.lower())
            if builder is None:
                raise UserError(f"Dataset file {local} must end in one of {', '.join(_DATA_FILE_BUILDERS)}.")
            return datasets.load_dataset(builder, data_files={split: str(local)}, split=split)
        return datasets.load_dataset(str(local) if local.is_dir() else name, cfg.dataset_config, split=split)
    except UserError:
        raise
    except ValueError as e:
        if "split" in str(e).lower():
            raise UserError(f"Dataset {name} has no split '{split}'.") from None
        raise UserError(f"Dataset {name} could not be loaded ({_first_line(e)}).") from None
    except Exception as e:
        # Missing locally and not downloadable: datasets raises ConnectionError when offline,
        # FileNotFoundError or its own DatasetNotFoundError / DataFilesNotFoundError otherwise.
        not_found = isinstance(e, (FileNotFoundError, ConnectionError)) or type(e).__name__ in {
            "DatasetNotFoundError", "DataFilesNotFoundError", "EmptyDatasetError", "OfflineModeIsEnabled"}
        if not not_found:
            raise
        if datasets.config.HF_HUB_OFFLINE:
            raise UserError(
                f"Dataset {name} is neither a local path nor in the Hugging Face cache, and downloads are off "
                "(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE)."
            ) from None
        raise UserError(f"Dataset {name} was not found locally, in the cache or on the Hub ({_first_line(e)}).") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__).rstrip(".")[:200]


def read_dataset(cfg: CorpusConfig) -> Iterator[Document]:
    dataset = load_hf_dataset(cfg)
    columns = list(dataset.column_names)
    if cfg.text_field not in columns:
        raise UserError(f"Dataset {cfg.dataset} has no column '{cfg.text_field}'; its columns are {', '.join(columns)} (set corpus.text_field).")
    source = Path(cfg.dataset).name if Path(cfg.dataset).expanduser().exists() else cfg.dataset
    for text in dataset[cfg.text_field]:
        if isinstance(text, str) and text.strip():
            yield text.strip(), source


# --------------------------------------------------------------------------- storyworld
def read_storyworld(cfg: CorpusConfig, words_needed: int | None) -> Iterator[Document]:
    """``cfg.storyworld.stories`` stories, or, when that is unset, enough stories for
    ``words_needed`` words (2,000 stories when no budget is given)."""
    from onceupon.corpus import storyworld

    sw = cfg.storyworld
    # One story at a time, so that the corpus's progress line advances while they are told.
    if sw.stories is None and words_needed is not None:
        stories = storyworld.iter_words(words_needed, cfg.seed, sw.min_events, sw.max_events)
    else:
        every = storyworld.iter_stories(cfg.seed, sw.min_events, sw.max_events)
        stories = itertools.islice(every, sw.stories if sw.stories is not None else 2000)
    for story in stories:
        yield story.text, "storyworld"


def iter_documents(cfg: CorpusConfig) -> Iterator[Document]:
    """All documents of the configured source, before fraction and budget are applied."""
    if cfg.source == "files":
        return read_files(cfg)
    if cfg.source == "hub":
        return read_dataset(cfg)
    needed = None
    if cfg.word_budget is not None:
        # Generate enough that the fraction still leaves the budget.
        needed = int(cfg.word_budget / cfg.fraction) + 1
    return read_storyworld(cfg, needed)
