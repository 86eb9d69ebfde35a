"""Shared test fixtures. Tests build their own tiny models and data; nothing is downloaded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Never reach for the Hugging Face Hub from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread, here and in every CLI process a test starts (they inherit it): the tests'
# models are tiny, and a second thread makes each step wait on the other core. On a 2-core
# machine shared with other jobs, one training step of the gpt2-micro student (29 x 64 tokens)
# took 0.04 s with one thread and 0.75 s with two. Set before torch is imported; a value the
# environment already gives is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run ``onceupon ARGS`` in a real subprocess; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "onceupon.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def cli():
    return run_cli


def assert_one_sentence(result: subprocess.CompletedProcess, *needles: str) -> str:
    """What a user who got something wrong must meet: exit code 2, no traceback, exactly one
    non-empty line ``error: ...`` on stderr holding every needle; returns that line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


TINY_TEXTS = [
    "Once upon a time, in a faraway land, there lived a little fox.",
    "The fox had a red box. She put a shiny stone in the box.",
    "One day the fox went to the forest and met a kind bear.",
    "The bear gave the fox a blue hat, and they became friends.",
    "They walked to the river and looked at the fish. The end.",
    "Let me tell you a long, magical tale about a girl named Mia.",
    "Mia found a key under the old tree. She opened the door with it.",
    "The cat moved the ball from the basket to the garden.",
]


def make_tiny_checkpoint(directory: Path, preset: str = "gpt2-micro", vocab_size: int = 400, seed: int = 0) -> Path:
    """A tiny untrained student (tokenizer + model) saved as an onceupon checkpoint."""
    import torch

    from onceupon.config import StudentConfig
    from onceupon.lifecycle.checkpoints import CheckpointMeta
    from onceupon.student.checkpoints import save_checkpoint
    from onceupon.student.model import build_student
    from onceupon.student.tokenizer import train_tokenizer

    torch.manual_seed(seed)
    tokenizer = train_tokenizer(TINY_TEXTS * 20, vocab_size=vocab_size, min_frequency=2)
    model = build_student(StudentConfig(preset=preset), tokenizer)
    meta = CheckpointMeta(name=directory.name, stage="pretrain", pretrain_words=0)
    return save_checkpoint(directory, model, tokenizer, meta)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Path of a tiny untrained GPT-2 checkpoint, built once per test session. Read-only."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoints" / "chck_0W")


# --------------------------------------------------------------------------- teacher (helper C)
@pytest.fixture(scope="session")
def tiny_teacher_model(tmp_path_factory) -> Path:
    """A tiny Llama chat model trained to answer rubric prompts with "2 3 1" (tests/http_servers.py)."""
    from http_servers import make_tiny_chat_model

    return make_tiny_chat_model(tmp_path_factory.mktemp("teacher") / "tiny-chat")


@pytest.fixture(scope="session")
def teacher_server(tiny_teacher_model, tmp_path_factory):
    """``transformers serve`` on the tiny chat model, on loopback; yields its base URL (…/v1)."""
    from http_servers import serve_model

    proc, url = serve_model(tiny_teacher_model, log=tmp_path_factory.mktemp("serve") / "serve.log")
    with proc:
        yield url
