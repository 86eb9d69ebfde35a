"""The anthology: every story the student told during interaction, with its rating.

``RUN/anthology.jsonl``, one JSON object per story (fields pinned in the project's interface
notes: step, index, prompt, continuation, raw, valid, scores, score, total, reward, n_words,
input_words, error). A batch is appended and fsynced once it has been trained on, so after a
crash the file holds whole batches, perhaps a few more than the last checkpoint; resuming cuts
it back to the checkpoint's story count (:meth:`Anthology.truncate`), so it matches the
resumed model exactly: no story missing, none twice.
"""

from __future__ import annotations

from pathlib import Path

from onceupon.files import append_jsonl, read_jsonl, truncate_jsonl
from onceupon.teacher.base import Rating

FILE = "anthology.jsonl"


def record(
    step: int,
    index: int,
    prompt: str,
    continuation: str,
    rating: Rating,
    reward: float | None,
    n_words: int,
    input_words: int,
) -> dict:
    return {
        "step": step,
        "index": index,
        "prompt": prompt,
        "continuation": continuation,
        "raw": rating.raw,
        "valid": rating.valid,
        "scores": rating.scores,
        "score": rating.score,
        "total": rating.total,
        "reward": reward,
        "n_words": n_words,
        "input_words": input_words,
        "error": rating.error,
    }


class Anthology:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / FILE

    def append(self, records: list[dict]) -> None:
        append_jsonl(self.path, records, durable=True)

    def truncate(self, keep: int) -> None:
        """Keep the first ``keep`` stories (and drop a torn last line)."""
        if self.path.exists():
            truncate_jsonl(self.path, keep)

    def read(self) -> list[dict]:
        return list(read_jsonl(self.path)) if self.path.exists() else []
