"""The ratings of a step the teacher did not finish, kept so ``--resume`` does not ask again.

When the teacher fails in the middle of a step (a stalled, refusing or unreachable server:
:class:`~onceupon.teacher.base.TeacherUnavailable`), the loop saves a resume point holding
every completed step and writes the ratings the unfinished step already got to
``RUN/unfinished_step.json``: the step, the teacher's identity, and for each rated story its
index, prompt, continuation and rating. ``--resume`` tells that step again with the very same
random state, so it tells the very same stories; a story whose index, prompt and continuation
match a kept rating takes it instead of asking the teacher, so the teacher is asked only for
what it never answered, and the step ends exactly as it would have without the failure.

Requests that got no answer (refused or failed after every retry) are not kept: they are
asked again. The file goes once a step completes.
"""

from __future__ import annotations

import json
from pathlib import Path

from onceupon.files import atomic_write_json
from onceupon.teacher.base import Rating, Story

FILE = "unfinished_step.json"
FORMAT = "onceupon-unfinished-step/1"


class UnfinishedStep:
    def __init__(self, run_dir: Path, teacher: str):
        self.path = Path(run_dir) / FILE
        self.teacher = teacher  # the identity of the teacher whose ratings may be reused

    def keep(self, step: int, stories: list[Story], rated: list[tuple[int, Rating]]) -> int:
        """Write the ratings step ``step`` got before its teacher failed; returns how many."""
        kept = [(i, r) for i, r in rated if not r.request_failed]
        if not kept:
            self.clear()  # nothing to reuse: no file (an older one is of another try of the step)
            return 0
        rows = [{"index": i, "prompt": stories[i].prompt, "continuation": stories[i].continuation, **r.to_dict()} for i, r in kept]
        atomic_write_json(self.path, {"format": FORMAT, "step": step, "teacher": self.teacher, "ratings": rows})
        return len(kept)

    def reusable(self, step: int, stories: list[Story]) -> tuple[dict[int, Rating], str | None]:
        """The kept ratings of ``step`` that belong to ``stories`` (index -> rating), and a
        sentence when kept ratings exist but cannot be used (None otherwise)."""
        if not self.path.is_file():
            return {}, None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError
            rows = list(data["ratings"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return {}, f"{self.path} cannot be read; every story of step {step} is rated anew."
        if data.get("step") != step or data.get("teacher") != self.teacher:
            what = f"step {data.get('step')}" if data.get("step") != step else f"another teacher ({data.get('teacher')})"
            return {}, f"the {len(rows)} ratings in {self.path} are of {what}, not of step {step} with this teacher; they are not used."
        found: dict[int, Rating] = {}
        for row in rows:
            i = row.get("index") if isinstance(row, dict) else None
            if isinstance(i, int) and 0 <= i < len(stories) and (row.get("prompt"), row.get("continuation")) == (
                stories[i].prompt,
                stories[i].continuation,
            ):
                found[i] = Rating.from_dict(row)
        if len(found) < len(rows):
            return found, (
                f"{len(rows) - len(found)} of the {len(rows)} ratings kept in {self.path} are of stories step {step} "
                "did not tell again this time; those stories are rated anew."
            )
        return found, None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
