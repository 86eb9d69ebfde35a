"""Any OpenAI-compatible chat server as the teacher: vLLM (``vllm serve``), llama.cpp
(``llama-server``), llama-cpp-python, Ollama, ``transformers serve``, or a hosted API.

- Requests run concurrently on a private asyncio event loop in a background thread, so
  :meth:`OpenAIBackend.rate` is a plain blocking call that works from any thread (the
  interaction loop may rate in a worker thread). How many are in flight adapts to what the
  server sustains, between 1 and ``concurrency`` (teacher/concurrency.py).
- The retry policy is ours, not the client's (its built-in retries are off), so every request
  is counted: a 429, a 5xx, a timeout, a refused/dropped connection, or a reply that is not a
  chat completion at all (an HTML page, plain text, broken JSON: a proxy or the wrong URL) is
  retried up to ``max_retries`` times, waiting a random time up to ``backoff * 2**k`` seconds
  (full jitter, capped at ``max_backoff``; a server's ``Retry-After`` is honoured within the
  cap). Each story retries on its own, so the retries of different stories run side by side
  (within the limit in flight). A request the server refuses as malformed is not retried: a
  4xx other than 429, or a 500 whose message says the request is invalid (llama-cpp-python's
  server answers a request its schema refuses with HTTP 500). A story whose requests all fail
  gets an invalid rating with ``outcome`` FAILED (REJECTED when refused); if *every* story of
  a call ends that way the server is gone or refuses us, and :class:`TeacherUnavailable` is
  raised instead.
- Every request has a deadline, ``teacher.timeout`` seconds for the whole of it (connecting,
  waiting, and reading the answer to its last byte). The HTTP client's own timeout is per
  read, so a server that sends its headers and then a byte every few seconds would never time
  out; the deadline counts like any timeout (retried, and towards patience), at start-up too.
- Redirects: the HTTP client follows them, so a server that moved keeps working when the
  method survives (307, 308, and any redirect of a GET). A 301, 302 or 303 turns a POST into a
  GET, which a chat endpoint answers with an error (404 or 405): the error then names the
  redirect and where it led, so ``teacher.base_url`` can be set to the server's real address,
  instead of reporting a bare 404.
- Patience, for the whole call: when no answer at all has come back for ``teacher.patience``
  seconds (default twice ``timeout``) while stories wait, the server has stalled (it accepts
  connections and says nothing): the call stops with :class:`TeacherUnavailable` within that
  time, however many stories are left, instead of letting every story wait out its own
  timeouts and retries (hours, at 360 stories and 6 attempts of 60 s). Ratings already
  passed to ``on_rated`` stand.
- At start the server is probed (``GET /models``, then one short request built like every
  rating request): unreachable, wrong key, unknown model, a server that does not answer in
  the OpenAI format, or one that refuses the request as malformed are one clear :class:`UserError`. Without
  ``teacher.model`` the server's first model is used. Which server it is (``teacher.server``,
  recognised there when ``auto``, see teacher/servers.py) decides how a constrained answer is
  asked for; a constrained mode it cannot honour is a :class:`UserError` at start.
- The API key is read from the environment variable named by ``api_key_env`` and is kept
  only inside the client: never logged, never in the identity, errors or saved config. Local
  servers that need no key get a placeholder.
- Expected-score mode asks for ``top_logprobs`` and averages each criterion's allowed digits
  by probability (parsing.expected_scores); the server must return log-probabilities, which
  the start-up request checks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urljoin

import openai

from onceupon.config import TeacherConfig
from onceupon.errors import UserError
from onceupon.teacher import servers
from onceupon.teacher.base import Outcome, Rating, Story, TeacherUnavailable
from onceupon.teacher.concurrency import AdaptiveLimit
from onceupon.teacher.constrain import AnswerFormat
from onceupon.teacher.parsing import rating_from_answer
from onceupon.teacher.rubric import Rubric

T = TypeVar("T")
PLACEHOLDER_KEY = "no-key-needed"  # local servers ignore the key, the client insists on one
#: What a server error says when the fault is the request's, not the server's: llama-cpp-python
#: answers a request its schema refuses with HTTP 500 and pydantic's validation error
#: ("1 validation error: ... Input should be 'text' or 'json_object'"). Narrow on purpose: a
#: 500 that says anything else (out of memory, a crashed worker) is retried.
INVALID_REQUEST = re.compile(
    r"invalid.request|validation error|input should be|field required|extra inputs are not permitted|unexpected field",
    re.IGNORECASE,
)


class Deadline(Exception):
    """A request that did not end within its deadline (``teacher.timeout`` for all of it)."""


class NotOpenAI(Exception):
    """The server answered, but not in the OpenAI format (the message says with what)."""


#: request failures that are retried (and count towards patience)
RETRYABLE = (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError, Deadline)


class LoopThread:
    """An asyncio event loop running in its own daemon thread; ``run`` blocks the caller."""

    def __init__(self, name: str = "onceupon-teacher"):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()
        self._running: set[concurrent.futures.Future] = set()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            raise RuntimeError("LoopThread.run called from its own loop; await the coroutine instead")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self._running.add(future)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the caller: stop the requests too
            raise
        finally:
            self._running.discard(future)

    def cancel(self) -> None:
        """Cancel what :meth:`run` is running (called from another thread); ``run`` then raises
        ``concurrent.futures.CancelledError`` in its caller."""
        for future in list(self._running):
            future.cancel()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


class OpenAIBackend:
    def __init__(self, cfg: TeacherConfig, rubric: Rubric):
        if not cfg.base_url:
            raise UserError("teacher.backend=openai needs teacher.base_url, e.g. http://127.0.0.1:8000/v1.")
        key = PLACEHOLDER_KEY
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env, "")
            if not key:
                raise UserError(f"The environment variable {cfg.api_key_env} (teacher.api_key_env) is not set or empty.")
        self.cfg = cfg
        self.rubric = rubric
        self.base_url = cfg.base_url.rstrip("/")
        self._key_env = cfg.api_key_env
        self._rng = random.Random()
        #: request counters for reports and benchmarks: requests sent, retries, stories failed
        self.stats = {"requests": 0, "retries": 0, "failed": 0}
        self.limit = AdaptiveLimit(cfg.concurrency, adaptive=cfg.adapt_concurrency)
        #: seconds without any answer, while stories wait, before a call gives up (see the docstring)
        self.patience = cfg.patience if cfg.patience is not None else 2 * cfg.timeout
        self._last_answer: float | None = None  # when the last one came, while a call runs
        self._last_failure: str | None = None  # why the last request failed, for the patience message
        self._loop = LoopThread()
        try:
            self._client = self._loop.run(self._make_client(key))
            self.model = self._loop.run(self._probe())
            self.server, vllm_version = self._loop.run(self._recognise())
            self.constraint = self._constraint(vllm_version)
            self._loop.run(self._probe_request())
        except BaseException:
            self.close()
            raise
        mode = "|expected" if cfg.expected_score else ""
        mode += f"|constrained={self.constraint.format}" if self.constraint else ""
        self.identity = f"openai:{self.model}|t={cfg.temperature}|max_tokens={cfg.max_tokens}{mode}"

    async def _make_client(self, key: str) -> openai.AsyncOpenAI:
        # Created on the loop's thread: the client's HTTP pool belongs to this event loop.
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=self.cfg.timeout)

    # ------------------------------------------------------------------ start-up checks
    async def _probe(self) -> str:
        """Reach the server, check the key and the model; returns the model name to use."""
        last: Exception | None = None
        for attempt in range(3):  # a server that is just starting gets a moment
            try:
                short = min(self.cfg.timeout, 10)
                reply = await within(short, self._client.models.with_raw_response.list(timeout=short))
                self._models = _models(reply.text, reply.headers.get("content-type", ""))
                self._server_header = reply.headers.get("server", "")
                listed = [m["id"] for m in self._models]
                break
            except NotOpenAI as e:
                raise UserError(
                    f"The teacher server at {self.base_url} does not speak the OpenAI API: GET /models answered with {e}; "
                    "check teacher.base_url (it usually ends in /v1)."
                ) from None
            except (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError, Deadline) as e:
                last = e
                await asyncio.sleep(0.25 * (attempt + 1))
            except openai.AuthenticationError as e:
                if getattr(e.response, "history", None):  # the client drops the key on a redirect to another origin
                    raise UserError(
                        f"The teacher server at {self.base_url}: {_reason(e)} (an API key is not sent on to another address)."
                    ) from None
                where = f"the environment variable {self._key_env}" if self._key_env else "no key (set teacher.api_key_env)"
                raise UserError(f"The teacher server at {self.base_url} rejected the API key from {where}.") from None
            except openai.NotFoundError:
                listed = []  # some servers have no /models; the first request will tell
                self._models, self._server_header = [], ""
                break
        else:
            raise UserError(
                f"Cannot reach the teacher server at {self.base_url} ({_reason(last)}); start it first or fix teacher.base_url."
            )
        if self.cfg.model:
            if listed and self.cfg.model not in listed:
                shown = ", ".join(listed[:5]) + (", ..." if len(listed) > 5 else "")
                raise UserError(f"The teacher server at {self.base_url} does not serve '{self.cfg.model}'; it serves {shown}.")
            return self.cfg.model
        if not listed:
            raise UserError(f"The teacher server at {self.base_url} lists no models; set teacher.model.")
        return listed[0]

    async def _recognise(self) -> tuple[str, tuple[int, ...] | None]:
        """The server kind (``teacher.server``, or recognised from what it says: servers.py) and,
        for vLLM, its version."""
        kind = self.cfg.server
        root = re.sub(r"/v1$", "", self.base_url)  # /version and /openapi.json live at the root

        async def get_json(path: str) -> Any:
            """The JSON a GET answers with (through the client: its key and connections); None
            for anything else (no such page, an error, not JSON)."""
            try:
                short = min(self.cfg.timeout, 10)
                return json.loads(await within(short, self._client.get(root + path, cast_to=str, options={"timeout": short})))
            except (openai.APIError, ValueError, Deadline):
                return None

        if kind == "auto":
            kind = servers.from_models(self._models, self._server_header, self.base_url)
        if kind is None:
            kind = servers.from_openapi(await get_json("/openapi.json")) or "other"
        version = None
        if kind == "vllm" and self.cfg.constrained != "off":
            found = await get_json("/version")
            version = servers.parse_version(str(found.get("version", ""))) if isinstance(found, dict) else None
        return kind, version

    def _constraint(self, vllm_version: tuple[int, ...] | None) -> servers.Constraint | None:
        try:
            return servers.constraint(self.cfg.constrained, self.server, AnswerFormat(self.rubric), self.cfg.max_tokens, vllm_version)
        except servers.Unsupported as e:
            raise UserError(
                f"teacher.constrained={self.cfg.constrained} cannot work with the teacher server at {self.base_url}: {e} "
                f"(or set teacher.server if it is not {servers.NAMES[self.server]})."
            ) from None

    def _request_args(self) -> dict[str, Any]:
        """What every rating request carries beside the model, messages and temperature."""
        args: dict[str, Any] = {"max_tokens": self.cfg.max_tokens}
        # A constrained answer asks for the rubric's format the way this server takes it
        # (servers.py); it may raise max_tokens.
        args |= self.constraint.args if self.constraint else {}
        if self.cfg.expected_score:
            args |= {"logprobs": True, "top_logprobs": self.cfg.top_logprobs}
        return args

    async def _probe_request(self) -> None:
        """One short request built like every rating request: a server that refuses it as
        malformed would refuse them all (one sentence now, not a batch of refusals later), and
        expected-score mode needs log-probabilities in its answer. A timeout or server error
        here tells nothing about the request: rating meets it with retries and patience."""
        completion = None
        try:
            reply = await within(self.cfg.timeout, self._client.chat.completions.with_raw_response.create(
                model=self.model,
                messages=[{"role": "user", "content": "Say 1."}],
                temperature=self.cfg.temperature,
                **self._request_args(),
            ))
            completion = _chat_completion(reply)
        except openai.APIStatusError as e:
            if _refused_request(e):
                raise UserError(self._refused(_reason(e))) from None
        except (openai.APITimeoutError, openai.APIConnectionError, NotOpenAI, Deadline):
            pass
        if self.cfg.expected_score:
            choice = completion.choices[0] if completion is not None and completion.choices else None
            if not (choice and getattr(choice, "logprobs", None) and choice.logprobs.content):
                raise UserError(
                    f"The teacher server at {self.base_url} does not return log-probabilities; set teacher.expected_score=false."
                )

    # ------------------------------------------------------------------ rating
    def rate(self, stories: list[Story], on_rated: Callable[[int, Rating], None] | None = None) -> list[Rating]:
        """One rating per story, in order. ``on_rated(i, rating)``, if given, is called from the
        backend's event-loop thread as soon as story ``i`` is rated (keep it quick)."""
        ratings = self._loop.run(self._rate_all(stories, on_rated))
        unanswered = [r for r in ratings if r.outcome in (Outcome.FAILED, Outcome.REJECTED)]
        if stories and len(unanswered) == len(stories):
            rejected = next((r for r in unanswered if r.outcome is Outcome.REJECTED), None)
            if rejected is not None:
                raise TeacherUnavailable(self._refused(rejected.error.removeprefix("request rejected: ")))
            raise TeacherUnavailable(
                f"The teacher server at {self.base_url} stopped answering ({unanswered[0].error}); "
                "no story of this batch could be rated."
            )
        return ratings

    def _refused(self, error: str) -> str:
        sent = f" (this request carried {self.constraint.sent} for teacher.constrained={self.cfg.constrained})" if self.constraint else ""
        return f"The teacher server at {self.base_url} refuses onceupon's requests{sent}: {error}."

    def cancel(self) -> None:
        """Stop a :meth:`rate` call running in another thread at once (it raises
        ``concurrent.futures.CancelledError``); ratings already passed to ``on_rated`` stand."""
        self._loop.cancel()

    def status(self) -> str:
        """Requests in flight (sent, not yet answered), retries so far and, while a call runs,
        the seconds since the server last answered, for progress lines."""
        text = f"{self.limit.in_flight} in flight (limit {self.limit.allowed}), {self.stats['retries']} retries"
        last = self._last_answer
        return text + (f", last answer {time.monotonic() - last:.0f} s ago" if last is not None else "")

    async def _rate_all(self, stories: list[Story], on_rated: Callable[[int, Rating], None] | None) -> list[Rating]:
        """Rate every story concurrently; stop early when the server stalls (no answer for
        ``patience`` seconds while stories wait)."""

        async def one(i: int, story: Story) -> Rating:
            rating = await self._rate_one(story)
            if on_rated is not None:
                on_rated(i, rating)
            return rating

        self._last_answer = time.monotonic()  # the call's start counts as an answer
        self._last_failure = None
        tasks = [asyncio.ensure_future(one(i, s)) for i, s in enumerate(stories)]
        everything = asyncio.gather(*tasks)
        try:
            while not everything.done():
                left = self.patience - (time.monotonic() - self._last_answer)
                if left <= 0:
                    failed = f" (the last failed request: {self._last_failure})" if self._last_failure else ""
                    raise TeacherUnavailable(
                        f"The teacher server at {self.base_url} stopped answering: no answer for {self.patience:g} s "
                        f"(teacher.patience) with {_requests(self.limit.in_flight)} in flight{failed}; "
                        f"{sum(t.done() for t in tasks)} of the {len(stories)} stories of this batch were done."
                    )
                await asyncio.wait([everything], timeout=left)
            return list(everything.result())
        finally:
            self._last_answer = None
            everything.cancel()  # stops the requests still in flight (if any)
            await asyncio.gather(everything, return_exceptions=True)

    async def _rate_one(self, story: Story) -> Rating:
        cfg = self.cfg
        extra_args = self._request_args()
        attempts = 0
        while True:
            attempts += 1
            self.stats["requests"] += 1
            started = await self.limit.acquire()
            ended = "other"
            try:
                reply = await within(cfg.timeout, self._client.chat.completions.with_raw_response.create(
                    model=self.model,
                    messages=self.rubric.messages(story),
                    temperature=cfg.temperature,
                    **extra_args,
                ))
                self._heard()
                resp = _chat_completion(reply)
                ended = "answered"
                break
            except (*RETRYABLE, NotOpenAI) as e:
                last = e
                self._last_failure = _reason(e)
                if isinstance(e, openai.APIStatusError):
                    self._heard()
                    if _invalid_request(e):  # a 500 that blames the request: asking again will not help
                        return self._reject(e, attempts)
                if not isinstance(e, NotOpenAI):
                    ended = "overloaded"  # timeouts, 429, 5xx, refused connections: fewer in flight
                if attempts > cfg.max_retries:
                    self.stats["failed"] += 1
                    error = f"no answer after {attempts} attempts: {_reason(e)}"
                    return self.rubric.invalid("", error, attempts=attempts, outcome=Outcome.FAILED)
                self.stats["retries"] += 1
            except openai.APIStatusError as e:  # 4xx other than 429: asking again will not help
                self._heard()
                return self._reject(e, attempts)
            finally:
                self.limit.release(started, ended)
            await asyncio.sleep(self._wait(attempts, last))
        return self._rating(resp, attempts)

    def _heard(self) -> None:
        """The server answered (anything, even an error): it has not stalled."""
        self._last_answer = time.monotonic()

    def _reject(self, error: openai.APIStatusError, attempts: int) -> Rating:
        """A request the server refused as malformed: not asked again."""
        self.stats["failed"] += 1
        return self.rubric.invalid("", f"request rejected: {_reason(error)}", attempts=attempts, outcome=Outcome.REJECTED)

    def _wait(self, attempt: int, error: Exception) -> float:
        cap = min(self.cfg.max_backoff, self.cfg.backoff * 2 ** (attempt - 1))
        retry_after = None
        response = getattr(error, "response", None)
        if response is not None:
            try:
                retry_after = float(response.headers.get("retry-after"))
            except (TypeError, ValueError):
                retry_after = None
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cfg.max_backoff)
        return self._rng.uniform(0, cap)

    def _rating(self, resp: Any, attempts: int) -> Rating:
        choice = resp.choices[0] if resp.choices else None
        raw = (choice.message.content or "") if choice else ""

        def logprobs() -> list:
            content = getattr(getattr(choice, "logprobs", None), "content", None) or []
            return [(t.token, t.logprob, {a.token: a.logprob for a in (t.top_logprobs or [])}) for t in content]

        return rating_from_answer(raw, self.rubric, logprobs if self.cfg.expected_score else None, attempts=attempts)

    def close(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None and not self._loop.loop.is_closed():
            try:
                self._loop.run(client.close())
            except Exception:
                pass
        self._loop.close()


async def within(seconds: float, request: Coroutine[Any, Any, T]) -> T:
    """``request``'s result if it ends within ``seconds``, all of it, else :class:`Deadline`
    (and the request is cancelled). The HTTP client's timeout applies to each read, which a
    server trickling its answer a byte at a time never trips."""
    try:
        return await asyncio.wait_for(request, seconds)
    except TimeoutError:
        raise Deadline(f"no complete answer within {seconds:g} s (teacher.timeout)") from None


def _describe(text: str, content_type: str) -> str:
    """What a reply that is not the expected JSON looks like, in a few words."""
    body = text.strip()
    if not body:
        return "an empty body"
    if "html" in content_type.lower() or body.startswith("<"):
        return "an HTML page"
    if body[:1] in "{[" or "json" in content_type.lower():
        return "malformed JSON"
    return f"plain text ({body[:60]!r})"


def _chat_completion(reply: Any) -> Any:
    """The parsed chat completion of a raw reply, or :class:`NotOpenAI` when it is not one
    (the client would return a str for HTML or text and raise JSONDecodeError for broken
    JSON)."""
    content_type = reply.headers.get("content-type", "")
    text = reply.text  # httpx decodes with replacement characters: never raises
    try:
        data = json.loads(text)
    except ValueError:
        raise NotOpenAI(f"{_describe(text, content_type)} instead of a chat completion") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("content"), (str, type(None))):
        raise NotOpenAI("JSON that is not a chat completion")
    return reply.parse()


def _requests(n: int) -> str:
    return f"{n} request" + ("" if n == 1 else "s")


def _invalid_request(error: openai.APIStatusError) -> bool:
    """A 5xx whose message says the request is at fault (see INVALID_REQUEST)."""
    return error.status_code >= 500 and bool(INVALID_REQUEST.search(_reason(error)))


def _refused_request(error: openai.APIStatusError) -> bool:
    """The server refused the request itself: a 4xx other than 429, or :func:`_invalid_request`."""
    return (400 <= error.status_code < 500 and error.status_code != 429) or _invalid_request(error)


def _models(text: str, content_type: str) -> list[dict]:
    """The models of a ``GET /models`` reply; :class:`NotOpenAI` when it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        raise NotOpenAI(f"{_describe(text, content_type)} instead of a list of models") from None
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in models):
        raise NotOpenAI("with JSON that is not a list of models")
    return models


def _redirected(response: Any, answer: str) -> str:
    """``answer`` (what an error response said), after what a followed redirect did before it
    came back. A 301/302/303 turns a POST into a GET, which a chat endpoint refuses: without
    this, that reads as a bare 404 from the server."""
    history = getattr(response, "history", None) or []
    if not history:
        return answer
    first, request = history[0], getattr(response, "request", None)
    sent, now = first.request.method, getattr(request, "method", first.request.method)
    where = urljoin(str(first.request.url), first.headers.get("location", ""))
    changed = f", where the {sent} became a {now}" if now != sent else ""
    return f"it redirects (HTTP {first.status_code}) to {where}{changed}, answered with {answer}; set teacher.base_url to the address the server answers at"


def _reason(error: BaseException | None) -> str:
    """A short, key-free description of a request failure."""
    if error is None:
        return "no answer"
    if isinstance(error, NotOpenAI):
        return f"the server answered with {error}"
    if isinstance(error, Deadline):
        return str(error)
    if isinstance(error, openai.APITimeoutError):
        return "timed out"
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error.__context__
        return f"connection failed: {type(cause).__name__}" if cause else "connection failed"
    if isinstance(error, openai.APIStatusError):
        message = ""
        body = error.body
        if isinstance(body, dict):
            inner = body.get("error", body)
            # OpenAI-style servers say {"error": {"message": ...}}; FastAPI ones (transformers serve)
            # say {"detail": "..."} or, for a request that fails validation, {"detail": [{"msg": ...}]}
            message = (inner.get("message") or inner.get("detail") or "") if isinstance(inner, dict) else str(inner)
            if isinstance(message, list):
                message = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in message)
        message = " ".join(str(message).split())  # one line: servers' messages may hold tracebacks
        answer = f"HTTP {error.status_code}" + (f": {message[:200]}" if message else "")
        return _redirected(error.response, answer)
    return type(error).__name__
