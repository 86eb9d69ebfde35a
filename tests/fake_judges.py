"""Fake judges behind a real OpenAI-compatible HTTP server on loopback (no tests in here).

A test that wants to know what the check makes of a judge that behaves in one exact way (one
that obeys an instruction in the story, one whose digit probabilities barely move) needs a
judge whose answer it controls. :class:`FakeJudge` serves ``GET /v1/models`` and ``POST
/v1/chat/completions`` from a thread of the test process; the teacher's openai backend talks
to it over HTTP like to any server. The story to grade is read from the prompt (between
``<story>`` and ``</story>`` on lines of their own, as the rubric's template puts it) and handed to ``answer``;
``logprobs``, if given, returns each answer digit's alternatives, as a server does for
``top_logprobs`` (the teacher's expected-score mode).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from http_servers import chat_handler

_STORY = re.compile(r"<story>\n(.*?)\n</story>", re.S)  # on lines of their own, as the template writes them
MODEL = "fake-judge"


def story_of(messages: list[dict]) -> str | None:
    """The story a rubric prompt asks to grade, whitespace-normalised (None: not a rubric prompt)."""
    for m in messages:
        found = _STORY.search(str(m.get("content") or ""))
        if found:
            return " ".join(found.group(1).split())
    return None


class FakeJudge:
    """``answer(story or None) -> text``; ``logprobs(story or None, answer) -> [{digit: p}]``,
    one distribution per digit of the answer (returned as ``top_logprobs``). Counts the
    requests it answered."""

    def __init__(
        self,
        answer: Callable[[str | None], str],
        logprobs: Callable[[str | None, str], list[dict[str, float]]] | None = None,
    ):
        self.answer, self.logprobs = answer, logprobs
        self.requests = 0
        # served from a thread of the test process (port 0: any free one), so tests see .requests
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), chat_handler(MODEL, self.completion, owned_by="test"))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def completion(self, body: dict) -> dict:
        self.requests += 1
        story = story_of(body.get("messages") or [])
        text = self.answer(story)
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}, "logprobs": None}
        if body.get("logprobs") and self.logprobs is not None:
            choice["logprobs"] = {"content": _tokens(text, self.logprobs(story, text))}
        return {"id": "cmpl-1", "object": "chat.completion", "created": int(time.time()), "model": MODEL, "choices": [choice]}

    def __enter__(self) -> "FakeJudge":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _tokens(text: str, digits: list[dict[str, float]]) -> list[dict]:
    """The answer as tokens (a digit with its leading space is one token, as in most
    tokenizers), each digit with the given alternatives as ``top_logprobs``."""
    out, k = [], 0
    for i, token in enumerate(re.findall(r"\s*\S", text)):
        alternatives = {}
        if token.strip().isdigit() and k < len(digits):
            alternatives = {(" " if i else "") + d: p for d, p in digits[k].items()}
            k += 1
        chosen = alternatives.get(token, 1.0) if alternatives else 1.0
        out.append({
            "token": token, "logprob": math.log(chosen), "bytes": None,
            "top_logprobs": [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in alternatives.items()],
        })  # fmt: skip
    return out
