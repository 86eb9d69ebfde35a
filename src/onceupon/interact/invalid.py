"""The bound on invalid answers: a teacher that stops answering validly stops the run.

An invalid rating (an answer that cannot be parsed, or a request that got no answer) carries
no score: the update leaves its story out. A few are normal; a teacher that answers nothing
valid (the wrong prompt template, a model that ignores the format, a proxy that returns
pages) would otherwise let a run "finish" having learned from nothing. So the loop counts,
over the last ``interact.invalid_window`` steps (fewer at the start of a run), the share of
the stories told whose ratings are invalid; above ``interact.invalid_limit`` the run stops
after the step as Ctrl-C stops it, its progress saved, with one sentence naming the share,
the steps and an example answer (exit code 2, as the watch's alarm). A limit of 1 never stops
a run.
"""

from __future__ import annotations

from collections import deque

from onceupon.config import InteractConfig
from onceupon.teacher.base import Rating
from onceupon.text import printable


class InvalidAnswers:
    """Invalid and all ratings per step over the window; a part of the resume state, so a
    resumed run decides exactly as an uninterrupted one."""

    def __init__(self, c: InteractConfig):
        self.limit, self.window = c.invalid_limit, c.invalid_window
        self.steps: deque[tuple[int, int, int]] = deque(maxlen=self.window)  # (step, invalid, told)
        self.example: Rating | None = None  # an invalid rating of the window (this process's), for the message

    def add(self, step: int, ratings: list[Rating], invalid: int, told: int) -> None:
        """Step ``step``: ``invalid`` of ``told`` ratings (every process's) were invalid;
        ``ratings`` are this process's (an example is taken from them)."""
        self.steps.append((step, invalid, told))
        bad = next((r for r in ratings if not r.valid), None)
        if bad is not None:
            self.example = bad
        elif not any(n for _, n, _ in self.steps):
            self.example = None

    def exceeded(self) -> str | None:
        """What stops the run (said first in its stop sentence), or None while the share is
        within the limit."""
        invalid, told = sum(s[1] for s in self.steps), sum(s[2] for s in self.steps)
        if not told or invalid / told <= self.limit:
            return None
        first, last = self.steps[0][0], self.steps[-1][0]
        steps = f"step {last}" if first == last else f"steps {first}-{last}"
        example = ""
        if self.example is not None:
            answer = _quoted(self.example.raw) if self.example.raw else "no answer"
            example = f" (for example {answer}: {self.example.error or 'invalid'})"
        return (
            f"the teacher's ratings were invalid for {invalid} of the {told} stories of {steps}{example}, above "
            f"interact.invalid_limit={self.limit:g}: fix the teacher (`onceupon check-teacher` shows what it answers) "
            "or raise interact.invalid_limit"
        )

    def state_dict(self) -> dict:
        return {"steps": list(self.steps)}

    def load_state_dict(self, state: dict) -> None:
        self.steps = deque((tuple(s) for s in state.get("steps", [])), maxlen=self.window)


def _quoted(answer: str, most: int = 60) -> str:
    """An answer shown in one line of a sentence: whitespace folded, control characters
    marked (text.py), cut at ``most`` characters, in quotes."""
    text = printable(" ".join(answer.split()))
    return repr(text if len(text) <= most else text[: most - 1] + "…")
