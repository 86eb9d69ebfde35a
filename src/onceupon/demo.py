"""``onceupon demo``: the whole pipeline, tiny and offline, on a CPU in minutes.

What it runs, with ``configs/demo.yaml``, all in ``OUT/``:

1. ``pretrain/``: a 40K-word storyworld corpus and a tiny student (``gpt2-micro``) pretrained
   on it for 3 epochs (120K words seen), with checkpoints at the BabyLM milestones scaled down
   to thousands of words (1K..10K, 20K..100K, and the final 120K).
2. evaluation of ``EVALUATED_CHECKPOINTS`` (10) log-spaced pretraining checkpoints (storyworld
   entity-tracking probe and story quality rated by the heuristic teacher): the pretraining curve.
3. ``interact_<start>/``: two short interaction runs (RLOO, not the paper's PPO, with the
   heuristic teacher; 4K input words each) from the evaluated checkpoints nearest
   ``START_FRACTIONS`` (10 % and 25 %) of the pretraining words, each evaluated at its start and
   at every checkpoint it saved. Each run checks its teacher first (``RUN/teacher_check/``:
   storyworld probes told after the run's prompt, and the start checkpoint's own stories),
   and after it on the stories it rated (``RUN/teacher_check/rated/``); the demo's config says
   ``interact.teacher_check: allow``, so the demo shows every verdict, whatever it is, rather
   than stopping on a FAIL.
4. ``report/``: ``onceupon report`` over all of it; the headline printed at the end is read
   from the report's data (``report/report.json``), which is computed from the runs, and names
   the headline run's teacher verdict; the teacher check's verdict is printed above it.

A demo never reuses an earlier one: if ``OUT`` exists and is not empty the demo refuses
(exit 2); ``--force`` deletes it first, but only if it holds an earlier demo (``demo.json``).
"""

from __future__ import annotations

import datetime as _dt
import math
import shutil
import time
from importlib import resources
from pathlib import Path

from onceupon import preflight
from onceupon.config import ExperimentConfig, load_config
from onceupon.errors import UserError
from onceupon.files import atomic_write_json

#: marks a directory as a demo's, so --force may delete it; also records seed, status, headline
MARKER = "demo.json"
#: how many pretraining checkpoints are evaluated (log-spaced), to keep the demo in minutes
EVALUATED_CHECKPOINTS = 10
#: the interaction runs start from the evaluated checkpoints nearest these fractions of the
#: pretraining words: an early student (little to build on) and a more fluent one
START_FRACTIONS = (0.1, 0.25)
SECTIONS_WITH_SEEDS = ("corpus", "pretrain", "interact", "evaluate", "report")


def config_path() -> Path:
    """``configs/demo.yaml``: the installed package's copy, else the source checkout's."""
    packaged = resources.files("onceupon").joinpath("configs", "demo.yaml")
    if packaged.is_file():
        return Path(str(packaged))
    source = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    if source.is_file():
        return source
    raise UserError("The demo configuration configs/demo.yaml is missing from this installation.")


def demo_config(seed: int) -> ExperimentConfig:
    return load_config(config_path(), [f"{section}.seed={seed}" for section in SECTIONS_WITH_SEEDS])


def prepare_out(out: Path, force: bool) -> None:
    """Refuse a non-empty OUT unless --force and it holds an earlier demo; then start empty."""
    preflight.output_dir(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory; choose another --out.")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UserError(
                f"{out} already exists and the demo never reuses earlier results; pass --force to replace it "
                "or choose another --out."
            )
        if not (out / MARKER).is_file():
            raise UserError(f"{out} is not a demo directory (no {MARKER}); --force only replaces an earlier demo.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def log_spaced(points: list[tuple[int, Path]], n: int) -> list[tuple[int, Path]]:
    """Up to ``n`` of ``(words, checkpoint)`` points spread evenly in log-words, first and last kept."""
    points = sorted(p for p in points if p[0] > 0)
    if len(points) <= n:
        return points
    lo, hi = math.log10(points[0][0]), math.log10(points[-1][0])
    chosen: list[tuple[int, Path]] = []
    for i in range(n):
        target = lo + (hi - lo) * i / (n - 1)
        best = min(points, key=lambda p: abs(math.log10(p[0]) - target))
        if best not in chosen:
            chosen.append(best)
    return sorted(chosen)


class _Clock:
    """Stage banners with elapsed time, so a user sees where the minutes go."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def stage(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {text}", flush=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


def run(out: str | Path, seed: int = 0, force: bool = False) -> dict:
    """Run the demo into ``out``; returns the report's summary (its ``headline`` is printed)."""
    out = Path(out)
    cfg = demo_config(seed)
    prepare_out(out, force)  # before the heavy imports: a refusal is instant

    from onceupon.analysis.report import build
    from onceupon.evaluate.evaluate import evaluate_checkpoint_dir, evaluate_run
    from onceupon.interact.interact import interact
    from onceupon.lifecycle.checkpoints import list_checkpoints, read_meta
    from onceupon.student.pretrain import run as pretrain
    from onceupon.teacher.before_run import check_rated, run_verdict
    from onceupon.teacher.factory import build_teacher

    marker = {"seed": seed, "status": "running", "started": _dt.datetime.now().isoformat(timespec="seconds")}
    atomic_write_json(out / MARKER, marker)
    clock = _Clock()

    pre = out / "pretrain"
    clock.stage(f"pretraining a {cfg.student.preset} student on a storyworld corpus -> {pre}")
    pretrain(cfg, pre)
    checkpoints = [(read_meta(c).pretrain_words, c) for c in list_checkpoints(pre)]
    chosen = log_spaced(checkpoints, EVALUATED_CHECKPOINTS)
    clock.stage(f"evaluating {len(chosen)} of {len(checkpoints)} pretraining checkpoints (log-spaced)")
    for _words, path in chosen:
        evaluate_checkpoint_dir(cfg, path)

    final_words = chosen[-1][0]
    starts: list[tuple[int, Path]] = []
    for fraction in START_FRACTIONS:
        pick = min(chosen[:-1], key=lambda p: abs(math.log10(p[0]) - math.log10(fraction * final_words)))
        if pick not in starts:
            starts.append(pick)
    runs = [pre]
    for words, path in starts:
        run_dir = out / f"interact_{path.name.removeprefix('chck_')}"
        clock.stage(f"interaction from {path.name} with the {cfg.teacher.backend} teacher, checked first -> {run_dir}")
        interact(cfg, path, run_dir)
        clock.stage(f"checking the teacher on the stories {run_dir.name} rated -> {run_dir / 'teacher_check' / 'rated'}")
        with build_teacher(cfg.teacher) as teacher:
            check_rated(cfg, teacher, run_dir)
        clock.stage(f"evaluating {run_dir.name}")
        evaluate_run(cfg, run_dir)
        runs.append(run_dir)

    clock.stage("writing the report")
    index, summary = build(cfg.report, runs, out / "report", title=cfg.name)
    head = summary.get("headline")
    checked = (head or {}).get("teacher_check") or run_verdict(runs[1])
    marker.update(
        status="done",
        seconds=round(clock.elapsed, 1),
        report=str(index),
        headline=head["text"] if head else None,
        teacher_check=checked["status"],
    )
    atomic_write_json(out / MARKER, marker)
    clock.stage("done")
    print(f"report: {index}")
    print(f"teacher check: {checked['text']}")
    print(f"headline: {head['text']}" if head else "headline: none (no interaction run could be compared)")
    return summary
