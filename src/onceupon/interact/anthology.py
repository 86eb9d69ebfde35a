"""The anthology: every story the student told during interaction, with its rating.

``RUN/anthology.jsonl``, one JSON object per story (fields documented in docs/interact.md,
Outputs: step, index, prompt, continuation, raw, valid, scores, score, total, reward, n_words,
input_words, error). A batch is appended and fsynced once it has been trained on, so after a
crash the file holds whole batches, perhaps a few more than the last checkpoint.

Every checkpoint records how many stories the anthology held and a hash of them
(:meth:`Anthology.checkpoint`). ``--resume`` checks the file against that record before it
continues (:meth:`Anthology.resume`): stories past the checkpoint (and a torn last line) are
cut, so the file matches the resumed model exactly, no story missing, none twice; a file that
lost or changed stories the checkpoint already holds is refused, never silently continued.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from onceupon.errors import UserError
from onceupon.files import append_jsonl, truncate_jsonl
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


def _canonical(story: dict) -> bytes:
    """The bytes a story is hashed as: independent of how the line was formatted."""
    return json.dumps(story, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


class Anthology:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / FILE
        self.stories = 0
        self._hash = hashlib.sha256()  # running hash of the stories written so far

    def append(self, records: list[dict]) -> None:
        append_jsonl(self.path, records, durable=True)
        for story in records:
            self._hash.update(_canonical(story))
        self.stories += len(records)

    def checkpoint(self) -> dict:
        """What a checkpoint records about the anthology (checked again on resume)."""
        return {"stories": self.stories, "sha256": self._hash.hexdigest()}

    def resume(self, saved: dict, checkpoint: str) -> int:
        """Continue after ``checkpoint``: check that the file's first stories are the ones it
        recorded (``saved``, from :meth:`checkpoint`), then cut everything after them; returns
        how many whole lines were cut (stories told after the checkpoint)."""
        keep = int(saved["stories"])
        self.stories, self._hash = 0, hashlib.sha256()
        if keep == 0:
            after = self._lines()
            truncate_jsonl(self.path, 0)
            return after
        what = f"{self.path} no longer matches checkpoint {checkpoint}"
        fix = (
            "restore the file from a backup, or start a new run from that checkpoint with "
            "`onceupon interact --from`."
        )
        if not self.path.is_file():
            raise UserError(f"{what}: the file is missing, the checkpoint holds {keep} stories; {fix}")
        after = 0
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if self.stories == keep:
                    after += line.endswith("\n")
                    continue
                try:
                    story = json.loads(line) if line.endswith("\n") else None
                except json.JSONDecodeError:
                    story = None
                if not isinstance(story, dict):
                    raise UserError(f"{what}: line {lineno} is damaged, the checkpoint holds {keep} stories; {fix}")
                self._hash.update(_canonical(story))
                self.stories += 1
        if self.stories < keep:
            raise UserError(f"{what}: it holds {self.stories} stories, the checkpoint {keep}; {fix}")
        if "sha256" in saved and self._hash.hexdigest() != saved["sha256"]:
            raise UserError(f"{what}: its first {keep} stories differ from those the checkpoint recorded; {fix}")
        truncate_jsonl(self.path, keep)  # stories told after the checkpoint, and a torn last line
        return after

    def _lines(self) -> int:
        """Whole lines in the file (0 when there is none)."""
        if not self.path.is_file():
            return 0
        with open(self.path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
