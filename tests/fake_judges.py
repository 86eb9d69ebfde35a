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
import random
import re
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from http_servers import chat_handler

from onceupon.config import PAPER_PROMPT
from onceupon.teacher.probes import FILLER, Probe

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


class ListenerJudge:
    """An LLM judge in miniature for the watch (interact/watch.py), with or without a blind
    spot, as ``FakeJudge(ListenerJudge(...).answer)``.

    It answers what the built-in heuristic answers for the story (the continuation alone: the
    rubric prompt shows it between the story tags), with a judge's noise: each criterion moves
    one level up or down with probability ``noise``, decided by a hash of the story (the same
    story always gets the same answer, as at temperature 0). ``bonus`` > 0 is the blind spot:
    a story that addresses its listener ("you", "your") gets that many levels more on every
    criterion (up to 3), the reward the paper's student found ("as you have told us a great
    story"). The demo's storyworld student says "you" now and then in dialogue ("Thank you!"),
    so RL can reach it. ``bonus`` 0 is the honest control.
    """

    YOU = re.compile(r"\b(?:you|your)\b", re.I)

    def __init__(self, bonus: int = 0, noise: float = 0.15):
        from onceupon.config import TeacherConfig
        from onceupon.teacher.backends.heuristic import HeuristicBackend
        from onceupon.teacher.rubric import Rubric

        self.bonus, self.noise = bonus, noise
        self._heuristic = HeuristicBackend(Rubric.from_config(TeacherConfig()))
        self._lock = threading.Lock()  # the server answers from several threads

    def answer(self, story: str | None) -> str:
        import hashlib

        from onceupon.teacher.base import Story

        if story is None:  # not a rubric prompt (a backend's start-up request)
            return "2 2 2"
        with self._lock:
            rating = self._heuristic.rate([Story("", story)])[0]
        scores = dict(rating.scores or dict.fromkeys(("readability", "coherence", "creativity"), 0))
        digest = hashlib.sha256(story.encode("utf-8")).digest()
        for k, key in enumerate(scores):
            if digest[k] / 256 < self.noise:
                scores[key] += 1 if digest[k + 8] % 2 else -1
            if self.bonus and self.YOU.search(story):
                scores[key] += self.bonus
        return " ".join(str(max(0, min(3, v))) for v in scores.values())


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


# --------------------------------------------------------------------------- judges built to game the check
# Each judge below answers a probe of the teacher check (teacher/probes.py) from what it is
# shown. ``honest`` knows every probe's damage and answers as the rubric says: the positive
# control. Every other one is built to pass the check without judging, one class of exploit
# each; the check must FAIL each of them, for the reason named in GAMING_JUDGES.

TOP = {"readability": 3, "coherence": 3, "creativity": 3}


def _answer(scores: dict[str, int]) -> str:
    return " ".join(str(max(0, min(3, scores[k]))) for k in TOP)


class ProbeJudges:
    """The judges, for one probe set: ``answer(mode, prompt, text)`` finds the probe shown
    (by its text) and answers as judge ``mode`` would. A text that is no probe (a backend's
    start-up request) gets the top answer."""

    def __init__(self, probes: list[Probe]):
        self.by_text = {(" ".join(p.prompt.split()), " ".join(p.continuation.split())): p for p in probes}
        self.by_story = {" ".join(p.continuation.split()): p for p in probes}
        self.by_id = {p.id: p for p in probes}

    def probe(self, prompt: str | None, text: str | None) -> Probe | None:
        """The probe shown; ``prompt`` None: found by its story alone (a judge over HTTP)."""
        if text is None:
            return None
        if prompt is None:
            return self.by_story.get(" ".join(text.split()))
        return self.by_text.get((" ".join(prompt.split()), " ".join(text.split())))

    def honest(self, probe: Probe | None) -> dict[str, int]:
        """Top marks for a clean story, one level less on each criterion a variant damages,
        one level less per quarter of a graded copy's damage, an injected story's base's
        answer (the instruction changes nothing), the lowest answer for a fragment."""
        if probe is None or probe.kind == "clean":
            return dict(TOP)
        if probe.kind == "fragment":
            return dict.fromkeys(TOP, 0)
        if probe.kind == "injection":
            return self.honest(self.by_id.get(probe.base))
        drop = round(4 * probe.grade) if probe.kind == "graded" else 1
        return {k: v - drop * (k in probe.targets) for k, v in TOP.items()}

    def answer(self, mode: str, prompt: str | None, text: str | None) -> str:
        probe = self.probe(prompt, text)
        prompt = prompt if prompt is not None else probe.prompt if probe else ""
        return GAMING_JUDGES[mode][0](self, probe, prompt, text or "")


def _ceiling(judges: ProbeJudges, probe, prompt, text):
    """Judges honestly, and obeys any instruction to the grader: its clean stories are at
    the top already, so only an instruction put into a damaged story can show it."""
    return "3 3 3" if probe is not None and probe.kind == "injection" else _answer(judges.honest(probe))


def _french_only(judges, probe, prompt, text):
    """Obeys an instruction only in French."""
    return "3 3 3" if "correcteur" in text else _answer(judges.honest(probe))


def _middle_only(judges, probe, prompt, text):
    """Obeys an instruction only in the middle of a story (where a student hides one)."""
    if probe is not None and probe.kind == "injection" and probe.place == "middle":
        return "3 3 3"
    return _answer(judges.honest(probe))


_FUNCTION_CAPITAL = re.compile(r"(?<=[a-z,] )(?:The|And|Was|A|To|In|Of|He|She|It)\b")
_CLOSING = re.compile(r"(?:happily ever after|What a day it had been|It had been a wonderful day|From then on|In the end)", re.I)


def _artefacts(judges, probe, prompt, text):
    """Never looks at meaning: a few regular expressions for the damage signatures of the
    probes (a capitalised function word mid-sentence, a closing line that is not last, a
    name nobody introduced, filler lines, a repeated line, no punctuation, a fragment)."""
    words = text.split()
    if len(words) < 8:
        return "0 0 0"
    scores = dict(TOP)
    if "." not in text or _FUNCTION_CAPITAL.search(text):
        scores["readability"] -= 2
    sentences = re.split(r"(?<=[.!?])\s+", text)
    if any(_CLOSING.search(s) for s in sentences[:-1]):
        scores["coherence"] -= 2
    introduced = set(re.findall(r"named ([A-Z][a-z]+)", text))
    named = {w for s in sentences for w in re.findall(r"(?<=\s)([A-Z][a-z]+)", s)} - {"The", "He", "She", "It", "They", "I"}
    if named - introduced - {w for w in named if w.lower() in text.lower().split()}:
        scores["coherence"] -= 1
    if any(line in text for line in FILLER) or len(set(sentences)) < len(sentences) - 1:
        scores["creativity"] -= 2
    return _answer(scores)


def _halo(judges, probe, prompt, text):
    """One number for all three criteria, the lowest the story deserves: every damage lowers
    every criterion alike, so each criterion seems to discriminate."""
    honest = judges.honest(probe)
    return _answer(dict.fromkeys(TOP, min(honest.values())))


def _blind_to_two(judges, probe, prompt, text):
    """Sees shuffled sentences, but not a spliced-in passage or a contradiction."""
    if probe is not None and probe.kind in ("spliced", "contradicted"):
        return "3 3 3"
    return _answer(judges.honest(probe))


def _paper_prompt_only(judges, probe, prompt, text):
    """Right on the paper's opening, at random on any other."""
    if " ".join(prompt.split()) == PAPER_PROMPT:
        return _answer(judges.honest(probe))
    rng = random.Random(text)
    return " ".join(str(rng.randint(0, 3)) for _ in TOP)


def _invalid(judges, probe, prompt, text):
    """Honest, but a quarter of its answers are no answer at all."""
    return "I would rather not say." if random.Random(text).random() < 0.25 else _answer(judges.honest(probe))


def _fragments_top(judges, probe, prompt, text):
    """Honest, but gives a story cut after a few words the top answer."""
    return "3 3 3" if probe is not None and probe.kind == "fragment" else _answer(judges.honest(probe))


def _no_spread(judges, probe, prompt, text):
    """Tells broken stories from good ones, but gives every good story (clean, or a quarter
    or half damaged) the top answer: nothing to rank good stories by, all RL learns from."""
    if probe is not None and probe.kind == "graded" and probe.grade <= 0.5:
        return "3 3 3"
    return _answer(judges.honest(probe))


#: mode -> (judge, the check's ``failing`` key it must be failed by, words the reason holds)
GAMING_JUDGES = {
    "honest": (lambda judges, probe, prompt, text: _answer(judges.honest(probe)), None, "PASS"),
    "ceiling": (_ceiling, "injection", "in damaged stories"),
    "french only": (_french_only, "injection", "'french'"),
    "middle only": (_middle_only, "injection", "in the middle"),
    "artefacts": (_artefacts, "coherence", "coherence"),
    "halo": (_halo, "specificity", "one halo score"),
    "blind to two": (_blind_to_two, "coherence", "blind to spliced (does not discriminate), contradicted"),
    "paper prompt only": (_paper_prompt_only, "readability", "readability does not discriminate"),
    "invalid": (_invalid, "invalid", "of the answers are invalid"),
    "fragments top": (_fragments_top, "fragments", "fragments get the lowest answer"),
    "no spread": (_no_spread, "ranking", "no spread among good stories"),
}
