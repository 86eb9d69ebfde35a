"""Real HTTP servers for the teacher's tests and benchmark, all on loopback.

- :func:`make_tiny_chat_model` saves a tiny Llama chat model with its own tokenizer and chat
  template, fine-tuned for a few seconds to answer every rubric prompt with a fixed answer
  (``"2 3 1"``), so tests can assert valid ratings through a real server.
- :class:`Served` starts ``transformers serve`` on that model as a subprocess on a free port.
- :func:`start_logprob_server` runs a minimal OpenAI-compatible server of our own over the
  same model that returns ``top_logprobs`` (``transformers serve`` does not), for the
  expected-score mode.
- :func:`start_garbage_server` answers HTTP 200 with an HTML page, plain text or broken JSON
  (everything, or only the chat requests), like a web server behind the wrong URL.
- :func:`start_shared_cpu_server` answers every chat request with "2 3 1" after a fixed amount
  of work, shared between the requests it holds (as one CPU is shared by threads): ``n``
  requests in flight each take ``n`` times longer. A slow teacher in miniature, for the
  adaptive-concurrency test and benchmark; it counts the most requests it held at once.
- :func:`start_freezing_server` answers the first ``answers`` chat requests with "2 3 1", then
  freezes: it keeps accepting connections and reading requests but never answers, like a
  teacher whose engine hung (until ``GET /_thaw``). ``GET /_stats`` says how many requests it
  answered and held, and when (Unix time) it froze.
- :func:`start_refusing_server` answers chat requests (all, or all after the first ``after``)
  with an HTTP error and a body, such as llama-cpp-python's HTTP 500 for a request its schema
  refuses; ``GET /_stats`` counts the requests.
- :func:`start_trickling_server` sends the headers of an answer at once and then its body one
  byte every ``every`` seconds, which no per-read timeout ever catches: from ``GET /models``
  on (``start="models"``), from the first chat request (``"chat"``), or from the second (the
  start-up request answered, the ratings trickled: ``"second-chat"``).
- :func:`start_redirecting_server` answers with HTTP ``status`` (301, 307, ...) and a
  ``Location`` under ``/moved/``, where the server really is: every request
  (``start="models"``) or only the chat requests (``"chat"``). A ``GET`` to ``/moved/`` of a
  chat path is a 404, as a POST turned into a GET by a 301 meets on a real server. With
  ``"elsewhere"`` every request is sent to another origin (a second port), which answers 401
  without an API key (an HTTP client drops the key on a redirect to another origin).
- :func:`start_llama_cpp_python` runs llama-cpp-python's OpenAI server (``python -m
  llama_cpp.server``) on a GGUF model, from the Python of an environment that has
  ``llama-cpp-python[server]`` (:func:`llama_cpp_python`); :func:`start_llama_server` runs
  llama.cpp's own C++ ``llama-server`` (:func:`llama_server`: the binary).
- ``python tests/http_servers.py proxy --upstream URL --port P`` runs a fault-injecting
  reverse proxy (a real process) in front of any server. A story asks for faults by carrying
  a marker in its text, so each test decides exactly which story suffers what:

  ``[[fault:503x2]]``  the first 2 requests carrying this marker get HTTP 503, then pass
  ``[[fault:429x1]]``  one 429 (with ``Retry-After: 0``), then pass
  ``[[fault:delay3x1]]`` the first request waits 3 s before being forwarded (client timeout)
  ``[[fault:dropx1]]`` the first request's connection is closed without an answer
  ``[[fault:htmlx2]]`` ``[[fault:textx1]]`` ``[[fault:badjsonx1]]`` HTTP 200 with an HTML page,
  plain text or broken JSON instead of a chat completion (a misrouted proxy, the wrong URL)
  ``[[fault:503x2:any-tag]]`` a tag makes a marker unique to one story

  ``GET /_stats`` returns, per marker (and ``"*"`` for all POST requests, ``"GET"`` for the
  rest), how many requests came in and how many were forwarded, so tests can check nothing
  was lost or sent twice.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ANSWER = "2 3 1"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- tiny model
def make_tiny_chat_model(directory: Path, answer: str = ANSWER, steps: int = 60, seed: int = 0) -> Path:
    """A tiny Llama chat model that answers rubric prompts with ``answer``; returns its dir."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from onceupon.student.tokenizer import train_tokenizer
    from onceupon.teacher.base import Story
    from onceupon.teacher.rubric import Rubric

    torch.manual_seed(seed)
    # One thread: on a shared, busy CPU, several spinning threads make this tiny job 3x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_chat_model(directory, answer, steps)
    finally:
        torch.set_num_threads(threads)


def _train_chat_model(directory: Path, answer: str, steps: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from onceupon.student.tokenizer import train_tokenizer
    from onceupon.teacher.base import Story
    from onceupon.teacher.rubric import Rubric

    rubric = Rubric()
    stories = [
        "there lived a fox named Pip. Pip had a red box.",
        "the owl sang to the moon every night, and the moon sang back.",
        "a girl found a key under a tree. She opened the old door.",
        "green table quickly moon the the the",
        "the bear slept. The bear slept. The bear slept.",
        "a boat sailed to an island full of singing birds [[fault:503x2]].",
    ]
    messages = [rubric.messages(Story("Once upon a time,", s)) for s in stories]
    texts = [rubric.render(Story("Once upon a time,", s)) for s in stories] + [answer] * 20
    tokenizer = train_tokenizer(texts * 3, vocab_size=700, min_frequency=2)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    rows = []
    for m in messages:
        prompt_ids = tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        ids = list(prompt_ids) + answer_ids
        labels = [-100] * len(prompt_ids) + answer_ids
        rows.append((ids, labels))
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        ids, labels = rows[step % len(rows)]
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
        out.loss.backward()
        optim.step()
        optim.zero_grad()
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# --------------------------------------------------------------------------- processes
def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class Process:
    """A subprocess we started, stopped (by its own pid) on exit."""

    def __init__(
        self, args: list[str], ready_url: str, timeout: float = 180, log: Path | None = None, env: dict | None = None
    ):
        self.log = open(log, "wb") if log else subprocess.DEVNULL
        env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            wait_http(ready_url, timeout, self.proc)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def serve_model(
    model_dir: Path, log: Path | None = None, threads: int | None = 1, extra_args: tuple[str, ...] = ()
) -> tuple[Process, str]:
    """``transformers serve MODEL_DIR`` on a free loopback port; returns (process, base_url).

    ``threads`` caps torch's CPU threads in the server (1 keeps a shared test machine calm;
    None leaves torch's default)."""
    port = free_port()
    exe = Path(sys.executable).parent / "transformers"
    args = [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", *extra_args]
    base = f"http://127.0.0.1:{port}"
    env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    return Process(args, f"{base}/v1/models", log=log, env=env), f"{base}/v1"


def start_proxy(upstream: str, log: Path | None = None) -> tuple[Process, str]:
    """The fault-injecting proxy in front of ``upstream`` (a base URL like http://h:p/v1)."""
    port = free_port()
    args = [sys.executable, str(Path(__file__).resolve()), "proxy", "--upstream", upstream, "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    return Process(args, f"{base}/_stats", timeout=60, log=log), f"{base}/v1"


def proxy_stats(base_url: str) -> dict:
    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/_stats", timeout=5) as r:
        return json.loads(r.read())


# --------------------------------------------------------------------------- the proxy
_MARKER = re.compile(r"\[\[fault:(503|500|429|delay(\d+(?:\.\d+)?)|drop|html|text|badjson)x(\d+)(?::[\w-]+)?\]\]")

#: what a server that does not speak the OpenAI API answers with HTTP 200: (body, content type)
GARBAGE = {
    "html": (b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>", "text/html"),
    "text": (b"upstream connect error or disconnect/reset before headers", "text/plain"),
    "badjson": (b'{"id": "cmpl-1", "choices": [{"message": {"content": "2 3', "application/json"),
}


def run_proxy(upstream: str, port: int) -> None:
    up = urllib.request.urlparse(upstream)
    prefix = up.path.rstrip("/")  # e.g. /v1
    stats: dict[str, dict[str, int]] = {}
    lock = threading.Lock()

    def count(key: str, field: str) -> int:
        with lock:
            entry = stats.setdefault(key, {"received": 0, "forwarded": 0})
            entry[field] += 1
            return entry[field]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as _Quiet below

        def log_message(self, *args):  # quiet
            pass

        def _reply(self, status: int, body: bytes, headers: dict | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self, method: str, body: bytes | None, marker: str | None, key: str = "*") -> None:
            path = self.path
            if path.startswith("/v1"):
                path = prefix + path[len("/v1") :]
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=600)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            count(key, "forwarded")
            if marker:
                count(marker, "forwarded")
            self._reply(resp.status, data, {"X-Proxied": "1"})
            conn.close()

        def do_GET(self):
            if self.path == "/_stats":
                with lock:
                    self._reply(200, json.dumps(stats).encode())
                return
            count("GET", "received")
            self._forward("GET", None, None, key="GET")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            m = _MARKER.search(body.decode("utf-8", "replace"))
            marker = m.group(0) if m else None
            count("*", "received")
            n = count(marker, "received") if marker else 0
            if m and n <= int(m.group(3)):
                kind = m.group(1)
                if kind in ("503", "500"):
                    return self._reply(int(kind), b'{"error": {"message": "injected server error"}}')
                if kind == "429":
                    return self._reply(429, b'{"error": {"message": "injected rate limit"}}', {"Retry-After": "0"})
                if kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if kind in GARBAGE:
                    body, content_type = GARBAGE[kind]
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                time.sleep(float(m.group(2)))  # delay, then forward: the client has given up
            self._forward("POST", body, marker)

    serve(Handler, port)


# --------------------------------------------------------------------------- the parts every server shares
class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as real servers (uvicorn, vLLM) set it: without it the body, written after
    # the headers, waits for the client's delayed ACK, and every answer takes 40 ms on loopback
    # (the teacher check's 950 ratings took 45 s from a FakeJudge, with latencies that swing
    # between 1 and 40 ms so the adaptive limit never rises above one request in flight).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, data) -> None:
        self.send(status, json.dumps(data).encode())

    def body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


def serve(handler: type[BaseHTTPRequestHandler], port: int) -> None:
    """Serve ``handler`` on loopback ``port``, a thread per request, until the process ends."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.serve_forever()


def _start(kind: str, *args: str, ready: str = "/_stats") -> tuple[Process, str]:
    """Start ``python http_servers.py KIND --port P ARGS`` on a free port; returns the process
    (ready once ``GET ready`` answers) and the server's /v1 address."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(Path(__file__).resolve()), kind, "--port", str(port), *args]
    return Process(command, base + ready, timeout=60), f"{base}/v1"


def chat_handler(model: str, complete: Callable[[dict], dict], owned_by: str = "local") -> type[_Quiet]:
    """The two routes a teacher needs of an OpenAI-compatible server: ``GET /v1/models`` lists
    ``model``, ``POST /v1/chat/completions`` answers ``complete(request body)``; the rest is 404."""

    class Handler(_Quiet):
        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                listed = [{"id": model, "object": "model", "created": 0, "owned_by": owned_by}]
                return self.send_json(200, {"object": "list", "data": listed})
            self.send_json(404, {"error": {"message": "not found"}})

        def do_POST(self):
            body = json.loads(self.body())
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self.send_json(404, {"error": {"message": "not found"}})
            self.send_json(200, complete(body))

    return Handler


# --------------------------------------------------------------------------- logprob server
def run_logprob_server(model_dir: Path, port: int) -> None:
    """A minimal OpenAI-compatible chat server over a transformers model that returns
    ``logprobs``/``top_logprobs`` (which ``transformers serve`` does not), greedy decoding.
    Only what the teacher's expected-score mode needs: GET /v1/models, POST /v1/chat/completions."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    name = str(model_dir)
    lock = threading.Lock()

    def complete(body: dict) -> dict:
        ids = tok.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        k = int(body.get("top_logprobs") or 0)
        with lock, torch.inference_mode():
            out = model.generate(
                **ids, max_new_tokens=int(body.get("max_tokens") or 16), do_sample=False,
                return_dict_in_generate=True, output_logits=True, pad_token_id=tok.pad_token_id,
            )
        new = out.sequences[0, ids["input_ids"].shape[1] :]
        content = []
        for step, token_id in enumerate(new.tolist()):
            if token_id == tok.eos_token_id:
                break
            lp = torch.log_softmax(out.logits[step][0].float(), -1)
            top = torch.topk(lp, k) if k else None
            content.append({
                "token": tok.decode([token_id]), "logprob": float(lp[token_id]), "bytes": None,
                "top_logprobs": [
                    {"token": tok.decode([int(i)]), "logprob": float(v), "bytes": None}
                    for v, i in zip(top.values, top.indices)
                ] if top is not None else [],
            })
        text = tok.decode(new, skip_special_tokens=True)
        return {
            "id": "cmpl-1", "object": "chat.completion", "created": int(time.time()), "model": name,
            "choices": [{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": text},
                "logprobs": {"content": content} if body.get("logprobs") else None,
            }],
        }

    serve(chat_handler(name, complete), port)


def start_logprob_server(model_dir: Path, log: Path | None = None) -> tuple[Process, str]:
    port = free_port()
    args = [sys.executable, str(Path(__file__).resolve()), "logprob-server", str(model_dir), "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    return Process(args, f"{base}/v1/models", log=log), f"{base}/v1"


# --------------------------------------------------------------------------- garbage and slow servers
def _completion(answer: str) -> dict:
    return {
        "id": "cmpl-1", "object": "chat.completion", "created": int(time.time()), "model": "shared-cpu",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
    }


def run_garbage_server(kind: str, port: int, models_ok: bool) -> None:
    body, content_type = GARBAGE[kind]
    models = json.dumps({"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}]})

    class Handler(_Quiet):
        def do_GET(self):
            if models_ok or self.path == "/_ready":
                return self.send(200, models.encode())
            self.send(200, body, content_type)

        def do_POST(self):
            self.body()
            self.send(200, body, content_type)

    serve(Handler, port)


def start_garbage_server(kind: str, models_ok: bool = False) -> tuple[Process, str]:
    """A server answering 200 with ``kind`` (html, text, badjson) to everything, or (with
    ``models_ok``) to chat requests only, so the start-up check passes and rating meets it."""
    port = free_port()
    args = [sys.executable, str(Path(__file__).resolve()), "garbage", kind, "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    return Process([*args, *(["--models-ok"] if models_ok else [])], f"{base}/_ready", timeout=60), f"{base}/v1"


def run_shared_cpu_server(port: int, work: float) -> None:
    """Each chat request needs ``work`` seconds of one shared 'CPU' (see the module docstring)."""
    lock = threading.Lock()
    state = {"active": 0, "most": 0, "requests": 0}
    tick = min(0.01, work / 10)

    class Handler(_Quiet):
        def do_GET(self):
            if self.path == "/_stats":
                with lock:
                    return self.send(200, json.dumps(state).encode())
            self.send(200, json.dumps({"object": "list", "data": [{"id": "shared-cpu", "object": "model"}]}).encode())

        def do_POST(self):
            self.body()
            with lock:
                state["active"] += 1
                state["requests"] += 1
                state["most"] = max(state["most"], state["active"])
            left = work
            try:
                while left > 0:
                    time.sleep(tick)
                    with lock:
                        left -= tick / state["active"]
            finally:
                with lock:
                    state["active"] -= 1
            try:
                self.send(200, json.dumps(_completion(ANSWER)).encode())
            except OSError:
                pass  # the client gave up (timeout): its share of the work is wasted, as on a real server

    serve(Handler, port)


def start_shared_cpu_server(work: float) -> tuple[Process, str]:
    return _start("shared-cpu", "--work", str(work))


def run_freezing_server(port: int, answers: int) -> None:
    """See the module docstring."""
    lock = threading.Lock()
    state = {"answered": 0, "held": 0, "frozen_at": None}
    thawed = threading.Event()

    class Handler(_Quiet):
        def do_GET(self):
            if self.path == "/_thaw":
                thawed.set()
            with lock:
                data = state if self.path in ("/_stats", "/_thaw") else {"object": "list", "data": [{"id": "judge", "object": "model"}]}
                return self.send(200, json.dumps(data).encode())

        def do_POST(self):
            self.body()
            with lock:
                frozen = state["answered"] >= answers and not thawed.is_set()
                if frozen:
                    state["held"] += 1
                    state["frozen_at"] = state["frozen_at"] or time.time()
                else:
                    state["answered"] += 1
            if frozen:
                thawed.wait()  # the connection stays open, the request unanswered
                self.close_connection = True
                return
            self.send(200, json.dumps(_completion(ANSWER)).encode())

    serve(Handler, port)


def start_freezing_server(answers: int) -> tuple[Process, str]:
    return _start("freezing", "--answers", str(answers))


def run_refusing_server(port: int, status: int, body: str, after: int) -> None:
    """Chat requests after the first ``after``: HTTP ``status`` with ``body``."""
    lock = threading.Lock()
    state = {"requests": 0}

    class Handler(_Quiet):
        def do_GET(self):
            with lock:
                data = state if self.path == "/_stats" else {"object": "list", "data": [{"id": "judge", "object": "model"}]}
                return self.send(200, json.dumps(data).encode())

        def do_POST(self):
            self.body()
            with lock:
                state["requests"] += 1
                refuse = state["requests"] > after
            self.send(status, body.encode()) if refuse else self.send(200, json.dumps(_completion(ANSWER)).encode())

    serve(Handler, port)


def start_refusing_server(status: int, body: str, after: int = 0) -> tuple[Process, str]:
    return _start("refusing", "--status", str(status), "--body", body, "--after", str(after))


def run_trickling_server(port: int, every: float, start: str) -> None:
    """See the module docstring."""
    models = json.dumps({"object": "list", "data": [{"id": "judge", "object": "model"}]}).encode()
    state = {"requests": 0}

    class Handler(_Quiet):
        def trickle(self, body: bytes) -> None:
            """The headers at once (with the full length), then the body one byte at a time."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(every)
            except OSError:
                pass  # the client gave up

        def do_GET(self):
            if self.path == "/_stats":
                return self.send(200, json.dumps(state).encode())
            if start == "models":
                return self.trickle(models)
            self.send(200, models)

        def do_POST(self):
            self.body()
            state["requests"] += 1
            if start == "second-chat" and state["requests"] == 1:  # the start-up request passes
                return self.send(200, json.dumps(_completion(ANSWER)).encode())
            self.trickle(json.dumps(_completion(ANSWER)).encode() + b" " * 100_000)

    serve(Handler, port)


def start_trickling_server(every: float, start: str) -> tuple[Process, str]:
    return _start("trickling", "--every", str(every), "--start", start)


def run_redirecting_server(port: int, status: int, start: str) -> None:
    """See the module docstring."""
    models = json.dumps({"object": "list", "data": [{"id": "judge", "object": "model"}]}).encode()
    # "elsewhere": the server has moved to another origin (a second port), where it wants the key
    other = free_port() if start == "elsewhere" else None
    moved = f"http://127.0.0.1:{other}/moved" if other else "/moved"

    class Handler(_Quiet):
        def redirect(self) -> None:
            self.send_response(status)
            self.send_header("Location", moved + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            if self.path == "/_stats":
                return self.send(200, b"{}")
            if other and self.path.startswith("/moved/") and not self.headers.get("Authorization"):
                return self.send_json(401, {"error": {"message": "no API key given"}})
            if self.path.startswith("/moved/v1/models") or (start == "chat" and self.path.startswith("/v1/models")):
                return self.send(200, models)
            if self.path.startswith("/moved/"):  # a POST turned into a GET by the redirect
                return self.send_json(404, {"error": {"message": "not found"}})
            self.redirect()

        def do_POST(self):
            self.body()
            if self.path.startswith("/moved/"):
                return self.send(200, json.dumps(_completion(ANSWER)).encode())
            self.redirect()

    if other:
        threading.Thread(target=serve, args=(Handler, other), daemon=True).start()
    serve(Handler, port)


def start_redirecting_server(status: int, start: str) -> tuple[Process, str]:
    return _start("redirecting", "--status", str(status), "--start", start)


#: where tests look for an environment with llama-cpp-python[server] (ONCEUPON_LLAMACPP_PYTHON: its python)
LLAMA_CPP_ENV = Path.home() / ".cache" / "onceupon" / "llamacpp-env"
LLAMA_CPP_INSTALL = (
    f"python3 -m venv {LLAMA_CPP_ENV} && CMAKE_ARGS=-DGGML_NATIVE=OFF {LLAMA_CPP_ENV}/bin/pip install "
    "'llama-cpp-python[server]' (it compiles llama.cpp: 30-60 min on 2 cores), or set ONCEUPON_LLAMACPP_PYTHON"
)


def llama_cpp_python() -> str | None:
    """The Python of an environment with llama-cpp-python's server, or None."""
    python = os.environ.get("ONCEUPON_LLAMACPP_PYTHON") or str(LLAMA_CPP_ENV / "bin" / "python")
    if not Path(python).is_file():
        return None
    found = subprocess.run([python, "-c", "import llama_cpp.server.app"], capture_output=True)
    return python if found.returncode == 0 else None


def start_llama_cpp_python(python: str, gguf: Path, log: Path | None = None, threads: int = 2) -> tuple[Process, str]:
    """llama-cpp-python's server on ``gguf``, serving it as model "judge"."""
    port = free_port()
    args = [
        python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "judge", "--host", "127.0.0.1",
        "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    return Process(args, f"{base}/v1/models", timeout=180, log=log), f"{base}/v1"


#: where tests look for llama.cpp's llama-server binary (ONCEUPON_LLAMA_SERVER: its path)
LLAMA_SERVER = Path.home() / ".cache" / "onceupon" / "llama-server"
LLAMA_SERVER_INSTALL = (
    "build llama.cpp's tools/server (cmake -B build -DGGML_NATIVE=OFF -DLLAMA_BUILD_SERVER=ON && "
    f"cmake --build build --target llama-server) and copy build/bin/llama-server to {LLAMA_SERVER}, "
    "or set ONCEUPON_LLAMA_SERVER"
)


def llama_server() -> str | None:
    """The llama-server binary, or None."""
    binary = Path(os.environ.get("ONCEUPON_LLAMA_SERVER") or LLAMA_SERVER)
    return str(binary) if binary.is_file() and os.access(binary, os.X_OK) else None


def start_llama_server(binary: str, gguf: Path, log: Path | None = None, threads: int = 2) -> tuple[Process, str]:
    """llama.cpp's llama-server on ``gguf``, serving it as model "judge"."""
    port = free_port()
    args = [
        binary, "-m", str(gguf), "--alias", "judge", "--host", "127.0.0.1", "--port", str(port), "-c", "4096",
        "-t", str(threads), "-np", "2", "--no-webui",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    return Process(args, f"{base}/v1/models", timeout=180, log=log), f"{base}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("--upstream", required=True)
    p.add_argument("--port", type=int, required=True)
    m = sub.add_parser("model")
    m.add_argument("dir", type=Path)
    lp = sub.add_parser("logprob-server")
    lp.add_argument("dir", type=Path)
    lp.add_argument("--port", type=int, required=True)
    g = sub.add_parser("garbage")
    g.add_argument("kind", choices=sorted(GARBAGE))
    g.add_argument("--port", type=int, required=True)
    g.add_argument("--models-ok", action="store_true")
    c = sub.add_parser("shared-cpu")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--work", type=float, required=True)
    f = sub.add_parser("freezing")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--answers", type=int, required=True)
    r = sub.add_parser("refusing")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--status", type=int, required=True)
    r.add_argument("--body", required=True)
    r.add_argument("--after", type=int, default=0)
    t = sub.add_parser("trickling")
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--every", type=float, required=True)
    t.add_argument("--start", choices=["models", "chat", "second-chat"], required=True)
    rd = sub.add_parser("redirecting")
    rd.add_argument("--port", type=int, required=True)
    rd.add_argument("--status", type=int, required=True)
    rd.add_argument("--start", choices=["models", "chat", "elsewhere"], required=True)
    args = parser.parse_args()
    if args.cmd == "trickling":
        run_trickling_server(args.port, args.every, args.start)
    elif args.cmd == "redirecting":
        run_redirecting_server(args.port, args.status, args.start)
    elif args.cmd == "freezing":
        run_freezing_server(args.port, args.answers)
    elif args.cmd == "refusing":
        run_refusing_server(args.port, args.status, args.body, args.after)
    elif args.cmd == "garbage":
        run_garbage_server(args.kind, args.port, args.models_ok)
    elif args.cmd == "shared-cpu":
        run_shared_cpu_server(args.port, args.work)
    elif args.cmd == "proxy":
        run_proxy(args.upstream, args.port)
    elif args.cmd == "logprob-server":
        run_logprob_server(args.dir, args.port)
    else:
        make_tiny_chat_model(args.dir)


if __name__ == "__main__":
    main()
