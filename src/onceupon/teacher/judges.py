"""When two teacher configs are the same judge.

A run trains with one teacher and may be rated afterwards by others (``onceupon evaluate RUN
--judge``); the report marks the judge that trained the run. Settings that only change how a
request is sent (server address, concurrency, timeouts, device) do not change the judge.
"""

from __future__ import annotations

#: teacher settings that change how a request is sent, not what the judge answers
OPERATIONAL = frozenset(
    {"base_url", "api_key_env", "concurrency", "timeout", "max_retries", "backoff", "max_backoff",
     "batch_size", "device", "dtype", "gpu_memory_utilization", "cache"}
)


def judge_config(teacher: dict) -> dict:
    """The settings of a teacher config (as a dict) that decide its ratings."""
    return {k: v for k, v in teacher.items() if k not in OPERATIONAL}


def same_judge(a: dict | None, b: dict | None) -> bool:
    """Whether two teacher configs describe the same judge (keys only one of them knows,
    e.g. settings added in a later version, are left out of the comparison)."""
    if not a or not b:
        return False
    a, b = judge_config(a), judge_config(b)
    return all(a[k] == b[k] for k in a.keys() & b.keys())
