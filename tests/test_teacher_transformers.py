"""The transformers backend: a real tiny chat model loaded in-process, batched."""

import pytest

from onceupon.config import TeacherConfig
from onceupon.errors import UserError
from onceupon.teacher.base import Story
from onceupon.teacher.factory import build_teacher

PROMPT = "Once upon a time, in a faraway land,"
EXPECTED = {"readability": 2, "coherence": 3, "creativity": 1}


def stories(n):
    return [Story(PROMPT, f"there lived fox number {i}. It found a key and opened a door.", id=str(i)) for i in range(n)]


def test_rates_in_batches_with_a_local_model(tiny_teacher_model):
    cfg = TeacherConfig(backend="transformers", model=str(tiny_teacher_model), batch_size=2, device="cpu")
    with build_teacher(cfg) as teacher:
        assert teacher.identity.startswith("transformers:")
        ratings = teacher.rate(stories(5))  # 3 batches, the last one short
    assert len(ratings) == 5
    assert all(r.valid and r.scores == EXPECTED and r.raw.strip() == "2 3 1" for r in ratings), [r.raw for r in ratings]


def test_expected_score_mode_gives_probability_weighted_scores(tiny_teacher_model):
    cfg = TeacherConfig(backend="transformers", model=str(tiny_teacher_model), expected_score=True, device="cpu", temperature=0)
    with build_teacher(cfg) as teacher:
        (r,) = teacher.rate(stories(1))
    assert r.valid and r.extra["expected"] is True and r.extra["sampled"] == EXPECTED
    for name, sampled in EXPECTED.items():
        value = r.scores[name]
        assert isinstance(value, float) and 0.0 <= value <= 3.0
        assert abs(value - sampled) < 0.5  # a well-trained answer: most mass on the sampled digit
    assert r.score == pytest.approx(sum(r.scores.values()) / 9)


def test_missing_model_and_missing_gguf_package_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_teacher(TeacherConfig(backend="transformers", model=str(tmp_path / "nope")))
    with pytest.raises(UserError, match="needs teacher.model"):
        build_teacher(TeacherConfig(backend="transformers"))
    gguf = tmp_path / "teacher.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    try:
        import gguf  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install gguf"):
            build_teacher(TeacherConfig(backend="transformers", model=str(gguf)))
    else:  # with the package present, a broken file is still a clear error
        with pytest.raises(UserError, match="Cannot load"):
            build_teacher(TeacherConfig(backend="transformers", model=str(gguf)))


def test_vllm_backend_is_a_clear_error_without_vllm_or_model():
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(UserError, match="pip install 'onceupon\\[vllm\\]'"):
            build_teacher(TeacherConfig(backend="vllm", model="meta-llama/Llama-3.1-8B-Instruct"))
    else:
        with pytest.raises(UserError, match="needs teacher.model"):
            build_teacher(TeacherConfig(backend="vllm"))
