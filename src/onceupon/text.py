"""Model output made fit to show: the one rule for the teacher's prompt, the annotation page
and the report's story browser.

A student with a byte-level tokenizer can emit any byte. Decoded, a lone control byte stays a
raw control character (``\\x03``, ``\\x15``: invisible, or breaking a terminal or a page) and
an incomplete multi-byte character becomes U+FFFD. Neither is text, but both are part of what
the student wrote, so they are marked visibly rather than dropped: a person and a judge should
both see that the story holds garbage, and see it in the same way.

- a control character (Unicode category Cc) but newline and tab becomes its Unicode control
  picture: ``\\x03`` -> ``␃``, ``\\x7f`` -> ``␡``; the C1 controls (``\\x80``..``\\x9f``),
  which have no picture, become ``␦``;
- a run of U+FFFD (one undecodable character is often several) becomes one ``␦`` (U+2426,
  the symbol for "substitute").

The stored data (anthologies, samples, ratings' source files) keep what the student wrote.
"""

from __future__ import annotations

import re

#: what stands for undecodable bytes and for control characters without a picture
SUBSTITUTE = "\u2426"
#: control characters that are not newline or tab, and runs of U+FFFD
_NOT_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]|\ufffd+")


def _picture(match: re.Match) -> str:
    code = ord(match.group()[0])
    if code < 0x20:
        return chr(0x2400 + code)  # the Control Pictures block mirrors C0: U+2400 is NUL
    if code == 0x7F:
        return "\u2421"  # DEL
    return SUBSTITUTE


def printable(text: str) -> str:
    """``text`` with control characters and undecodable bytes marked visibly (see above)."""
    return _NOT_TEXT.sub(_picture, text)
