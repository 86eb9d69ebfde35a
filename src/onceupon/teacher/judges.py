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

import json
from collections.abc import Mapping
from typing import Any

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


def teacher_key(teacher: Any) -> dict:
    """A built teacher's :func:`fingerprint` (the rubric teacher keeps one), else its identity
    in the same place, as it reads back from a JSON file: what a kept rating must have been
    made by to be reused (interact/unfinished.py), and how the watch tells its held-out judge
    from the trained-on teacher."""
    key = getattr(teacher, "fingerprint", None) or {"teacher": getattr(teacher, "identity", type(teacher).__name__)}
    return json.loads(json.dumps(key))


def same_judge(a: dict | None, b: dict | None) -> bool:
    """Whether two teacher configs (as dicts) describe the same judge; settings only one of
    them knows (added in a later version) are left out of the comparison."""
    if not a or not b:
        return False
    return all(a[k] == b[k] for k in FINGERPRINT_SETTINGS & a.keys() & b.keys())


def labels(judges: list[Mapping]) -> list[str]:
    """A header per judge, distinct when the judges are: the backend's identity (model and
    settings), and, for judges sharing one, what tells them apart, in this order: the prompt
    (``prompt=example``, or the template file's name), the rubric's hash, the pipeline settings
    that differ, and last a number. ``judges``: summaries as evaluations save them (``teacher``,
    optional ``rubric`` and ``teacher_config``)."""
    out = [str(j.get("teacher") or "?") for j in judges]

    def prompt(j: Mapping) -> str | None:
        config = j.get("teacher_config") or {}
        if config.get("template"):
            return "prompt " + str(config["template"]).replace("\\", "/").rsplit("/", 1)[-1]
        return f"prompt={config['prompt']}" if config.get("prompt") else None

    def rubric(j: Mapping) -> str | None:
        return f"rubric {str(j['rubric'])[:8]}" if j.get("rubric") else None

    def settings(j: Mapping, group: list[int]) -> str | None:  # only those that differ within the group
        configs = [judges[i].get("teacher_config") or {} for i in group]
        differ = [k for k in PIPELINE_SETTINGS if len({repr(c.get(k)) for c in configs}) > 1]
        config = j.get("teacher_config") or {}
        return ", ".join(f"{k}={config.get(k)}" for k in differ) or None

    for part in (prompt, rubric, settings):
        for label in {x for x in out if out.count(x) > 1}:
            group = [i for i, x in enumerate(out) if x == label]
            parts = [part(judges[i], group) if part is settings else part(judges[i]) for i in group]
            if len(set(parts)) > 1:  # this part tells some of them apart: add it to all of the group
                for i, p in zip(group, parts):
                    out[i] = f"{label} ({p or 'default'})"
    for label in {x for x in out if out.count(x) > 1}:  # alike in everything saved: number them
        for n, i in enumerate([i for i, x in enumerate(out) if x == label], 1):
            out[i] = f"{label} #{n}"
    return out
