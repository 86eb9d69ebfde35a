"""The ``onceupon`` command line: one thin function per stage, no logic here.

Each command loads the experiment config (``--config`` YAML plus ``--set key=value``
overrides) and hands it to the stage's ``run`` function. A :class:`UserError` anywhere
becomes one sentence on stderr and exit code 2.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from onceupon.config import given_on_resume, load_config
from onceupon.errors import UserError
from onceupon.files import is_disk_full

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Interactive learning for small language models: pretrain a student, let a teacher "
    "rate its stories, learn from the ratings, measure what it bought.",
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Experiment YAML file.")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", "-s", help="Override a config key, e.g. --set pretrain.epochs=2.")
]


@app.command()
def corpus(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory; the corpus goes to OUT/corpus.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Build a corpus (files, a Hub dataset, or storyworld) and report its words."""
    cfg = load_config(config, set_)
    from onceupon.corpus.corpus import run

    run(cfg, out)


@app.command()
def pretrain(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory for a new run.")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this directory.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train a tokenizer and a student from scratch, with word-milestone checkpoints.

    Several GPUs or nodes: ``accelerate launch -m onceupon.cli pretrain ...`` (same options).
    """
    if (out is None) == (resume is None):
        raise UserError("Give exactly one of --out (a new run) or --resume (an existing run).")
    # on --resume, --config/--set may change only what does not alter the run (config.resume_config)
    cfg = load_config(config, set_) if out else given_on_resume(resume, config, set_)
    from onceupon.student.pretrain import run

    run(cfg, out or resume, resume=resume is not None)


@app.command()
def interact(
    start: Annotated[
        Optional[Path], typer.Option("--from", help="Checkpoint directory to start from (e.g. RUN/checkpoints/chck_20M).")
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory for a new run.")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this directory.")] = None,
    skip_teacher_check: Annotated[
        bool, typer.Option("--skip-teacher-check", help="Do not check the teacher before the first step (recorded in the run).")
    ] = False,
    allow_failing_teacher: Annotated[
        bool, typer.Option("--allow-failing-teacher", help="Check the teacher, and train even when it fails the check.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Let the student tell stories, the teacher rate them, and RL learn from the ratings."""
    if resume is None and (out is None or start is None):
        raise UserError("A new interaction run needs --from CHECKPOINT and --out DIR (or use --resume DIR).")
    if resume is not None and (out is not None or start is not None):
        raise UserError("--resume continues the run in its directory from its own start; --from and --out apply to new runs only.")
    if resume is not None and (skip_teacher_check or allow_failing_teacher):
        raise UserError("A resumed run keeps the teacher check it made when it started; --skip-teacher-check and --allow-failing-teacher apply to new runs only.")
    if skip_teacher_check and allow_failing_teacher:
        raise UserError("Give --skip-teacher-check (no check) or --allow-failing-teacher (check, train whatever it says), not both.")
    # on --resume, --config/--set may change only what does not alter the run (config.resume_config)
    cfg = load_config(config, set_) if resume is None else given_on_resume(resume, config, set_)
    if cfg is not None and (skip_teacher_check or allow_failing_teacher):  # saved with the run's config.yaml
        cfg.interact.teacher_check = "skip" if skip_teacher_check else "allow"
    from onceupon.interact.interact import run

    run(cfg, start, out or resume, resume=resume is not None)


@app.command()
def rate(
    stories: Annotated[
        Path, typer.Argument(help="JSONL of stories: continuation (or text), optional prompt and id.")
    ],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Ratings JSONL to write (default: STORIES.ratings.jsonl).")
    ] = None,
    compare: Annotated[
        Optional[Path],
        typer.Option("--compare", help="Other ratings (another teacher, or people) to report agreement with."),
    ] = None,
    as_rated: Annotated[
        bool, typer.Option("--as-rated", help="STORIES already holds ratings: only compare it with --compare.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Rate a file of stories with a teacher; optionally report agreement with other ratings."""
    cfg = load_config(config, set_)
    from onceupon.annotate.agreement import check_other
    from onceupon.annotate.agreement import compare as compare_with
    from onceupon.teacher.rate import run
    from onceupon.teacher.rubric import Rubric

    rubric = Rubric.from_config(cfg.teacher)
    if compare is not None and Path(compare).is_file():
        check_other(compare, rubric)  # every line read and checked before any story is rated
    ours = run(cfg, stories, out, compare, as_rated=as_rated)
    if compare is not None:  # people's answers or another rater's: annotate's agreement tells them apart
        compare_with(ours, compare, rubric)


@app.command()
def annotate(
    sources: Annotated[
        list[Path],
        typer.Argument(
            metavar="SOURCE", help="Stories files, ratings files or run directories (anthology + evaluation stories)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Answers JSONL, appended to (the same --out continues).")],
    sample: Annotated[int, typer.Option("--sample", help="Stories to sample, stratified over runs and checkpoints.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed for the sample and its order.")] = 0,
    overlap: Annotated[float, typer.Option(help="Share of the stories shown to every annotator (for their agreement).")] = 0.2,
    host: Annotated[str, typer.Option(help="Address to listen on; beyond loopback the URL carries an access token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    token: Annotated[Optional[str], typer.Option(help="Access token the URL must carry (default: none on loopback, random elsewhere).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """People rate stories on a local web page, with the teacher's rubric; answers go to --out."""
    cfg = load_config(config, set_)
    from onceupon.annotate.annotate import run

    run(cfg, sources, out, n=sample, seed=seed, overlap=overlap, host=host, port=port, token=token)


@app.command("check-teacher")
def check_teacher(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for check.json, probes.jsonl and the ratings.")] = Path(
        "teacher-check"
    ),
    stories: Annotated[
        Optional[Path], typer.Option("--stories", help="JSONL of clean stories (e.g. an anthology) instead of storyworld's.")
    ] = None,
    probes: Annotated[
        Optional[Path], typer.Option("--probes", help="Rate the probes.jsonl of an earlier check (same probes, another teacher).")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Clean stories to probe with (each gets up to 10 altered copies).")] = 40,
    seed: Annotated[int, typer.Option(help="Seed for the probes and the retest sample.")] = 0,
    retest: Annotated[int, typer.Option(help="Probes rated a second time, bypassing the cache (0: none).")] = 40,
    fail_under: Annotated[
        Optional[float],
        typer.Option("--fail-under", help="Also fail (exit code 1) when a criterion's discrimination is below this percentage."),
    ] = None,
    min_gap: Annotated[
        float,
        typer.Option("--min-gap", help="Smallest mean clean-minus-damaged gap, in points of the rubric's scale, with which a criterion passes."),
    ] = 0.25,
    exit_zero: Annotated[
        bool, typer.Option("--exit-zero", help="Exit with code 0 even when the teacher fails (for exploring).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Check that the configured teacher tells good stories from damaged ones, before it trains anyone."""
    cfg = load_config(config, set_)
    from onceupon.interact.prompts import load_prompts
    from onceupon.teacher.check_teacher import run

    prompts = load_prompts(cfg.interact) if stories is None and probes is None else None  # the prompts a run would use
    code = run(
        cfg, out, stories=stories, probes=probes, n=n, seed=seed, retest=retest, fail_under=fail_under,
        min_gap=min_gap, exit_zero=exit_zero, as_json=as_json, prompts=prompts,
    )  # fmt: skip
    if code:
        raise typer.Exit(code)


@app.command()
def evaluate(
    target: Annotated[Path, typer.Argument(help="A run directory (every checkpoint) or one checkpoint.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", help="BabyLM evaluation_data directory (or its full_eval/fast_eval).")
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Single checkpoint outside a run: where results go (default CHECKPOINT/evaluation)."),
    ] = None,
    judge: Annotated[
        bool,
        typer.Option(
            "--judge",
            help="Only rate the stories each evaluated checkpoint of the run already told with this config's teacher, "
            "as one more judge kept beside the others (for `onceupon report`).",
        ),
    ] = False,
    submission: Annotated[
        Optional[Path],
        typer.Option(
            "--babylm-submission",
            help="Write a BabyLM 2025 submission of the run here: the official results layout and the collated "
            "predictions file (fast suite on each checkpoint the track names, full suite on the final one, AoA).",
        ),
    ] = None,
    track: Annotated[
        Optional[str], typer.Option("--track", help="BabyLM track of the submission: strict-small, strict or interaction.")
    ] = None,
    finetune: Annotated[
        Optional[Path],
        typer.Option("--finetune", help="The official pipeline's finetune folder of the final model (GLUE predictions) for the "
                    "submission; without it onceupon fine-tunes the final model on full_eval/glue_filtered itself."),
    ] = None,
) -> None:
    """BabyLM zero-shot tasks and story quality for every checkpoint of a run (or one checkpoint)."""
    cfg = load_config(config, set_)
    if submission is not None:
        if judge or out is not None:
            raise UserError("--babylm-submission writes its own layout; --judge and --out do not apply to it.")
        if track is None:
            raise UserError("--babylm-submission needs --track (strict-small, strict or interaction).")
        from onceupon.evaluate.submission import write_submission

        path = write_submission(cfg, target, data, submission, track, finetune)
        print(f"submission: {path}")
        return
    if track is not None or finetune is not None:
        raise UserError("--track and --finetune apply to --babylm-submission only.")
    if judge:
        if data is not None or out is not None:
            raise UserError("--judge rates stories already told; --data and --out do not apply to it.")
        from onceupon.evaluate.stories import judge_run, judges_table
        from onceupon.tracking import print_table

        print_table(judges_table(judge_run(cfg, target)))
        return
    from onceupon.evaluate.evaluate import run

    run(cfg, target, data, out)


@app.command("finetune")
def finetune_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory (for a submission: the run's final one).")],
    data: Annotated[Path, typer.Option("--data", help="BabyLM evaluation_data directory (its full_eval/glue_filtered is read).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where each task's predictions.json and results.json go (OUT/TASK/).")],
    tasks: Annotated[
        Optional[str], typer.Option("--tasks", help="Comma-separated GLUE tasks (default all: boolq,mnli,mrpc,multirc,qqp,rte,wsc).")
    ] = None,
    pooling: Annotated[
        str, typer.Option("--pooling", help="What the classifier reads: 'last' (the last real token) or 'first' (the first token, "
                          "the official script's default, which in a causal model sees only itself).")
    ] = "last",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """BabyLM 2025 GLUE fine-tuning of one checkpoint with the official settings: resumable, and
    data-parallel under `accelerate launch`; OUT is what `evaluate --babylm-submission --finetune` takes."""
    cfg = load_config(config, set_)
    from onceupon.evaluate.finetune import run

    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks is not None else None
    print(f"finetune: {run(checkpoint, data, out, names, cfg.evaluate.device, pooling)}")


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Pretraining and interaction run directories.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory.")] = Path("report"),
    check: Annotated[
        Optional[list[Path]], typer.Option("--check", help="A `check-teacher` output directory to show (repeatable).")
    ] = None,
    agreement: Annotated[
        Optional[list[Path]],
        typer.Option("--agreement", help="A teacher-vs-people OURS.agreement.json from `rate --compare` (repeatable)."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Curves, data-efficiency equivalence and a story browser, as one HTML page."""
    cfg = load_config(config, set_)
    from onceupon.analysis.report import run

    run(cfg, runs, out, checks=check, agreements=agreement)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo's runs and report go.")] = Path("demo"),
    seed: Annotated[int, typer.Option(help="Seed for everything.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier demo in OUT (never reused; other directories are refused).")
    ] = False,
) -> None:
    """The whole pipeline, tiny and offline, on a CPU in minutes; prints the report and its headline."""
    from onceupon.demo import run

    run(out, seed, force=force)


@app.command("config")
def show_config(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    reference: Annotated[bool, typer.Option("--reference", help="Print every key with its default and meaning.")] = False,
) -> None:
    """Print the resolved configuration (YAML), or the reference of every key."""
    import yaml

    from onceupon.config import reference_markdown

    if reference:
        print(reference_markdown())
        return
    cfg = load_config(config, set_)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True), end="")


def main() -> None:
    # Our progress bars count what the user thinks in (words, stories, pairs); transformers'
    # per-load "Loading weights" bars would only clutter them. HF_HUB_DISABLE_PROGRESS_BARS=0
    # brings them back.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from onceupon.lifecycle.stop import Stopped, stop_exit_code, terminate_as_interrupt

    # SIGTERM (a scheduler's stop, `kill`) takes Ctrl-C's path: training loops stop at a safe
    # point and say how to resume (lifecycle.stop.stop_on_signals); elsewhere cleanup code runs.
    terminate_as_interrupt()
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Stopped as e:
        if str(e):  # empty in the non-main processes of a multi-process run: one sentence in all
            print(str(e), file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(stop_exit_code())
    except Exception as e:
        # A full or read-only disk found mid-run, whichever library was writing (safetensors and
        # tokenizers say so in words, not errno): what was written is written atomically, so
        # nothing half-done looks complete; a run continues with --resume once there is room.
        if not (is_disk_full(e) or getattr(e, "errno", None) == errno.EROFS):
            raise
        what = e.strerror if isinstance(e, OSError) and e.strerror else os.strerror(errno.ENOSPC)
        where = f" writing {e.filename}" if getattr(e, "filename", None) else ""
        print(f"error: {what}{where}; free space (or fix the disk) and run again (a run continues with --resume).", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
