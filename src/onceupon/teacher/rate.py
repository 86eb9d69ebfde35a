"""``onceupon rate``: rate a JSONL file of stories with a teacher; compare with other ratings.

Input: a JSONL file of stories, read as :mod:`onceupon.teacher.stories` says (``continuation``
    or ``text``, optional ``prompt`` and ``id``; ids unique).
Output (``--out``, default ``STORIES.ratings.jsonl``), one line per input line, in order:
    ``id``, ``prompt``, ``continuation`` (cleaned), ``valid``, ``scores`` {criterion: score},
    ``score`` (0..1), ``total`` (sum), ``raw`` (the teacher's answer), ``error``,
    ``attempts``, ``outcome``, ``answers``, ``teacher`` (identity), ``rubric`` (hash).
    Written atomically at the end.
While rating, progress advances story by story (done/total, rate, ETA, and for a server the
requests in flight and retries) and every finished rating is appended to ``OUT.partial``.
Ctrl-C or SIGTERM stops at once and keeps that file; the same command again continues from it
(asking again only for failed requests) and removes it once ``OUT`` is written.
``--compare OTHER.jsonl``: agreement between these ratings and OTHER's (another teacher's:
teacher/agreement.py; people's: annotate/agreement.py), printed as a table and written to
``OUT`` with the suffix ``.agreement.json``.
``--as-rated``: STORIES already holds ratings; compare it with OTHER without rating again.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from pathlib import Path

from rich.console import Console
from rich.table import Table

from onceupon import preflight
from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.files import append_jsonl, atomic_write_text
from onceupon.lifecycle.stop import Stopped, stop_exit_code, stop_on_signals, stop_requested
from onceupon.teacher.agreement import agreement_path, fmt
from onceupon.teacher.base import Outcome, Rating, Story, TeacherUnavailable
from onceupon.teacher.factory import build_teacher
from onceupon.teacher.pipeline import RubricTeacher
from onceupon.teacher.rubric import Rubric, clean_text
from onceupon.teacher.stories import read_stories
from onceupon.tracking import print_table, progress_bar

#: the first line of ``OUT.partial``: what the ratings in it were made from
PARTIAL_FORMAT = "onceupon-rate-partial/1"
#: outcomes a continued run asks for again (the request got no answer)
_ASK_AGAIN = (Outcome.FAILED.value, Outcome.REJECTED.value)


def default_out(stories_path: Path) -> Path:
    name = stories_path.name.removesuffix(".jsonl")
    return stories_path.with_name(f"{name}.ratings.jsonl")


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def rate_file(cfg: ExperimentConfig, stories_path: Path, out: Path) -> list[dict]:
    """Rate every story of ``stories_path`` into ``out``, continuing from ``OUT.partial``."""
    stories = read_stories(stories_path)
    partial = partial_path(out)
    with build_teacher(cfg.teacher) as teacher:
        header = _partial_header(teacher, stories)
        done = _load_partial(partial, header)
        if done:
            print(f"continuing from {partial}: {len(done)} of {len(stories)} stories already rated", file=sys.stderr, flush=True)
        # Rewritten whole (atomically) so appends never follow a torn line of a killed run.
        kept = [json.dumps(header)] + [json.dumps({"index": i, **r}, ensure_ascii=False) for i, r in sorted(done.items())]
        atomic_write_text(partial, "\n".join(kept) + "\n")
        # Stories per teacher call: big for a backend that reports story by story (fewer pauses
        # between calls), a few batches for one that reports per call (progress stays live).
        chunk = 16 * cfg.teacher.concurrency if teacher.streams else 4 * cfg.teacher.batch_size
        try:
            _rate_missing(teacher, stories, done, partial, chunk=max(64, chunk))
        except BaseException:
            if not _rated(done):  # nothing worth keeping: leave no file behind
                partial.unlink(missing_ok=True)
            raise
    records = [done[i] for i in range(len(stories))]
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    partial.unlink(missing_ok=True)
    return records


def _record(story: Story, rating: Rating, teacher: RubricTeacher) -> dict:
    return {
        "id": story.id,
        "prompt": clean_text(story.prompt),
        "continuation": clean_text(story.continuation),
        **rating.to_dict(),
        "teacher": teacher.identity,
        "rubric": teacher.rubric.hash,
    }


def _rate_missing(teacher: RubricTeacher, stories: list[Story], done: dict[int, dict], partial: Path, chunk: int) -> None:
    """Rate the stories not in ``done`` in a worker thread, while this (main) thread appends
    each finished rating to ``partial``, shows progress, and stops everything on Ctrl-C or
    SIGTERM (raising :class:`Stopped`) without losing a finished rating."""
    todo = [i for i in range(len(stories)) if i not in done]
    finished: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        for start in range(0, len(todo), chunk):
            if stop.is_set():
                return
            part = todo[start : start + chunk]
            teacher.rate([stories[i] for i in part], on_rated=lambda j, r, part=part: finished.put((part[j], r)))

    def save() -> None:  # what finished so far: to the partial file first, then to the bar
        got = []
        while not finished.empty():
            i, rating = finished.get()
            got.append((i, _record(stories[i], rating, teacher)))
        if got:
            append_jsonl(partial, [{"index": i, **record} for i, record in got])
            done.update(got)

    def halt(future) -> None:
        stop.set()
        while not future.done():  # cancel until it takes: the worker may be between two calls
            teacher.cancel()
            wait_for([future], timeout=0.1)
        save()

    with progress_bar("stories") as bar, stop_on_signals(), ThreadPoolExecutor(1, thread_name_prefix="rate") as pool:
        task = bar.add_task("rate", total=len(stories), completed=len(done))
        future = pool.submit(work)
        try:
            while not future.done():
                wait_for([future], timeout=0.2)
                save()
                bar.update(task, completed=len(done), status=teacher.status())
                if stop_requested():
                    halt(future)
                    raise Stopped(_stopped(done, stories, partial), stop_exit_code())
            save()
            future.result()  # raises what the worker raised
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once all the same
            halt(future)
            raise Stopped(_stopped(done, stories, partial), 130) from None
        except TeacherUnavailable as e:
            save()
            if not _rated(done):
                raise
            raise TeacherUnavailable(
                f"{str(e).rstrip('.')}; the {_rated(done)} ratings so far are kept in {partial}, "
                "and the same command continues from them once the server answers."
            ) from None
        bar.update(task, completed=len(done), status=teacher.status())


def _rated(done: dict[int, dict]) -> int:
    """Ratings worth keeping: all but failed requests (asked again when continuing)."""
    return sum(r.get("outcome") not in _ASK_AGAIN for r in done.values())


def _stopped(done: dict, stories: list, partial: Path) -> str:
    if not _rated(done):
        return "stopped before any story was rated."
    return (
        f"stopped: {_rated(done)} of {len(stories)} stories are rated and kept in {partial}; "
        "run the same command again to rate the rest."
    )


def _partial_header(teacher: RubricTeacher, stories: list[Story]) -> dict:
    """What decides the ratings: the stories, and the teacher's fingerprint."""
    digest = hashlib.sha256()
    for s in stories:
        digest.update(json.dumps([s.id, s.prompt, s.continuation], ensure_ascii=False).encode("utf-8"))
    return {"format": PARTIAL_FORMAT, "stories": digest.hexdigest(), **teacher.fingerprint}


def _load_partial(partial: Path, header: dict) -> dict[int, dict]:
    """Ratings kept by an interrupted run (index -> record), without failed requests (those
    are asked again); {} when there is none. A torn last line (killed mid-write) is dropped."""
    if not partial.is_file():
        return {}
    lines = partial.read_text(encoding="utf-8", errors="replace").split("\n")
    # every complete line ends with "\n": the last element is "" or a torn line
    complete = lines[:-1]
    if not complete:
        return {}
    try:
        found = json.loads(complete[0])
    except ValueError:
        found = None
    if found != header:
        raise UserError(
            f"{partial} holds ratings of other stories or another teacher setting; "
            "delete it to start over, or rate into another --out."
        )
    done: dict[int, dict] = {}
    for lineno, line in enumerate(complete[1:], 2):
        try:
            record = json.loads(line)
            index = record.pop("index")
        except (ValueError, KeyError, AttributeError):
            raise UserError(f"{partial}, line {lineno}, is damaged; delete the file to start over.") from None
        if record.get("outcome") not in _ASK_AGAIN:
            done[int(index)] = record
    return done


def print_summary(records: list[dict], rubric: Rubric, console: Console) -> None:
    valid = [r for r in records if r["valid"]]
    table = Table(title=f"{len(records)} stories, {len(records) - len(valid)} invalid")
    table.add_column("criterion")
    table.add_column("mean", justify="right")
    for name in rubric.names:
        table.add_row(name, fmt(sum(r["scores"][name] for r in valid) / len(valid)) if valid else "-")
    table.add_row(f"total (0..{rubric.max_total})", fmt(sum(r["total"] for r in valid) / len(valid)) if valid else "-")
    print_table(table, console)


def run(cfg: ExperimentConfig, stories_path: Path, out: Path | None = None, compare: Path | None = None, as_rated: bool = False) -> Path:
    """The rating part of the ``onceupon rate`` command: rate STORIES into OUT (not with
    ``as_rated``, where STORIES holds ratings already) and return the ratings file to compare.

    ``compare`` is only checked here, before a long rating rather than after it. The
    comparison itself is chosen above the teacher (:func:`onceupon.annotate.agreement.compare`),
    since the other file may hold people's answers from ``onceupon annotate``.
    """
    stories_path = Path(stories_path)
    if as_rated:
        if compare is None:
            raise UserError("--as-rated compares existing ratings, so it needs --compare OTHER.jsonl.")
        preflight.output_file(agreement_path(stories_path), "the agreement file")
        return stories_path
    out = Path(out) if out else default_out(stories_path)
    preflight.output_file(out)
    if os.path.realpath(out) == os.path.realpath(stories_path):  # (realpath: no error on a symlink loop)
        raise UserError("--out must differ from the stories file.")
    preflight.output_file(partial_path(out), "the unfinished ratings file")
    if compare is not None:
        preflight.output_file(agreement_path(out), "the agreement file")
    if compare is not None and not Path(compare).is_file():  # found now, not after the rating
        raise UserError(f"--compare {compare} does not exist or is not a file.")
    records = rate_file(cfg, stories_path, out)
    console = Console()
    print_summary(records, Rubric.from_config(cfg.teacher), console)
    console.print(f"ratings written to {out}")
    return out
