"""What decides a rating: the teacher's fingerprint, and when two saved teacher configs are the same judge.

A rating depends on three things:

- the backend's ``identity``: backend, model (as the server names it), temperature,
  max_tokens, and the expected-score and constrained modes; each backend builds it;
- the rubric's ``hash``: criteria, the prompt template's text and the expected story length;
- three settings of the rubric teacher itself (:data:`PIPELINE_SETTINGS`): what an invalid
  answer becomes (``invalid_policy``, ``invalid_retries``) and which stories are too short to
  ask about (``min_words``).

:func:`fingerprint` is these three in one dict, and every record of what ratings were made
with uses it: the first line of ``onceupon rate``'s partial file, an evaluation judge's
summary (its directory is named from it), and the rating cache, which keys on its first two
parts only: it stores valid answers of the backend, which the pipeline settings do not
change (they decide what becomes of invalid answers and too-short stories, never stored).

A run's saved config.yaml has no built teacher (building one may need a server), so
:func:`same_judge` compares two saved teacher configs on the settings a fingerprint is made
from (:data:`FINGERPRINT_SETTINGS`). The rest (:data:`OPERATIONAL`) only change how a request
is sent: server address, concurrency, timeouts, device, engine memory.
"""

from __future__ import annotations

from collections.abc import Mapping

#: the rubric teacher's own settings that change a rating
PIPELINE_SETTINGS = ("invalid_policy", "invalid_retries", "min_words")

#: the teacher config settings a fingerprint is made from: the backend's identity, the
#: rubric's hash and the pipeline settings
FINGERPRINT_SETTINGS = frozenset(
    {"backend", "model", "server", "temperature", "max_tokens", "expected_score", "top_logprobs", "constrained",
     "criteria", "template", "prompt", "expected_words", *PIPELINE_SETTINGS}
)

#: teacher settings that change how a request is sent, not what the judge answers (with
#: FINGERPRINT_SETTINGS, every teacher setting: tests/test_teacher_pipeline.py checks it)
OPERATIONAL = frozenset(
    {"base_url", "api_key_env", "concurrency", "adapt_concurrency", "timeout", "patience", "max_retries", "backoff", "max_backoff",
     "batch_size", "device", "dtype", "gpu_memory_utilization", "enforce_eager", "max_model_len", "kv_cache_gib", "cache"}
)


def fingerprint(identity: str, rubric_hash: str, settings: Mapping) -> dict:
    """What decides a rating (see the module docstring); ``settings`` holds at least the
    :data:`PIPELINE_SETTINGS` (a teacher config as a dict, or the teacher's own attributes)."""
    return {"teacher": identity, "rubric": rubric_hash, "settings": {k: settings[k] for k in PIPELINE_SETTINGS}}


def same_judge(a: dict | None, b: dict | None) -> bool:
    """Whether two teacher configs (as dicts) describe the same judge; settings only one of
    them knows (added in a later version) are left out of the comparison."""
    if not a or not b:
        return False
    return all(a[k] == b[k] for k in FINGERPRINT_SETTINGS & a.keys() & b.keys())
