"""THE word counter and the word-milestone schedules.

Every stage counts words with :func:`count_words` so that budgets, milestones and reports all
agree: a word is a maximal run of non-whitespace characters (``len(text.split())``), the
BabyLM convention.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from onceupon.errors import UserError

K = 1_000
M = 1_000_000


def count_words(text: str) -> int:
    """Number of whitespace-separated words in ``text``."""
    return len(text.split())


def babylm_milestones(unit: int = M, up_to: int | None = None) -> list[int]:
    """The BabyLM checkpoint schedule in units of ``unit`` words.

    With ``unit=1M``: every 1M to 10M, every 10M to 100M, every 100M to 1B. A smaller unit
    scales the whole schedule down (``unit=1K``: 1K..10K, 20K..100K, 200K..1M), which is
    what small runs use. ``up_to`` drops milestones above it.
    """
    if unit <= 0:
        raise UserError(f"The milestone unit must be positive, got {unit}.")
    steps = list(range(1, 10)) + list(range(10, 100, 10)) + list(range(100, 1001, 100))
    out = [s * unit for s in steps]
    if up_to is not None:
        out = [m for m in out if m <= up_to]
    return out


def every_milestones(every: int, up_to: int) -> list[int]:
    """Milestones at a fixed interval: ``every, 2*every, ...`` up to and including ``up_to``."""
    if every <= 0:
        raise UserError(f"The checkpoint interval must be positive, got {every}.")
    return list(range(every, up_to + 1, every))


def milestone_name(words: int) -> str:
    """Checkpoint name for a word count: ``chck_10M``, ``chck_500K``, or ``chck_1234W``."""
    if words > 0 and words % M == 0:
        return f"chck_{words // M}M"
    if words > 0 and words % K == 0:
        return f"chck_{words // K}K"
    return f"chck_{words}W"


def checkpoint_name(milestone: int, words: int) -> str:
    """Name of a checkpoint written when ``words`` (the exact count held) reached ``milestone``.

    A whole thousand or million is a milestone label, as BabyLM names its checkpoints:
    ``chck_2M`` holds at least 2M words (a step usually passes the milestone by a few). Any
    other count reads as exact, so it is the exact count held: a target of 300 words passed
    by a step that ended at 304 gives ``chck_304W``, never a name that understates it.
    """
    if milestone > 0 and milestone % K == 0:
        return milestone_name(milestone)
    return milestone_name(words)


def parse_word_count(value: str | int) -> int:
    """Parse ``"10M"``, ``"500K"``, ``"1B"``, ``"1_000"`` or an int into a word count."""
    if isinstance(value, int):
        return value
    text = str(value).strip().upper().replace("_", "").replace(",", "")
    scale = {"K": K, "M": M, "B": 1_000 * M, "G": 1_000 * M}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        result = float(number) * scale
    except ValueError:
        raise UserError(f"'{value}' is not a word count; write e.g. 1000000, 1M or 500K.") from None
    if not math.isfinite(result) or result < 0 or result != int(result):
        raise UserError(f"'{value}' is not a whole, non-negative word count.")
    return int(result)


def crossed(milestones: Iterable[int], before: int, after: int) -> list[int]:
    """Milestones ``m`` with ``before < m <= after``: the ones a step from ``before`` to
    ``after`` words reached."""
    return [m for m in milestones if before < m <= after]
