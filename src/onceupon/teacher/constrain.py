"""The rubric's answer format as rules a decoder can enforce: constrained answers.

A small judge told only *how* to answer (``<readability> <coherence> <creativity>``) often
drifts out of format, and one shown an example answer copies it. Constraining the decoder to
the format lets it answer in format without being shown what to answer. The format is the
rubric's strict one: one whole number per criterion, within that criterion's scale, in
order, separated by single spaces, nothing else (``2 3 1``). Held here in four shapes:

- :meth:`AnswerFormat.regex`: for regex-guided decoding (vLLM);
- :meth:`AnswerFormat.gbnf`: the same as a llama.cpp grammar (llama-server, llama-cpp-python);
- :meth:`AnswerFormat.json_schema`: for JSON-schema structured outputs (the answer is then
  ``{"readability": 2, ...}``, which the parser reads as a labelled answer);
  teacher/servers.py says which of these each OpenAI-compatible server takes, and how;
- :class:`TokenConstraint` + :func:`answer_processor`: a transformers logits processor
  that, at each step, lets through only the tokens that keep the answer a prefix of the
  format, then only end-of-sequence, so every answer parses, even a random model's. The
  model's own probabilities still choose among the allowed digits, which is what
  expected-score mode averages (renormalised over the allowed digits).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from onceupon.teacher.rubric import Rubric

# A token that may appear in an answer: a space, a number (optionally after one space and a
# minus sign), never two numbers at once, so each number has its own token, as expected-score
# mode needs to read one digit distribution per criterion.
_PIECE = re.compile(r" ?-?\d*")


class AnswerFormat:
    """The strict answer for a rubric: each criterion's allowed values, in order."""

    def __init__(self, rubric: Rubric):
        self.names = rubric.names
        self.values = [[str(v) for v in range(c.low, c.high + 1)] for c in rubric.criteria]

    def regex(self) -> str:
        """``(0|1|2|3) (0|1|2|3) (0|1|2|3)`` for the paper's rubric (longest values first)."""
        groups = ["(" + "|".join(re.escape(v) for v in sorted(vs, key=len, reverse=True)) + ")" for vs in self.values]
        return " ".join(groups)

    def gbnf(self) -> str:
        """The same format as a llama.cpp GBNF grammar (llama-server's and llama-cpp-python's
        ``grammar`` field): ``root ::= ("0" | "1" | "2" | "3") " " (...) " " (...)``."""
        groups = ["(" + " | ".join(json.dumps(v) for v in sorted(vs, key=len, reverse=True)) + ")" for vs in self.values]
        return "root ::= " + ' " " '.join(groups)

    def json_schema(self) -> dict[str, Any]:
        """An object with one integer per criterion, each within its scale, all required."""
        # enum rather than minimum/maximum: OpenAI's strict mode has long accepted enum only
        properties = {name: {"type": "integer", "enum": [int(v) for v in vs]} for name, vs in zip(self.names, self.values)}
        return {"type": "object", "properties": properties, "required": list(self.names), "additionalProperties": False}

    @property
    def max_chars(self) -> int:
        return sum(max(len(v) for v in vs) for vs in self.values) + len(self.values) - 1

    def max_tokens(self, mode: str) -> int:
        """Enough new tokens for the longest answer in ``mode`` (at most one token per
        character, plus the end; JSON with room for the spaces a server may add)."""
        if mode == "off":
            return 1
        if mode == "json_schema":
            longest = {name: max(vs, key=len) for name, vs in zip(self.names, self.values)}
            return len(json.dumps(longest, indent=1)) + 1
        return self.max_chars + 1

    def is_complete(self, text: str) -> bool:
        parts = text.split(" ")
        return len(parts) == len(self.values) and all(p in vs for p, vs in zip(parts, self.values))

    def is_prefix(self, text: str) -> bool:
        """True when ``text`` can still be completed into a valid answer (or already is one)."""
        parts = text.split(" ")
        if len(parts) > len(self.values):
            return False
        *done, last = parts
        if not all(p in vs for p, vs in zip(done, self.values)):
            return False
        return any(v.startswith(last) for v in self.values[len(done)])


class TokenConstraint:
    """Which token ids may come next, for one tokenizer and one answer format.

    Only tokens whose text is a space, a number, or a space and a number can ever be part of
    an answer; they are found once, up front (a few hundred of a vocabulary's tens of
    thousands), so each decoding step checks only those.
    """

    def __init__(self, tokenizer, answer: AnswerFormat, eos_ids: list[int]):
        self.answer = answer
        self.eos_ids = sorted(set(eos_ids))
        self.pieces = _answer_pieces(tokenizer)
        if not any(self.answer.is_prefix(p) for p in self.pieces.values()):
            raise ValueError("the tokenizer has no token that can start an answer")
        self._allowed: dict[str, list[int]] = {}

    @property
    def max_new_tokens(self) -> int:
        """Enough tokens for the longest answer spelled one character per token, and the end."""
        return self.answer.max_tokens("regex")

    def text_of(self, generated: list[int]) -> tuple[str, bool]:
        """The answer text so far and whether it has ended (an end token was generated)."""
        text = []
        for token_id in generated:
            if token_id in self.eos_ids:
                return "".join(text), True
            text.append(self.pieces.get(token_id, ""))
        return "".join(text), False

    def allowed(self, text: str) -> list[int]:
        """Token ids that keep ``text`` a prefix of the format; end tokens once it is complete."""
        if text not in self._allowed:
            ids = [i for i, piece in self.pieces.items() if self.answer.is_prefix(text + piece)]
            if self.answer.is_complete(text):
                ids += self.eos_ids
            self._allowed[text] = ids
        return self._allowed[text]

    def alternatives(self, text: str, logprobs) -> dict[str, float]:
        """{token text: log-probability} of the tokens allowed after ``text`` (for
        expected-score mode), from one step's full log-probability vector."""
        out: dict[str, float] = {}
        for token_id in self.allowed(text):
            if token_id in self.eos_ids:
                continue
            piece, lp = self.pieces[token_id], float(logprobs[token_id])
            # two ids with the same text (rare) add up, as one choice would
            out[piece] = lp if piece not in out else math.log(math.exp(out[piece]) + math.exp(lp))
        return out


def _answer_pieces(tokenizer) -> dict[int, str]:
    """{token id: its exact text} for tokens that could be part of an answer.

    A token decoded alone may lose its leading space (SentencePiece), so each candidate is
    decoded after an anchor token and the anchor's text is cut off again.
    """
    markers = str.maketrans({"Ġ": " ", "▁": " "})  # byte-level BPE and SentencePiece spaces
    candidates = [
        i for i, t in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
        if t and _PIECE.fullmatch(t.translate(markers)) and t not in tokenizer.all_special_tokens
    ]
    anchor = tokenizer.encode("a", add_special_tokens=False)[-1:]
    base = tokenizer.decode(anchor)
    pieces = {}
    for i in candidates:
        text = tokenizer.decode(anchor + [i])
        piece = text[len(base) :] if text.startswith(base) else ""
        if piece and _PIECE.fullmatch(piece):
            pieces[i] = piece
    return pieces


def answer_processor(constraint: TokenConstraint, prompt_length: int):
    """A transformers ``LogitsProcessor`` enforcing ``constraint`` on a left-padded batch whose
    prompts all end at ``prompt_length``. Built here so transformers is imported only when used."""
    import torch
    from transformers import LogitsProcessor

    class AnswerFormatProcessor(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
            mask = torch.full_like(scores, -math.inf)
            for row in range(input_ids.shape[0]):
                text, ended = constraint.text_of(input_ids[row, prompt_length:].tolist())
                if ended:  # finished rows are padded by generate; leave them be
                    mask[row] = 0
                    continue
                allowed = [i for i in constraint.allowed(text) if i < scores.shape[-1]]
                mask[row, allowed] = 0
            return scores + mask

    return AnswerFormatProcessor()
