"""Pack a tokenised corpus into fixed-length training sequences, with exact word counts.

Every document becomes ``<s> tokens </s>``; the documents are concatenated into one stream
and cut into sequences of the student's context length (the last one padded). Each sequence
carries the exact number of corpus words it holds, so "words seen" during pretraining is a
sum of integers, not an estimate from a tokens-per-word ratio.

How a word is attributed to a token: a word (a maximal run of non-whitespace, the same
definition as :func:`onceupon.words.count_words`) belongs to the first token whose character
span reaches the word's last character. Every word ends somewhere, so each is counted exactly
once, in the sequence that holds its end; a word split across two sequences counts in the
second. Summed over the sequences of an epoch this is exactly the corpus word count.

The packed data is cached in ``RUN/packed/`` (numpy arrays), written atomically, so a resumed
run and every process of a multi-GPU run read the very same sequences.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onceupon.errors import UserError
from onceupon.files import atomic_write_json, fsync_dir, replace_dir
from onceupon.tracking import progress_bar

_BATCH_DOCS = 2_000


@dataclass
class Packed:
    """Training sequences and their word counts.

    ``tokens[i]`` is sequence ``i`` (``context_length`` token ids); only its first
    ``valid[i]`` positions are real (the rest is padding, never a training target);
    ``words[i]`` is the exact number of corpus words that end inside it.
    """

    tokens: np.ndarray  # (n_sequences, context_length), uint16 or int32
    valid: np.ndarray  # (n_sequences,) int32
    words: np.ndarray  # (n_sequences,) int64
    documents: int

    @property
    def n_sequences(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def context_length(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def total_words(self) -> int:
        return int(self.words.sum())

    @property
    def total_tokens(self) -> int:
        return int(self.valid.sum())


#: ``_IS_SPACE[cp]``: does ``str.split()`` split on code point ``cp``? (All such code points
#: lie below U+3001; the tests check every code point against ``count_words``.)
_IS_SPACE = np.zeros(0x110000, dtype=bool)
_IS_SPACE[[cp for cp in range(0x3001) if chr(cp).isspace()]] = True


def word_ends(text: str) -> np.ndarray:
    """Character index just past the end of each whitespace-separated word of ``text``.

    Vectorised over the code points (a regex loop costs more than tokenising for millions
    of documents): a word ends at ``i`` when ``i`` is not a space and ``i + 1`` is one or
    is the end of the text.
    """
    if not text:
        return np.zeros(0, dtype=np.int64)
    code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    space = _IS_SPACE[code_points]
    ends = ~space
    ends[:-1] &= space[1:]
    return np.flatnonzero(ends) + 1


def words_per_token(text: str, token_ends: np.ndarray) -> np.ndarray:
    """How many words of ``text`` end in each token (see the module docstring).

    ``token_ends[j]`` is the end character offset of token ``j``. The result sums to the
    number of words in ``text`` exactly.
    """
    ends = word_ends(text)
    if len(token_ends) == 0:
        if len(ends):
            raise ValueError("a text with words produced no tokens")
        return np.zeros(0, dtype=np.int64)
    # Offsets are non-decreasing in principle; the running maximum guards against a
    # tokenizer that reports a smaller end for a later (e.g. partial-byte) token.
    reach = np.maximum.accumulate(np.asarray(token_ends, dtype=np.int64))
    cumulative = np.searchsorted(ends, reach, side="right")
    counts = np.diff(cumulative, prepend=0)
    counts[-1] += len(ends) - cumulative[-1]  # nothing may be left out
    return counts


def tokenize_documents(
    tokenizer, documents: Sequence[str], *, show_progress: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """The token stream ``<s> doc </s> <s> doc </s> ...`` and the words ending at each token.

    Returns ``(token_ids, words_per_token, n_documents_used)``; blank documents are skipped.
    """
    core = tokenizer.backend_tokenizer  # the Rust tokenizer: batched, parallel, with offsets
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    # One array per batch of documents, not per document: the paper's corpus has millions.
    id_parts: list[np.ndarray] = []
    word_parts: list[np.ndarray] = []
    used = 0
    with progress_bar("documents", disable=None if show_progress else True) as bar:
        task = bar.add_task("tokenise", total=len(documents))
        for start in range(0, len(documents), _BATCH_DOCS):
            batch = [d for d in documents[start : start + _BATCH_DOCS] if d.strip()]
            ids_batch: list = []
            words_batch: list = []
            for doc, enc in zip(batch, core.encode_batch(batch, add_special_tokens=False)):
                ends = np.array(enc.offsets, dtype=np.int64).reshape(-1, 2)[:, 1]
                ids_batch += [[bos], enc.ids, [eos]]
                words_batch += [[0], words_per_token(doc, ends), [0]]
            if batch:
                id_parts.append(np.concatenate(ids_batch).astype(np.int32))
                word_parts.append(np.concatenate(words_batch).astype(np.int32))
                used += len(batch)
            bar.update(task, advance=min(_BATCH_DOCS, len(documents) - start))
    if not id_parts:
        raise UserError("The corpus has no text to train on (every document is empty).")
    return np.concatenate(id_parts), np.concatenate(word_parts), used


def pack(token_ids: np.ndarray, token_words: np.ndarray, context_length: int, pad_id: int, documents: int) -> Packed:
    """Cut the stream into ``context_length`` sequences; pad the last one."""
    n_tokens = len(token_ids)
    n_seq = -(-n_tokens // context_length)
    padded = n_seq * context_length
    dtype = np.uint16 if max(int(token_ids.max()), pad_id) < 2**16 else np.int32
    tokens = np.full(padded, pad_id, dtype=dtype)
    tokens[:n_tokens] = token_ids
    words = np.zeros(padded, dtype=np.int64)  # int64 so that the per-sequence sums cannot overflow
    words[:n_tokens] = token_words
    valid = np.full(n_seq, context_length, dtype=np.int32)
    valid[-1] = n_tokens - (n_seq - 1) * context_length
    return Packed(
        tokens=tokens.reshape(n_seq, context_length),
        valid=valid,
        words=words.reshape(n_seq, context_length).sum(axis=1),
        documents=documents,
    )


# --------------------------------------------------------------------------- cache
_FILES = ("tokens.npy", "valid.npy", "words.npy")


def save_packed(packed: Packed, directory: str | Path) -> None:
    """Write the arrays and ``info.json`` to a temporary directory, then rename it."""
    final = Path(directory)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, array in zip(_FILES, (packed.tokens, packed.valid, packed.words)):
        with open(tmp / name, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
    info = {
        "sequences": packed.n_sequences,
        "context_length": packed.context_length,
        "tokens": packed.total_tokens,
        "words": packed.total_words,
        "documents": packed.documents,
    }
    atomic_write_json(tmp / "info.json", info)
    fsync_dir(tmp)
    replace_dir(tmp, final)


def load_packed(directory: str | Path) -> Packed | None:
    """The cached packed data, or ``None`` when there is none (yet)."""
    directory = Path(directory)
    info_path = directory / "info.json"
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text(encoding="utf-8"))
    # Memory-mapped: several processes on one machine share the pages.
    tokens, valid, words = (np.load(directory / name, mmap_mode="r") for name in _FILES)
    return Packed(tokens=tokens, valid=np.asarray(valid), words=np.asarray(words), documents=int(info["documents"]))


def build_packed(tokenizer, documents: Sequence[str], context_length: int, *, show_progress: bool = True) -> Packed:
    """Tokenise and pack ``documents`` (no caching)."""
    ids, words, used = tokenize_documents(tokenizer, documents, show_progress=show_progress)
    return pack(ids, words, context_length, tokenizer.pad_token_id, used)
