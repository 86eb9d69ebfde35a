"""Readability formulas from textstat, in one place.

textstat is pinned to 0.7.5 (see pyproject.toml: the last release that works offline). It
imports the deprecated ``pkg_resources``, whose warning would otherwise greet every user, and
loads its syllable dictionary on import (a second or two), so it is imported lazily, once.
"""

from __future__ import annotations

import warnings
from functools import lru_cache


@lru_cache(maxsize=1)
def _textstat():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import textstat
    return textstat


def reading_grade(text: str) -> float:
    """Flesch-Kincaid grade level (a US school grade from syllables/word and words/sentence)."""
    return float(_textstat().flesch_kincaid_grade(text))


def automated_readability_index(text: str) -> float:
    """Automated readability index (a US school grade from letters/word and words/sentence)."""
    return float(_textstat().automated_readability_index(text))
