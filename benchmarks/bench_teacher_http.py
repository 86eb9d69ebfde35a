"""Teacher throughput over HTTP: adaptive requests in flight (the default) vs fixed numbers.

Starts a real ``transformers serve`` on loopback (tests/http_servers.py: a tiny chat model
trained to answer "2 3 1", or ``--model DIR`` for your own), or uses ``--base-url`` for a
server you run (e.g. ``vllm serve``), or ``--server shared-cpu`` for a simulated slow teacher
whose requests share one CPU (n in flight each take n times longer). Then it rates the same
stories through the openai backend with the default settings (adaptive, at most
``teacher.concurrency`` in flight) and with each fixed number of requests in flight from
``--fixed``, in one run, and prints for each: ratings/s, the longest time without a finished
rating (what a user watching the progress line waits for), retries and failed requests; then
the default's ratings/s as a ratio of the best fixed setting's. The settings take turns in
``--rounds`` rounds of stories (on a shared machine the load drifts; taking turns spreads the
drift over all of them); each setting keeps one teacher for all its rounds, as a real run
does. No cache, so every run does the full work.

    python benchmarks/bench_teacher_http.py                       # tiny model, 200 stories
    python benchmarks/bench_teacher_http.py --timeout 5           # a timeout the server can miss
    python benchmarks/bench_teacher_http.py --server shared-cpu --work 0.2 --timeout 2
    python benchmarks/bench_teacher_http.py --base-url http://127.0.0.1:8000/v1 --fixed 1,8,32,64

``--server frozen`` measures something else: how long a rating call takes to give up on a
server that answers ``--answers`` requests and then freezes (accepts requests, never answers),
with ``--stories`` stories, ``--timeout``, ``--max-retries`` and ``--patience`` (teacher.patience;
0: never, the behaviour before whole-batch patience):

    python benchmarks/bench_teacher_http.py --server frozen --stories 360 --timeout 5 --max-retries 5
    python benchmarks/bench_teacher_http.py --server frozen --stories 16 --timeout 5 --max-retries 2 --patience 0

The figures are for the server and machine you run it on; a batching server (vLLM) gains far
more from many requests in flight than ``transformers serve`` on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from onceupon.config import TeacherConfig  # noqa: E402
from onceupon.errors import UserError  # noqa: E402
from onceupon.teacher.base import Story  # noqa: E402
from onceupon.teacher.factory import build_teacher  # noqa: E402

PROMPT = "Let me tell you a long, magical tale. Once upon a time, in a faraway land,"


def stories(n: int, tag: str) -> list[Story]:
    animals = ["fox", "owl", "bear", "hare", "wren", "toad", "mole"]
    things = ["a red box", "a silver key", "a tiny boat", "a map", "a lantern"]
    return [
        Story(PROMPT, f"there lived a {animals[i % 7]} who found {things[i % 5]} near the river. It carried it home and told story {i} ({tag}) to its friends.", id=str(i))
        for i in range(n)
    ]


def timed(teacher, drain, n: int, tag: str) -> dict:
    """Rate ``n`` stories with ``teacher`` (kept across rounds, as in a real run: what it
    learnt about the server carries over); valid ratings, seconds, longest gap between
    finished ratings, retries, failures."""
    # A server that timed out requests may still be working through them (transformers serve
    # does): wait until it answers again, so one setting's backlog is not charged to the next.
    drain.rate(stories(1, f"drain {tag}"))
    finished: list[float] = []
    teacher.backend.stats.update(requests=0, retries=0, failed=0)
    start = time.perf_counter()
    try:
        ratings = teacher.rate(stories(n, tag), on_rated=lambda i, r: finished.append(time.perf_counter()))
        valid = sum(r.valid for r in ratings)
    except UserError as e:  # every request of the batch failed: the run would stop here
        print(f"    ({e})", flush=True)
        valid = 0
    elapsed = time.perf_counter() - start
    stats = dict(teacher.backend.stats)
    marks = [start, *sorted(finished)] + ([] if len(finished) == n else [start + elapsed])
    gap = max(b - a for a, b in zip(marks, marks[1:]))
    return {"valid": valid, "elapsed": elapsed, "gap": gap, "retries": stats["retries"], "failed": stats["failed"]}


def add(total: dict | None, part: dict) -> dict:
    if total is None:
        return dict(part)
    return {k: max(total[k], part[k]) if k == "gap" else total[k] + part[k] for k in total}


def start_server(args) -> tuple[object | None, str]:
    if args.base_url:
        return None, args.base_url
    from http_servers import make_tiny_chat_model, serve_model, start_shared_cpu_server

    if args.server == "shared-cpu":
        return start_shared_cpu_server(args.work)
    model = args.model or make_tiny_chat_model(Path(tempfile.mkdtemp()) / "tiny-chat")
    return serve_model(model, threads=args.threads)


def frozen(args) -> None:
    """Time from the freeze to the rating call giving up (see the module docstring)."""
    from http_servers import proxy_stats, start_freezing_server

    patience = args.patience if args.patience is None or args.patience > 0 else 1e9
    process, url = start_freezing_server(answers=1 + args.answers)  # the start-up request, then ratings
    cfg = TeacherConfig(backend="openai", base_url=url, timeout=args.timeout, max_retries=args.max_retries, patience=patience)
    rated: list = []
    with process, build_teacher(cfg) as teacher:
        start = time.time()
        try:
            teacher.rate(stories(args.stories, "frozen"), on_rated=lambda i, r: rated.append(r.valid))
            outcome = "returned"
        except UserError as e:
            outcome = f"raised: {e}"
        stopped = time.time()
        froze = proxy_stats(url)["frozen_at"] or stopped
    shown = "off" if patience == 1e9 else f"{teacher.backend.patience:g} s"
    print(f"{args.stories} stories, answers {args.answers}, timeout {args.timeout:g} s, max_retries {args.max_retries}, "
          f"patience {shown}: gave up {stopped - froze:.1f} s after the freeze ({stopped - start:.1f} s in all), "
          f"{sum(rated)} valid ratings kept; {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=TeacherConfig().concurrency, help="The default's ceiling.")
    parser.add_argument("--fixed", default="1,2,4,16", help="Fixed numbers of requests in flight to compare.")
    parser.add_argument("--timeout", type=float, default=TeacherConfig().timeout, help="teacher.timeout for every run.")
    parser.add_argument("--base-url", help="Use this running server instead of starting one.")
    parser.add_argument("--server", choices=["transformers", "shared-cpu", "frozen"], default="transformers")
    parser.add_argument("--model", type=Path, help="Model directory for transformers serve (default: a tiny one).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for transformers serve.")
    parser.add_argument("--work", type=float, default=0.2, help="Seconds of work per request (shared-cpu).")
    parser.add_argument("--rounds", type=int, default=4, help="Rounds in which the settings take turns.")
    parser.add_argument("--answers", type=int, default=20, help="Requests answered before the freeze (frozen).")
    parser.add_argument("--max-retries", type=int, default=TeacherConfig().max_retries, help="teacher.max_retries (frozen).")
    parser.add_argument("--patience", type=float, default=None, help="teacher.patience (frozen; 0: never give up early).")
    args = parser.parse_args()
    if args.server == "frozen":
        return frozen(args)

    process, base_url = start_server(args)
    try:
        runs = [("default (adaptive, at most %d)" % args.concurrency, args.concurrency, True)]
        runs += [(f"fixed {c} in flight", c, False) for c in map(int, args.fixed.split(","))]
        results: dict[str, dict | None] = {label: None for label, _, _ in runs}
        teachers = {}
        for label, conc, adapt in runs:
            cfg = TeacherConfig(backend="openai", base_url=base_url, concurrency=conc, adapt_concurrency=adapt, timeout=args.timeout)
            teachers[label] = build_teacher(cfg)
        drain = build_teacher(TeacherConfig(backend="openai", base_url=base_url, concurrency=1, adapt_concurrency=False, timeout=3600))
        per_round = max(1, args.stories // args.rounds)
        print(f"{per_round * args.rounds} stories per setting in {args.rounds} rounds, teacher.timeout={args.timeout:g} s, "
              f"server: {args.base_url or args.server}", flush=True)
        for round_no in range(args.rounds):
            for label, conc, adapt in runs:
                results[label] = add(results[label], timed(teachers[label], drain, per_round, f"{label} {round_no}"))
            print(f"  round {round_no + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        for label, r in results.items():
            r["per_s"] = r["valid"] / r["elapsed"]
            print(
                f"{label:32s} {r['per_s']:7.2f} ratings/s  longest wait {r['gap']:6.1f} s  "
                f"({r['valid']}/{per_round * args.rounds} valid in {r['elapsed']:.1f} s, {r['retries']} retries, {r['failed']} failed)"
            )
        default = results[runs[0][0]]
        best_label, best = max(((k, v) for k, v in results.items() if k != runs[0][0]), key=lambda kv: kv[1]["per_s"])
        ratio = default["per_s"] / best["per_s"] if best["per_s"] else float("inf")
        print(f"{'default / best fixed (' + best_label + ')':32s} {ratio:7.2f}x ratings/s")
        for teacher in [*teachers.values(), drain]:
            teacher.close()
    finally:
        if process is not None:
            process.stop()


if __name__ == "__main__":
    main()
