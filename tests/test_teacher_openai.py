"""The openai backend against real OpenAI-compatible HTTP servers on loopback.

``transformers serve`` runs a tiny chat model trained to answer "2 3 1" (session fixture
``teacher_server``); a real fault-injecting proxy process (tests/http_servers.py) sits in
front of it where a test needs 5xx, 429, slow answers or dropped connections. Stories ask for
their faults by carrying a marker, so each assertion knows exactly what each story went through.
"""

import asyncio
import json
import re
import socket
import threading
import time
import urllib.request

import pytest

from conftest import assert_one_sentence, run_cli
from http_servers import free_port, proxy_stats, start_proxy
from onceupon.config import TeacherConfig
from onceupon.errors import UserError
from onceupon.teacher.base import Outcome, Story, TeacherUnavailable
from onceupon.teacher.factory import build_teacher

PROMPT = "Let me tell you a long, magical tale. Once upon a time, in a faraway land,"
EXPECTED = {"readability": 2, "coherence": 3, "creativity": 1}


def story(text: str, i: int = 0) -> Story:
    return Story(PROMPT, f"there lived a fox number {i}. {text} The fox went home.", id=str(i))


def config(url: str, **kw) -> TeacherConfig:
    kw = {"backoff": 0.05, "max_backoff": 0.5, "timeout": 30, "concurrency": 4, **kw}
    return TeacherConfig(backend="openai", base_url=url, **kw)


@pytest.fixture(scope="module")
def proxy(teacher_server, tmp_path_factory):
    proc, url = start_proxy(teacher_server, log=tmp_path_factory.mktemp("proxy") / "proxy.log")
    with proc:
        yield url


def test_rates_through_a_real_server(teacher_server, tiny_teacher_model):
    with build_teacher(config(teacher_server)) as teacher:
        assert teacher.identity.startswith(f"openai:{tiny_teacher_model}")  # the server's only model
        ratings = teacher.rate([story("It found a key.", i) for i in range(6)])
    assert len(ratings) == 6
    for r in ratings:
        assert r.valid, r.error
        assert r.raw.strip() == "2 3 1"
        assert r.scores == EXPECTED and r.score == pytest.approx(6 / 9) and r.attempts == 1


def test_faults_are_retried_and_counted_and_nothing_is_lost_or_doubled(proxy):
    # story i suffers (i % 4) injected 503s before the server answers
    stories = [story(f"[[fault:503x{i % 4}:s{i}]]", i) for i in range(12)]
    stories[1] = story("[[fault:429x2]] tag-429", 1)
    stories[2] = story("[[fault:dropx1]] tag-drop", 2)
    with build_teacher(config(proxy, max_retries=4)) as teacher:
        before = proxy_stats(proxy).get("*", {}).get("forwarded", 0)  # after the start-up request
        ratings = teacher.rate(stories)
        stats = teacher.backend.stats
    assert len(ratings) == len(stories)
    expected_attempts = [1 + i % 4 for i in range(12)]
    expected_attempts[1], expected_attempts[2] = 3, 2
    assert [r.attempts for r in ratings] == expected_attempts  # in story order
    assert all(r.valid and r.scores == EXPECTED for r in ratings)
    after = proxy_stats(proxy)
    assert after["*"]["forwarded"] - before == 12  # each story reached the model exactly once
    assert stats["requests"] == sum(expected_attempts) and stats["retries"] == sum(expected_attempts) - 12
    assert after["[[fault:429x2]]"] == {"received": 3, "forwarded": 1}
    assert after["[[fault:503x3:s7]]"] == {"received": 4, "forwarded": 1}


def test_a_slow_answer_times_out_and_is_retried(proxy):
    with build_teacher(config(proxy, timeout=1.0, max_retries=2)) as teacher:
        (r,) = teacher.rate([story("[[fault:delay3x1]] slow one", 0)])
    assert r.valid and r.scores == EXPECTED
    assert r.attempts == 2
    assert proxy_stats(proxy)["[[fault:delay3x1]]"]["received"] == 2


def test_a_story_that_keeps_failing_is_invalid_while_the_rest_are_rated(proxy):
    stories = [story("[[fault:500x9]] doomed", 0), story("fine one", 1)]
    with build_teacher(config(proxy, max_retries=2)) as teacher:
        doomed, fine = teacher.rate(stories)
    assert not doomed.valid and doomed.score is None and doomed.attempts == 3
    assert doomed.outcome is Outcome.FAILED and doomed.request_failed and doomed.answers == [] and "HTTP 500" in doomed.error
    assert fine.valid and fine.attempts == 1


def test_unparseable_answers_are_invalid_and_follow_the_policy(teacher_server):
    # max_tokens=1 cuts the model's "2 3 1" to "2": a real answer with too few numbers
    stories = [story("short answer", i) for i in range(3)]
    with build_teacher(config(teacher_server, max_tokens=1)) as teacher:
        ratings = teacher.rate(stories)
    assert all(not r.valid and r.raw.strip() == "2" and "too few" in r.error and r.score is None for r in ratings)
    with build_teacher(config(teacher_server, max_tokens=1, invalid_policy="zero")) as teacher:
        assert [r.score for r in teacher.rate(stories)] == [0.0, 0.0, 0.0]
    with build_teacher(config(teacher_server, max_tokens=1, invalid_policy="retry", invalid_retries=2)) as teacher:
        ratings = teacher.rate(stories)
        assert teacher.backend.stats["requests"] == 9
    assert all(not r.valid and r.attempts == 3 for r in ratings)


def test_unreachable_server_is_a_clear_error_at_start():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(UserError, match="Cannot reach the teacher server"):
        build_teacher(config(url))


def test_server_going_away_mid_run_stops_with_teacher_unavailable(teacher_server, tmp_path):
    proc, url = start_proxy(teacher_server, log=tmp_path / "p.log")
    with proc:
        teacher = build_teacher(config(url, max_retries=1))
        assert teacher.rate([story("one", 0)])[0].valid
    # the proxy process is gone now: connections are refused
    with pytest.raises(TeacherUnavailable, match="stopped answering"):
        teacher.rate([story("two", 1), story("three", 2)])
    teacher.close()


def test_wrong_model_and_missing_key_are_user_errors(teacher_server, monkeypatch):
    with pytest.raises(UserError, match="does not serve 'no-such-model'"):
        build_teacher(config(teacher_server, model="no-such-model"))
    monkeypatch.delenv("ONCEUPON_TEST_KEY", raising=False)
    with pytest.raises(UserError, match="ONCEUPON_TEST_KEY"):
        build_teacher(config(teacher_server, api_key_env="ONCEUPON_TEST_KEY"))


def test_api_key_is_used_but_never_shown(teacher_server, monkeypatch):
    secret = "sk-test-" + "x7" * 12
    monkeypatch.setenv("ONCEUPON_TEST_KEY", secret)
    cfg = config(teacher_server, api_key_env="ONCEUPON_TEST_KEY")
    with build_teacher(cfg) as teacher:
        (r,) = teacher.rate([story("key", 0)])
        shown = [teacher.identity, repr(r), str(r.to_dict()), cfg.model_dump_json(), str(teacher.backend.__dict__.get("stats"))]
    assert r.valid
    assert not any(secret in s for s in shown)


def test_rate_works_from_worker_threads_and_inside_an_event_loop(teacher_server):
    with build_teacher(config(teacher_server)) as teacher:
        results: dict[str, list] = {}

        def worker(name):
            results[name] = teacher.rate([story(name, 0)])

        threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        async def inside_a_loop():
            return teacher.rate([story("async caller", 0)])

        results["loop"] = asyncio.run(inside_a_loop())
    assert sorted(results) == ["loop", "t0", "t1"]
    assert all(rs[0].valid for rs in results.values())


def test_expected_score_mode_needs_a_server_with_logprobs(teacher_server):
    # transformers serve does not return log-probabilities: say so at start, never fake them
    with pytest.raises(UserError, match="log-probabilities"):
        build_teacher(config(teacher_server, expected_score=True))


def test_a_port_that_accepts_but_never_answers_times_out(tmp_path):
    # a raw socket that accepts connections and says nothing: the probe must give up
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        with pytest.raises(UserError, match="Cannot reach"):
            build_teacher(config(url, timeout=0.3))


@pytest.mark.slow  # starts one more server process (~25 s on a busy 2-core machine)
def test_expected_score_mode_over_http_with_logprobs(tiny_teacher_model, tmp_path):
    from http_servers import start_logprob_server

    proc, url = start_logprob_server(tiny_teacher_model, log=tmp_path / "lp.log")
    with proc, build_teacher(config(url, expected_score=True, top_logprobs=5)) as teacher:
        assert teacher.identity.endswith("|expected")
        ratings = teacher.rate([story("expected", i) for i in range(2)])
    for r in ratings:
        assert r.valid and r.extra["expected"] is True and r.extra["sampled"] == EXPECTED
        assert all(isinstance(v, float) and abs(v - EXPECTED[k]) < 0.5 for k, v in r.scores.items())
        assert r.score == pytest.approx(sum(r.scores.values()) / 9)


# --------------------------------------------------------------------------- replies that are not chat completions
def test_html_text_and_broken_json_replies_are_retried_like_failed_requests(proxy):
    stories = [
        story("[[fault:htmlx2]] tag-html", 0),
        story("[[fault:textx1]] tag-text", 1),
        story("[[fault:badjsonx1]] tag-json", 2),
        story("[[fault:htmlx9:doomed]] never a completion", 3),
        story("plain", 4),
    ]
    with build_teacher(config(proxy, max_retries=2)) as teacher:
        ratings = teacher.rate(stories)
        stats = dict(teacher.backend.stats)
    assert [r.attempts for r in ratings] == [3, 2, 2, 3, 1]
    assert all(r.valid and r.scores == EXPECTED and r.outcome is Outcome.ANSWERED for r in ratings[:3] + ratings[4:])
    doomed = ratings[3]
    assert not doomed.valid and doomed.score is None and doomed.outcome is Outcome.FAILED and doomed.answers == []
    assert "HTML page" in doomed.error and doomed.raw == ""
    assert stats["retries"] == 2 + 1 + 1 + 2 and stats["failed"] == 1


@pytest.mark.parametrize("kind, described", [("html", "an HTML page"), ("text", "plain text"), ("badjson", "malformed JSON")])
def test_a_server_that_never_answers_in_json_is_teacher_unavailable(kind, described):
    from http_servers import start_garbage_server

    proc, url = start_garbage_server(kind, models_ok=True)  # the start-up check passes; every rating meets garbage
    with proc, build_teacher(config(url, max_retries=1)) as teacher:
        with pytest.raises(TeacherUnavailable) as caught:
            teacher.rate([story("one", 0), story("two", 1)])
    message = str(caught.value)
    assert "stopped answering" in message and described in message and "\n" not in message


@pytest.mark.parametrize("kind, described", [("html", "an HTML page"), ("text", "plain text"), ("badjson", "malformed JSON")])
def test_a_server_that_is_not_openai_is_a_user_error_at_start(kind, described):
    from http_servers import start_garbage_server

    proc, url = start_garbage_server(kind)
    with proc, pytest.raises(UserError) as caught:
        build_teacher(config(url))
    assert "does not speak the OpenAI API" in str(caught.value) and described in str(caught.value)


# --------------------------------------------------------------------------- adaptive concurrency
def test_adaptive_limit_grows_while_answers_stay_fast_and_cuts_on_overload():
    from onceupon.teacher.concurrency import AdaptiveLimit

    limit = AdaptiveLimit(16)
    assert limit.allowed == 1  # starts low: a slow server is never flooded first
    for _ in range(20):
        limit._adapt(started=0.0, latency=1.0, outcome="answered")
    assert limit.allowed == 6  # 1/limit per fast answer: one more per round trip
    grown = limit.limit
    limit._adapt(started=0.0, latency=5.0, outcome="answered")  # the average rises past 2x the baseline
    assert limit.limit < grown
    limit._adapt(started=1.0, latency=1.0, outcome="overloaded")  # timeout / 429 / 5xx: halve
    assert limit.allowed == 3
    limit._adapt(started=0.5, latency=1.0, outcome="overloaded")  # started before that cut: no second cut
    assert limit.allowed == 3
    # answers that vary at any load (a hosted API) are no sign of queueing: the limit still grows
    noisy = AdaptiveLimit(16)
    for i in range(400):
        noisy._adapt(started=0.0, latency=(0.5, 1.5)[i % 2], outcome="answered")
    assert noisy.allowed == 16
    # answers that take as long as the number in flight (one shared CPU): it stays low
    shared = AdaptiveLimit(16)
    for _ in range(200):
        shared._adapt(started=0.0, latency=1.0 * shared.allowed, outcome="answered")
    assert shared.allowed <= 3
    fixed = AdaptiveLimit(16, adaptive=False)
    fixed._adapt(started=0.0, latency=1.0, outcome="overloaded")
    assert fixed.allowed == 16


def test_a_slow_shared_server_is_not_flooded_into_timeouts():
    # The server shares one "CPU" between the requests it holds: 8 in flight take 8 x 0.15 s =
    # 1.2 s each, past the 1 s timeout, so a fixed 8 in flight times out again and again.
    # Adapting keeps it at a few in flight, and every story is rated without a retry storm.
    from http_servers import proxy_stats, start_shared_cpu_server

    proc, url = start_shared_cpu_server(work=0.15)
    with proc:
        with build_teacher(config(url, concurrency=8, timeout=1.0, max_retries=3)) as teacher:
            ratings = teacher.rate([story("shared", i) for i in range(16)])
            stats = dict(teacher.backend.stats)
        server = proxy_stats(url)
    assert all(r.valid and r.scores == EXPECTED for r in ratings)
    assert stats["retries"] <= 2 and server["most"] <= 5
    # the same server with a fixed 8 in flight: every request times out, no answer comes
    # back at all, and the run stops once teacher.patience (2 x timeout) has passed
    proc, url = start_shared_cpu_server(work=0.15)
    with proc, build_teacher(config(url, concurrency=8, timeout=1.0, max_retries=1, adapt_concurrency=False)) as teacher:
        with pytest.raises(TeacherUnavailable, match="stopped answering: no answer for 2 s"):
            teacher.rate([story("shared", i) for i in range(16)])


def test_a_rejected_request_says_the_servers_reason_in_fastapis_shape_too():
    """FastAPI servers (``transformers serve``) answer a bad request with {"detail": ...}, not
    {"error": {"message": ...}}: the rating's error says the server's words, not only "HTTP 422"."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import openai

    from onceupon.teacher.backends.openai import _reason

    bodies = [
        {"detail": "Unsupported parameter: top_k"},
        {"detail": [{"loc": ["body", "messages"], "msg": "Field required", "type": "missing"}]},
        {"error": {"message": "model not loaded"}},
    ]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            data = json.dumps(bodies[int(self.path.split("/")[1])]).encode()
            self.send_response(422)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    reasons = []
    try:
        for i in range(len(bodies)):
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_port}/{i}/v1", api_key="x", max_retries=0)
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            reasons.append(_reason(caught.value))
    finally:
        server.shutdown()
    assert reasons == ["HTTP 422: Unsupported parameter: top_k", "HTTP 422: Field required", "HTTP 422: model not loaded"]


# --------------------------------------------------------------------------- a stalled server, a refused request
PAPER_BATCH = 360  # stories per RL step in the paper
FROZEN = {"timeout": 1.0, "patience": 2.0, "max_retries": 5, "concurrency": 16}  # the paper's 60 s / 6 attempts, scaled down
CLI_ENV = {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
MARGIN = 2.5  # seconds past patience for waking up, cancelling and (for a command) exiting, on a busy machine


def test_a_server_that_freezes_mid_batch_stops_the_call_within_patience():
    # 360 stories, the server answers 100 and then accepts requests and never answers: waiting
    # out each story's own timeouts (6 attempts of 1 s, at most 16 at a time) would take
    # minutes; the call stops within teacher.patience of the last answer, with the 100 kept.
    from http_servers import proxy_stats, start_freezing_server

    proc, url = start_freezing_server(answers=1 + 100)  # the start-up request, then 100 ratings
    rated: list = []
    statuses: list[str] = []
    with proc, build_teacher(config(url, **FROZEN)) as teacher:
        caught: list[BaseException] = []

        def rate() -> None:
            try:
                teacher.rate([story("frozen", i) for i in range(PAPER_BATCH)], on_rated=lambda i, r: rated.append(r))
            except BaseException as e:
                caught.append(e)

        worker = threading.Thread(target=rate)
        worker.start()
        while worker.is_alive() and proxy_stats(url)["frozen_at"] is None:
            time.sleep(0.05)
        time.sleep(1.3)  # frozen for a while: the progress line says how long since the last answer
        statuses.append(teacher.status())
        worker.join(timeout=60)
        stopped = time.time()
        server = proxy_stats(url)
    assert not worker.is_alive() and len(caught) == 1 and isinstance(caught[0], TeacherUnavailable), caught
    assert stopped - server["frozen_at"] <= FROZEN["patience"] + MARGIN, stopped - server["frozen_at"]
    message = str(caught[0])
    assert "stopped answering" in message and "teacher.patience" in message and "\n" not in message
    assert len(rated) == 100 and all(r.valid and r.scores == EXPECTED for r in rated)
    found = re.fullmatch(r"(\d+) in flight \(limit \d+\), \d+ retries, last answer (\d+) s ago", statuses[0])
    assert found and int(found.group(1)) >= 1 and int(found.group(2)) >= 1, statuses


def test_rate_keeps_what_was_rated_when_the_server_freezes_and_continues_after(tmp_path):
    """The same through the real `onceupon rate`: exit 2 and one sentence within patience,
    the ratings already made kept in the partial file, and the same command continues."""
    from http_servers import proxy_stats, start_freezing_server

    stories = tmp_path / "stories.jsonl"
    stories.write_text("".join(
        json.dumps({"id": f"s{i}", "prompt": PROMPT, "continuation": f"there lived a fox number {i}. It found a key."}) + "\n"
        for i in range(PAPER_BATCH)
    ))
    proc, url = start_freezing_server(answers=1 + 100)
    # 16 in flight from the start (not adapted up from 1): the 360 requests take less time
    fixed = {"adapt_concurrency": "false", "backoff": 0.05}
    settings = [f"teacher.{k}={v}" for k, v in {**FROZEN, **fixed, "backend": "openai", "base_url": url}.items()]
    args = ["rate", str(stories)] + [a for s in settings for a in ("--set", s)]
    with proc:
        result = run_cli(*args, env=CLI_ENV)
        ended = time.time()
        server = proxy_stats(url)
        line = assert_one_sentence(result, "stopped answering", "teacher.patience", "100 ratings so far are kept")
        assert ended - server["frozen_at"] <= FROZEN["patience"] + MARGIN + 2, (ended - server["frozen_at"], line)
        partial = tmp_path / "stories.ratings.jsonl.partial"
        kept = [json.loads(l) for l in partial.read_text().splitlines()[1:]]
        assert len(kept) == 100 and all(r["valid"] for r in kept)
        with urllib.request.urlopen(url.replace("/v1", "/_thaw"), timeout=5):
            pass
        again = run_cli(*args, env=CLI_ENV)
        answered = proxy_stats(url)["answered"] - server["answered"]
    assert again.returncode == 0, again.stderr
    out = [json.loads(l) for l in (tmp_path / "stories.ratings.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [f"s{i}" for i in range(PAPER_BATCH)] and all(r["valid"] for r in out)
    assert answered == 1 + PAPER_BATCH - 100 and not partial.exists()  # the start-up request and the rest only


# llama-cpp-python's server answers a request its schema refuses (here response_format type
# json_schema) with HTTP 500 and the validation error as the message
LLAMA_CPP_PYTHON_500 = json.dumps({"error": {
    "message": "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n  Input should be 'text' or "
    "'json_object' [type=literal_error, input_value='json_schema', input_type=str]",
    "type": "internal_server_error", "param": None, "code": None,
}})


@pytest.mark.parametrize("status, body, said", [
    (500, LLAMA_CPP_PYTHON_500, "HTTP 500: 1 validation error"),
    (400, json.dumps({"error": {"message": "grammar and json_schema cannot be used together"}}), "HTTP 400: grammar"),
    (422, json.dumps({"detail": [{"msg": "Extra inputs are not permitted"}]}), "HTTP 422: Extra inputs"),
])
def test_a_request_the_server_refuses_is_one_sentence_at_once(status, body, said):
    from http_servers import proxy_stats, start_refusing_server

    proc, url = start_refusing_server(status, body)  # refuses even the start-up request
    with proc:
        with pytest.raises(UserError) as caught:
            build_teacher(config(url))
        assert proxy_stats(url)["requests"] == 1  # not retried
    message = str(caught.value)
    assert "refuses onceupon's requests" in message and said in message and "\n" not in message
    # the same refusals during rating (the start-up request passed): each story asked once,
    # and a batch that is refused whole stops with one sentence
    proc, url = start_refusing_server(status, body, after=1)
    with proc, build_teacher(config(url, max_retries=5)) as teacher:
        with pytest.raises(TeacherUnavailable, match="refuses onceupon's requests") as caught:
            teacher.rate([story("refused", i) for i in range(8)])
        assert proxy_stats(url)["requests"] == 1 + 8 and teacher.backend.stats["retries"] == 0
    assert said in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("said", ["CUDA out of memory", "CUDA error: operation not supported on this device"])
def test_a_500_that_blames_the_server_is_still_retried(said):
    # 'not supported' says nothing about whose fault it is: a server-side failure worded so is retried
    from http_servers import proxy_stats, start_refusing_server

    proc, url = start_refusing_server(500, json.dumps({"error": {"message": said}}), after=1)
    with proc, build_teacher(config(url, max_retries=2)) as teacher:
        with pytest.raises(TeacherUnavailable, match="stopped answering"):
            teacher.rate([story("oom", 0)])
        assert proxy_stats(url)["requests"] == 1 + 3


# --------------------------------------------------------------------------- deadlines and redirects
TRICKLE = {"timeout": 0.5, "patience": 1.5, "backoff": 0.05, "max_backoff": 0.2}  # a small deadline
EVERY = 0.1  # seconds between the bytes: well inside the 0.5 s per-read timeout, so only a deadline stops it


def test_a_server_that_trickles_from_the_start_is_one_sentence_within_the_deadline():
    """Headers, then a byte at a time: each read is quick, so the HTTP client's per-read timeout
    never fires, and the start-up check (`onceupon rate`, `interact`, ...) used to wait forever.
    Now every request has a deadline for all of it, and the start ends with one sentence
    naming it."""
    from http_servers import start_trickling_server

    proc, url = start_trickling_server(EVERY, "models")
    caught: list[BaseException] = []

    def start() -> None:
        try:
            build_teacher(config(url, **TRICKLE)).close()
        except BaseException as e:
            caught.append(e)

    with proc:
        worker = threading.Thread(target=start, daemon=True)
        worker.start()
        worker.join(timeout=60)  # (the old code: never ended)
    assert not worker.is_alive() and len(caught) == 1 and isinstance(caught[0], UserError), caught
    message = str(caught[0])
    assert "Cannot reach" in message and "no complete answer within 0.5 s (teacher.timeout)" in message, message


def test_a_server_that_trickles_its_answers_is_stopped_by_patience():
    """The start-up request passes; every rating request trickles. Each one meets its deadline,
    is retried like a timeout, and with no answer for teacher.patience the call stops, saying
    why its requests failed."""
    from http_servers import proxy_stats, start_trickling_server

    proc, url = start_trickling_server(EVERY, "second-chat")
    caught: list[BaseException] = []
    with proc, build_teacher(config(url, **TRICKLE)) as teacher:
        def rate() -> None:
            try:
                teacher.rate([story("trickled", i) for i in range(4)])
            except BaseException as e:
                caught.append(e)

        worker = threading.Thread(target=rate, daemon=True)
        worker.start()
        worker.join(timeout=60)  # (the old code: the call never ended)
        requests = proxy_stats(url)["requests"]
    assert not worker.is_alive() and len(caught) == 1 and isinstance(caught[0], TeacherUnavailable), caught
    message = str(caught[0])
    assert "teacher.patience" in message and "no complete answer within 0.5 s (teacher.timeout)" in message, message
    assert requests > 2  # the trickled requests were given up and retried, not waited out


@pytest.mark.parametrize("status", [301, 302])
def test_a_redirect_that_turns_the_post_into_a_get_is_named(status):
    """A 301/302 makes the HTTP client repeat a POST as a GET, which the chat endpoint answers
    with 404: the sentence says so, and where the server sent it, instead of a bare 404."""
    from http_servers import start_redirecting_server

    proc, url = start_redirecting_server(status, "chat")
    with proc, pytest.raises(UserError) as refused:
        build_teacher(config(url))
    message = str(refused.value)
    moved = url.replace("/v1", "/moved/v1/chat/completions")
    assert f"redirects (HTTP {status}) to {moved}, where the POST became a GET" in message, message
    assert "set teacher.base_url" in message and "\n" not in message


@pytest.mark.parametrize("status, start", [(307, "chat"), (308, "models")])
def test_a_redirect_that_keeps_the_method_is_followed(status, start):
    from http_servers import start_redirecting_server

    proc, url = start_redirecting_server(status, start)
    with proc, build_teacher(config(url)) as teacher:
        ratings = teacher.rate([story("moved", i) for i in range(3)])
    assert all(r.valid and r.scores == EXPECTED for r in ratings)


def test_a_redirect_to_another_address_is_named_not_taken_for_a_wrong_key(monkeypatch):
    """The HTTP client does not send the API key on to another origin, so the server's 401
    there would read as 'rejected the API key'; the sentence names the redirect instead."""
    from http_servers import start_redirecting_server

    monkeypatch.setenv("ONCEUPON_TEST_KEY", "sk-test")
    proc, url = start_redirecting_server(307, "elsewhere")
    with proc, pytest.raises(UserError) as refused:
        build_teacher(config(url, api_key_env="ONCEUPON_TEST_KEY"))
    message = str(refused.value)
    assert "redirects (HTTP 307) to http://127.0.0.1:" in message and "answered with HTTP 401" in message, message
    assert "rejected the API key" not in message and "sk-test" not in message and "\n" not in message
