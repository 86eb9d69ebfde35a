"""``build_teacher(cfg)``: the one way every stage gets a teacher.

Backends are imported only when selected, so the heuristic default needs neither a server
nor a GPU library, and a missing optional dependency (vllm, gguf) is a clear error only for
those who ask for it.
"""

from __future__ import annotations

from onceupon.config import TeacherConfig
from onceupon.teacher.base import Backend
from onceupon.teacher.cache import RatingCache
from onceupon.teacher.pipeline import RubricTeacher
from onceupon.teacher.rubric import Rubric


def build_backend(cfg: TeacherConfig, rubric: Rubric) -> Backend:
    if cfg.backend == "heuristic":
        from onceupon.teacher.backends.heuristic import HeuristicBackend

        return HeuristicBackend(rubric)
    if cfg.backend == "openai":
        from onceupon.teacher.backends.openai import OpenAIBackend

        return OpenAIBackend(cfg, rubric)
    if cfg.backend == "transformers":
        from onceupon.teacher.backends.transformers import TransformersBackend

        return TransformersBackend(cfg, rubric)
    if cfg.backend == "vllm":
        from onceupon.teacher.backends.vllm import VLLMBackend

        return VLLMBackend(cfg, rubric)
    raise ValueError(f"unknown teacher backend {cfg.backend!r}")  # config validation rules this out


def build_teacher(cfg: TeacherConfig | None = None) -> RubricTeacher:
    """A ready teacher for ``cfg`` (default: the offline heuristic with the paper's rubric).

    Raises UserError when the configuration cannot work (unreachable server, missing model,
    missing optional package). Call ``close()`` (or use ``with``) when done.
    """
    cfg = cfg or TeacherConfig()
    rubric = Rubric.from_config(cfg)
    teacher = RubricTeacher(
        build_backend(cfg, rubric),
        rubric,
        invalid_policy=cfg.invalid_policy,
        invalid_retries=cfg.invalid_retries,
        min_words=cfg.min_words,
    )
    if cfg.cache:
        teacher.cache = RatingCache(cfg.cache, teacher.fingerprint)
    return teacher
