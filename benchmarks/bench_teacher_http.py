"""Teacher throughput over HTTP: the same stories rated with 1 request in flight vs many.

Starts a real ``transformers serve`` (tests/http_servers.py: a tiny chat model trained to
answer "2 3 1", or ``--model DIR`` for your own) on loopback, or uses ``--base-url`` for a
server you run (e.g. ``vllm serve``), then rates the same stories through the openai backend
twice, at concurrency 1 (the peer: one request at a time, as a naive loop would) and at the
configured concurrency, and prints ratings/s of each and their ratio. No cache, so both runs
do the full work.

    python benchmarks/bench_teacher_http.py                      # 500 stories, concurrency 16
    python benchmarks/bench_teacher_http.py --stories 200 --concurrency 8
    python benchmarks/bench_teacher_http.py --base-url http://127.0.0.1:8000/v1

Note: ``transformers serve`` without continuous batching runs one generation at a time, so
concurrency there buys only overlap of HTTP, tokenisation and scheduling; a batching server
(vLLM, llama-server with parallel slots, transformers serve --continuous-batching) gains far
more. The figures are for the server you point it at.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from onceupon.config import TeacherConfig  # noqa: E402
from onceupon.teacher.base import Story  # noqa: E402
from onceupon.teacher.factory import build_teacher  # noqa: E402

PROMPT = "Let me tell you a long, magical tale. Once upon a time, in a faraway land,"


def stories(n: int) -> list[Story]:
    animals = ["fox", "owl", "bear", "hare", "wren", "toad", "mole"]
    things = ["a red box", "a silver key", "a tiny boat", "a map", "a lantern"]
    return [
        Story(PROMPT, f"there lived a {animals[i % 7]} who found {things[i % 5]} near the river. It carried it home and told story {i} to its friends.", id=str(i))
        for i in range(n)
    ]


def timed(base_url: str, concurrency: int, batch: list[Story]) -> tuple[float, int, int]:
    cfg = TeacherConfig(backend="openai", base_url=base_url, concurrency=concurrency, timeout=300)
    with build_teacher(cfg) as teacher:
        teacher.rate(batch[:2])  # warm-up: connection pool, model loaded
        start = time.perf_counter()
        ratings = teacher.rate(batch)
        elapsed = time.perf_counter() - start
    return elapsed, sum(r.valid for r in ratings), len(ratings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stories", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=TeacherConfig().concurrency)
    parser.add_argument("--base-url", help="Use this running server instead of starting transformers serve.")
    parser.add_argument("--model", type=Path, help="Model directory for transformers serve (default: a tiny one).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the started server.")
    parser.add_argument(
        "--continuous-batching", action="store_true", help="Start transformers serve with continuous batching."
    )
    args = parser.parse_args()

    batch = stories(args.stories)
    process = None
    base_url = args.base_url
    if base_url is None:
        from http_servers import make_tiny_chat_model, serve_model

        model = args.model or make_tiny_chat_model(Path(tempfile.mkdtemp()) / "tiny-chat")
        extra = ("--continuous-batching",) if args.continuous_batching else ()
        process, base_url = serve_model(model, threads=args.threads, extra_args=extra)
    try:
        results = {}
        for label, conc in (("concurrency 1 (one request at a time)", 1), (f"concurrency {args.concurrency}", args.concurrency)):
            elapsed, valid, n = timed(base_url, conc, batch)
            results[label] = n / elapsed
            print(f"{label:40s} {n / elapsed:8.2f} ratings/s  ({n} stories in {elapsed:.1f} s, {valid} valid)")
        slow, fast = results.values()
        print(f"{'ratio':40s} {fast / slow:8.2f}x")
    finally:
        if process is not None:
            process.stop()


if __name__ == "__main__":
    main()
