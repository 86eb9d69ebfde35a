"""Which OpenAI-compatible server the ``openai`` backend talks to, and how that server takes a
constrained answer.

Every server reads the chat-completion request differently beyond the OpenAI fields. For
the rubric's two answer formats (constrain.py: the plain ``2 3 1``, called ``regex``, and a
JSON object, ``json_schema``), each takes (read from each server's own request parsing):

==================  =======================================  ==========================================
server              plain format (``regex``)                 JSON object (``json_schema``)
==================  =======================================  ==========================================
vllm                ``structured_outputs: {"regex": ...}``   ``response_format`` type ``json_schema``
                    (vLLM >= 0.10.2; older: ``guided_regex``)
llama.cpp           ``grammar`` (GBNF)                       ``response_format`` type ``json_schema``
llama-cpp-python    ``grammar`` (GBNF)                       ``response_format`` type ``json_object``
                                                             with ``schema`` (it refuses ``json_schema``)
openai              none (no such field)                     ``response_format`` ``json_schema``, strict
transformers        none (it refuses unknown fields)         none (it ignores ``response_format``)
other               ``structured_outputs`` (vLLM's field)    ``response_format`` type ``json_schema``
==================  =======================================  ==========================================

``teacher.constrained: auto`` takes the plain format where the server has a way to ask for it
(vLLM, llama.cpp, llama-cpp-python: the shortest answer, one token per number, which
expected-score mode reads best), else the JSON object (the OpenAI API), else nothing
(``transformers serve``, and a server not recognised: it may refuse what it does not know).
An explicit mode the server has no way to honour is refused at start, with the reason.

``teacher.server: auto`` recognises the server once at start, from what it already says:
``GET /models`` lists vLLM's models as owned by ``vllm`` and llama-server's as owned by
``llamacpp`` (llama-server also sends the header ``Server: llama.cpp``); a base URL on
api.openai.com is the OpenAI API; failing those, the server's ``/openapi.json`` (FastAPI
servers publish one) tells llama-cpp-python's server (titled "llama.cpp Python API") and
``transformers serve`` (its ``/load_model`` route) apart; anything else is ``other``. For
vLLM, ``GET /version`` decides between ``structured_outputs`` and the older ``guided_regex``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from onceupon.teacher.constrain import AnswerFormat

SERVERS = ("vllm", "llama.cpp", "llama-cpp-python", "transformers", "openai", "other")
NAMES = {
    "vllm": "vLLM's OpenAI server",
    "llama.cpp": "llama.cpp's llama-server",
    "llama-cpp-python": "llama-cpp-python's server",
    "transformers": "transformers serve",
    "openai": "the OpenAI API",
    "other": "an unrecognised server",
}
#: vLLM read ``guided_regex`` before this version and ``structured_outputs`` from it on
#: (``guided_*`` fields were removed in 0.12).
VLLM_STRUCTURED_OUTPUTS = (0, 10, 2)


class Unsupported(ValueError):
    """The server has no way to honour the constrained mode asked for (the message says why)."""


@dataclass(frozen=True)
class Constraint:
    """What a request carries to constrain its answer."""

    format: str  # "regex" (the plain "2 3 1") or "json_schema" (a JSON object)
    sent: str  # the field, in words, for messages and the docs
    args: dict[str, Any] = field(default_factory=dict)  # chat.completions.create keyword arguments


def from_models(models: list[dict], server_header: str, base_url: str) -> str | None:
    """The server kind from the ``GET /models`` reply, its ``Server`` header and the URL;
    None when they do not tell."""
    owners = {str(m.get("owned_by", "")).lower() for m in models}
    if "vllm" in owners:
        return "vllm"
    if "llamacpp" in owners or server_header.lower().startswith("llama.cpp"):
        return "llama.cpp"
    host = (urlparse(base_url).hostname or "").lower()
    if host == "api.openai.com" or host.endswith(".openai.com"):
        return "openai"
    return None


def from_openapi(doc: Any) -> str | None:
    """The server kind from a FastAPI server's ``/openapi.json``; None when it does not tell."""
    if not isinstance(doc, dict):
        return None
    title = str((doc.get("info") or {}).get("title", ""))
    paths = doc.get("paths") or {}
    if "llama.cpp python" in title.lower():
        return "llama-cpp-python"
    if isinstance(paths, dict) and "/load_model" in paths and "/v1/chat/completions" in paths:
        return "transformers"
    return None


def parse_version(text: str) -> tuple[int, ...] | None:
    """``"0.10.2rc1.dev3"`` -> (0, 10, 2); None when there is no version number."""
    found = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g or 0) for g in found.groups()) if found else None


def constraint(mode: str, server: str, answer: AnswerFormat, max_tokens: int, vllm_version: tuple[int, ...] | None = None) -> Constraint | None:
    """What to send for ``teacher.constrained=mode`` to ``server`` (see the module docstring);
    None: nothing. Raises :class:`Unsupported` for an explicit mode the server cannot honour.
    ``max_tokens`` is raised to fit the format."""
    if mode == "off":
        return None
    if mode == "auto":
        mode = {"vllm": "regex", "llama.cpp": "regex", "llama-cpp-python": "regex", "openai": "json_schema"}.get(server, "")
        if not mode:
            return None
    tokens = {"max_tokens": max(max_tokens, answer.max_tokens(mode))}
    if mode == "regex":
        if server in ("llama.cpp", "llama-cpp-python"):
            return Constraint("regex", "a GBNF grammar (grammar)", {"extra_body": {"grammar": answer.gbnf()}, **tokens})
        if server == "vllm" and vllm_version is not None and vllm_version < VLLM_STRUCTURED_OUTPUTS:
            return Constraint("regex", "guided_regex", {"extra_body": {"guided_regex": answer.regex()}, **tokens})
        if server in ("vllm", "other"):
            return Constraint("regex", "structured_outputs.regex", {"extra_body": {"structured_outputs": {"regex": answer.regex()}}, **tokens})
        why = "it has no field for a regex or grammar" if server == "openai" else "it refuses request fields it does not know"
        raise Unsupported(f"{NAMES[server]} cannot constrain answers to a regex ({why}); use teacher.constrained=auto or off")
    schema = answer.json_schema()
    if server == "llama-cpp-python":  # its response_format takes type json_object with a schema only
        return Constraint("json_schema", "response_format json_object with schema", {"response_format": {"type": "json_object", "schema": schema}, **tokens})
    if server == "transformers":
        raise Unsupported(f"{NAMES[server]} accepts response_format but ignores it; use teacher.constrained=off")
    spec = {"name": "rating", "schema": schema, "strict": True}
    return Constraint("json_schema", "response_format json_schema", {"response_format": {"type": "json_schema", "json_schema": spec}, **tokens})
