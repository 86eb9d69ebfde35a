"""From a teacher's rating to the scalar reward of one story.

The paper's reward is ``r = (T + 0.4 * n_words / 90) / 1.4``: the teacher score T in [0, 1]
plus a length bonus that keeps stories from collapsing to a few words, scaled back to [0, 1].
Here ``0.4`` is ``length_bonus`` and ``90`` is ``length_norm_words``::

    r = (T + length_bonus * min(n_words / length_norm_words, 1)) / (1 + length_bonus)

The ``min(., 1)`` never binds with the paper's settings: every token of a byte-level BPE
tokenizer starts at most one word, so 90 new tokens hold at most 90 words. It only keeps the
reward in [0, 1] when ``length_norm_words`` is set below ``max_new_tokens``.

The teacher applies its ``invalid_policy`` (teacher/policy.py): a rating whose ``score`` is
None (invalid under ``exclude``/``retry``, or a failed request) gives no reward and the story
is left out of the update; under ``zero`` an unparseable answer carries T = 0 and is rewarded
like any other story (the length bonus still applies).
"""

from __future__ import annotations

from onceupon.teacher.base import Rating


def length_bonus_term(n_words: int, norm_words: int) -> float:
    return min(n_words / norm_words, 1.0)


def story_reward(rating: Rating, n_words: int, *, length_bonus: float, length_norm_words: int) -> float | None:
    """The reward of one story, or None when the story is excluded from the update."""
    if rating.score is None:
        return None
    teacher = float(rating.score)
    return (teacher + length_bonus * length_bonus_term(n_words, length_norm_words)) / (1.0 + length_bonus)
