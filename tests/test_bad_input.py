"""Every class of bad input and fault, run as a real ``onceupon`` command in a subprocess.

A user who gets something wrong (an output path that cannot be used, a setting that cannot
work, a damaged file, a second process on the same run, Ctrl-C) must see one sentence and
exit code 2 (or, for a requested stop, how to resume), never a traceback, and must find
nothing half-done that looks complete or that blocks the corrected command.

Other stages append their cases below, one section each; ``assert_one_sentence`` (in
conftest.py, for every test file) and :func:`assert_nothing_left` are the shared assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_sentence, run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def assert_nothing_left(run: Path) -> None:
    """No run directory, or one without anything that looks like a finished part of a run."""
    if run.exists():
        made = {p.name for p in run.iterdir()}
        assert not made & {"checkpoints", "tokenizer", "packed", "config.yaml", "resume_point", ".lock"}, made


def _pretrain(out: Path, *settings: str, **kwargs) -> subprocess.CompletedProcess:
    args = ["pretrain", "--out", str(out), "--config", TINY]
    for setting in settings:
        args += ["--set", setting]
    return run_cli(*args, env=ENV, **kwargs)


# --------------------------------------------------------------------------- output locations
@pytest.mark.parametrize("command", ["pretrain", "corpus"])
def test_out_that_is_a_file_is_refused_and_kept(command, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("precious\n")
    result = run_cli(command, "--out", str(out), "--config", TINY, env=ENV)
    assert_one_sentence(result, str(out), "is a file")
    assert out.read_text() == "precious\n"


def _as_nobody() -> list[str]:
    """The prefix that runs a command as the unprivileged user ``nobody`` when the tests run as
    root (root may write anywhere); none otherwise. Skips, saying what is missing, when setpriv
    is not there."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, and setpriv (Debian package util-linux; .ci/run installs it) is missing: cannot become an unprivileged user")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _read_only_dir() -> Path:
    """A directory the test's user cannot write to, in a place every user can reach."""
    base = Path(tempfile.mkdtemp(prefix="onceupon-ro-"))
    base.chmod(0o755)
    locked = base / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return locked


@pytest.mark.parametrize("command", ["pretrain", "corpus"])
@pytest.mark.parametrize("where", ["the directory itself", "a new directory inside it"])
def test_out_in_a_read_only_directory_is_refused_before_any_work(command, where, tmp_path):
    """Root may write anywhere, so as root the command runs as the unprivileged user
    ``nobody`` (``setpriv``), exactly what a user without write permission meets."""
    locked = _read_only_dir()
    out = locked if where == "the directory itself" else locked / "run"
    try:
        result = subprocess.run(
            [*_as_nobody(), sys.executable, "-m", "onceupon.cli", command, "--out", str(out), "--config", TINY],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **ENV, "HOME": str(locked.parent)},
        )
        assert_one_sentence(result, "not writable")
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(locked.parent, ignore_errors=True)


def _why_no_private_mounts() -> str | None:
    """Why ``unshare -rm`` (a private mount namespace in which a test may mount a real read-only
    file system, invisible to the rest of the machine) does not work here; None when it does."""
    if shutil.which("unshare") is None:
        return "needs unshare (Debian package util-linux; .ci/run installs it)"
    tried = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if tried.returncode != 0:
        return f"unshare -rm is refused here (user namespaces are off in this kernel or container): {tried.stderr.strip()}"
    return None


NO_PRIVATE_MOUNTS = _why_no_private_mounts()


def _with_mount(script: str, mount_point: Path) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with a fresh tmpfs at ``mount_point`` that only it sees; ``$ONCEUPON``
    runs the CLI."""
    mount_point.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ENV, "ONCEUPON": f"{sys.executable} -m onceupon.cli", "M": str(mount_point)}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.skipif(NO_PRIVATE_MOUNTS is not None, reason=str(NO_PRIVATE_MOUNTS))
@pytest.mark.parametrize("command", ["pretrain", "corpus"])
def test_out_on_a_read_only_file_system_is_refused(command, tmp_path):
    """A real read-only mount: refused even for root, before any work."""
    script = f'mount -t tmpfs tmpfs "$M" && mkdir "$M/runs" && mount -o remount,ro "$M" && $ONCEUPON {command} --out "$M/runs/new" --config {TINY}'
    result = _with_mount(script, tmp_path / "mnt")
    assert_one_sentence(result, "not writable")


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="needs the /dev/full device (Linux; this system or container has none)")
def test_a_full_disk_is_one_sentence():
    """``/dev/full`` fails every write with ENOSPC, as a full disk does (here: the output of
    ``onceupon config --reference``, larger than one buffer)."""
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "onceupon.cli", "config", "--reference"],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, env={**os.environ, **ENV},
        )  # fmt: skip
    assert_one_sentence(result, "No space left on device")


_WRITERS = """
import json, sys, torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from onceupon.files import is_disk_full

d, found = sys.argv[1], {}
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
tokenizer.train_from_iterator([f"word{i} other{i}" for i in range(20000)], trainers.BpeTrainer(vocab_size=30000))
writers = {
    "safetensors": lambda: save_file({"w": torch.zeros(1_000_000)}, f"{d}/model.safetensors"),
    "tokenizers": lambda: tokenizer.save(f"{d}/tokenizer.json"),
    "python": lambda: open(f"{d}/data.bin", "wb").write(bytes(4_000_000)),
    "torch to a file": lambda: torch.save(torch.zeros(1_000_000), open(f"{d}/state.pt", "wb")),
}
for name, write in writers.items():
    try:
        write()
        found[name] = "written"
    except Exception as e:
        found[name] = [type(e).__name__, is_disk_full(e)]
    for leftover in __import__("pathlib").Path(d).iterdir():
        leftover.unlink()
print(json.dumps(found))
"""


@pytest.mark.skipif(NO_PRIVATE_MOUNTS is not None, reason=str(NO_PRIVATE_MOUNTS))
def test_a_full_disk_is_recognised_by_its_error_whichever_library_writes(tmp_path):
    """A real 1 MiB file system filled by each library that saves a run's files: each reports
    it its own way (safetensors a SafetensorError, tokenizers a bare Exception, both only in
    words), and files.is_disk_full, used wherever saves fail, recognises every one."""
    (tmp_path / "writers.py").write_text(_WRITERS)
    script = f'mount -t tmpfs -o size=1m tmpfs "$M" && {sys.executable} {tmp_path / "writers.py"} "$M"'
    result = _with_mount(script, tmp_path / "mnt")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {
        "safetensors": ["SafetensorError", True],
        "tokenizers": ["Exception", True],
        "python": ["OSError", True],
        "torch to a file": ["RuntimeError", True],  # raised from Python's OSError (to a path it says only "unexpected pos")
    }


def test_an_error_that_is_not_a_full_disk_is_not_taken_for_one():
    from onceupon.files import is_disk_full

    assert not is_disk_full(RuntimeError("unexpected pos 576 vs 534"))
    assert not is_disk_full(OSError(2, "No such file or directory"))
    assert not is_disk_full(ValueError("bad value (os error 280)"))
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as inner:
            raise RuntimeError("could not save") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)  # the cause decides


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "settings, needle",
    [
        (["pretrain.milestones=every", "pretrain.milestone_every=0"], "milestone_every"),
        (["pretrain.epochs=1e-5"], "pretrain.epochs"),
        (["student.context_length=1000000000"], "GB"),
        (["student.n_layer=100000"], "GB"),
    ],
    ids=["milestone_every=0", "epochs=1e-5", "context_length=1e9", "n_layer=1e5"],
)
def test_settings_that_cannot_work_are_refused_before_the_run_exists(settings, needle, tmp_path):
    run = tmp_path / "run"
    assert_one_sentence(_pretrain(run, *settings), needle)
    assert not run.exists()


def test_a_failed_new_run_does_not_block_the_corrected_one(tmp_path):
    """The word target is known only once the corpus is read (no word budget here): the
    corpus is kept, nothing else, and the corrected command in the same --out runs."""
    text = tmp_path / "stories.txt"
    text.write_text("\n".join(f"The fox number {i} found a red box and a blue hat in the wood." for i in range(60)))
    run = tmp_path / "run"
    small = [
        "corpus.source=files", f"corpus.paths=[{text}]", "corpus.word_budget=null", "tokenizer.vocab_size=300",
        "student.context_length=32", "pretrain.milestones=every", "pretrain.milestone_every=200",
    ]  # fmt: skip
    assert_one_sentence(_pretrain(run, *small, "pretrain.epochs=0.0001"), "word target is zero")
    assert_nothing_left(run)
    corrected = _pretrain(run, *small, "pretrain.epochs=0.5")
    assert corrected.returncode == 0, corrected.stderr
    assert (run / "checkpoints").is_dir() and not (run / ".lock").exists()


def test_a_device_that_is_not_there_is_one_sentence(tmp_path, tiny_checkpoint):
    out = tmp_path / "evaluation"
    result = run_cli("evaluate", str(tiny_checkpoint), "--out", str(out), "--set", "evaluate.device=cuda", env=ENV)
    assert_one_sentence(result, "cuda")
    assert not out.exists()


# --------------------------------------------------------------------------- stop, resume, lock
# A run long enough to be interrupted mid-way, small enough for the default suite:
# 25 steps, a milestone every 4K words, a word target (9,990) that no step ends on exactly.
RUN_SETTINGS = [
    "corpus.word_budget=12K", "pretrain.epochs=1", "pretrain.max_words=9990", "pretrain.log_every=1",
    "pretrain.milestones=every", "pretrain.milestone_every=4K",
]  # fmt: skip


def _checkpoints(run: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "onceupon.json").read_text()) for p in sorted((run / "checkpoints").glob("chck_*"))}


def _same_run(run: Path, reference: Path) -> None:
    """Same checkpoints at the same words and steps, bit-identical final weights, and the
    same metrics rows (each step once)."""
    from safetensors.numpy import load_file

    ours, theirs = _checkpoints(run), _checkpoints(reference)
    assert {n: (m["pretrain_words"], m["step"]) for n, m in ours.items()} == {
        n: (m["pretrain_words"], m["step"]) for n, m in theirs.items()
    }
    final = max(theirs, key=lambda n: theirs[n]["step"])
    a = load_file(run / "checkpoints" / final / "model.safetensors")
    b = load_file(reference / "checkpoints" / final / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    rows = [line.split(",")[:3] for line in (run / "metrics.csv").read_text().splitlines()]
    assert rows == [line.split(",")[:3] for line in (reference / "metrics.csv").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    result = _pretrain(run, *RUN_SETTINGS)
    assert result.returncode == 0, result.stderr
    return run


def test_the_final_checkpoint_is_named_for_the_words_it_holds(reference_run):
    checkpoints = _checkpoints(reference_run)
    final = max(checkpoints.values(), key=lambda m: m["step"])
    assert final["extra"]["final"] and final["pretrain_words"] > 9990  # the last step overshoots the target
    assert final["name"] == f"chck_{final['pretrain_words']}W"
    assert {"chck_4K", "chck_8K"} <= set(checkpoints)


def _start(run: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "onceupon.cli", "pretrain", "--out", str(run), "--config", TINY]
    for setting in RUN_SETTINGS:
        args += ["--set", setting]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})


def _wait_for_step(proc: subprocess.Popen, run: Path, step: int) -> None:
    """Until the metrics log has ``step`` rows (the process is then mid-run)."""
    deadline = time.time() + 300
    metrics = run / "metrics.csv"
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) > step:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended or stalled before step {step}: {proc.communicate()[1]}")


@pytest.mark.parametrize(
    "signum",
    # SIGTERM takes the very same path inside the loop (tests/test_lifecycle.py checks the
    # handler): slow only to keep the default suite short.
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGTERM"],
)
def test_ctrl_c_and_sigterm_stop_safely_and_resume_identically(signum, reference_run, tmp_path):
    run = tmp_path / "run"
    proc = _start(run)
    _wait_for_step(proc, run, 5)
    proc.send_signal(signum)
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith("stopped after step") and f"onceupon pretrain --resume {run}" in last, stderr
    assert not any(m["extra"]["final"] for m in _checkpoints(run).values())  # it really stopped early

    if signum == signal.SIGINT:  # a damaged resume state is one sentence, and the run is not touched
        damaged = tmp_path / "damaged"
        shutil.copytree(run, damaged)
        weights = damaged / "resume_point" / "model.safetensors"
        if not weights.exists():
            weights = max((damaged / "checkpoints").glob("chck_*/model.safetensors"), key=os.path.getmtime)
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        before = sorted(p.relative_to(damaged) for p in damaged.rglob("*"))
        assert_one_sentence(run_cli("pretrain", "--resume", str(damaged), env=ENV), "cannot be read")
        assert sorted(p.relative_to(damaged) for p in damaged.rglob("*")) == before

    resumed = run_cli("pretrain", "--resume", str(run), env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    _same_run(run, reference_run)
    assert not (run / "resume_point").exists() and not (run / ".lock").exists()


def test_a_second_process_on_the_same_run_is_refused_and_the_first_is_unharmed(reference_run, tmp_path):
    run = tmp_path / "run"
    first = _start(run)
    _wait_for_step(first, run, 1)
    first.send_signal(signal.SIGSTOP)  # paused mid-run, still holding the lock: no race with its end
    try:
        others = [
            subprocess.Popen([sys.executable, "-m", "onceupon.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
            for args in (["pretrain", "--resume", str(run)], ["corpus", "--out", str(run), "--config", TINY])
        ]
        results = [subprocess.CompletedProcess(o.args, o.wait(timeout=120), *o.communicate()) for o in others]
    finally:
        first.send_signal(signal.SIGCONT)
    stderr = first.communicate(timeout=300)[1]
    assert first.returncode == 0, stderr
    for result in results:
        assert_one_sentence(result, f"PID {first.pid}", "in use")
    _same_run(run, reference_run)


@pytest.mark.skipif(NO_PRIVATE_MOUNTS is not None, reason=str(NO_PRIVATE_MOUNTS))
def test_a_full_disk_mid_run_is_one_sentence_and_the_run_resumes_identically(reference_run, tmp_path):
    """A 4 MB file system holds the corpus, tokenizer and packed data but not the first
    checkpoint: one sentence, no partial checkpoint; with room again, --resume ends exactly
    where an uninterrupted run does."""
    settings = " ".join(f"--set {s}" for s in RUN_SETTINGS)
    script = f"""
        mount -t tmpfs -o size=4m tmpfs "$M" || exit 99
        $ONCEUPON pretrain --out "$M/run" --config {TINY} {settings} 2> {tmp_path}/full.err
        echo $? > {tmp_path}/full.rc
        ls -A "$M/run/checkpoints" > {tmp_path}/full.ls
        mount -o remount,size=64m "$M" && $ONCEUPON pretrain --resume "$M/run" && cp -a "$M/run" {tmp_path}/run
    """
    result = _with_mount(script, tmp_path / "mnt")
    assert result.returncode == 0, result.stderr
    full = subprocess.CompletedProcess([], int((tmp_path / "full.rc").read_text()), "", (tmp_path / "full.err").read_text())
    assert_one_sentence(full, "No space left", "--resume")
    assert (tmp_path / "full.ls").read_text() == ""  # the checkpoint it could not finish is gone
    _same_run(tmp_path / "run", reference_run)


# --------------------------------------------------------------------------- evaluate
def _evaluate_run(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    """A pretraining run with one checkpoint (a copy of the tiny one)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run / "checkpoints" / "chck_0W")
    return run


def test_evaluate_out_that_is_a_file_is_refused_and_kept(tmp_path, tiny_checkpoint):
    out = tmp_path / "results.txt"
    out.write_text("precious\n")
    result = run_cli("evaluate", str(tiny_checkpoint), "--out", str(out), env=ENV)
    assert_one_sentence(result, str(out), "is a file")
    assert out.read_text() == "precious\n"


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_evaluate_refuses_damaged_weights_before_any_work(damage, tmp_path, tiny_checkpoint):
    run = _evaluate_run(tmp_path, tiny_checkpoint)
    weights = run / "checkpoints" / "chck_0W" / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"<html>not a model</html>" * 40)
    result = run_cli("evaluate", str(run), env=ENV)
    assert_one_sentence(result, str(weights), "cannot be read")
    assert not (run / "evaluation").exists() and not (run / "results.json").exists()
    # One checkpoint given directly: nothing made beside it either.
    result = run_cli("evaluate", str(run / "checkpoints" / "chck_0W"), "--out", str(tmp_path / "out"), env=ENV)
    assert_one_sentence(result, "cannot be read")
    assert not (tmp_path / "out").exists()


def test_a_second_evaluation_of_one_run_is_refused_and_the_first_finishes(tmp_path, tiny_checkpoint):
    run = _evaluate_run(tmp_path, tiny_checkpoint)
    small = ["--set", "evaluate.stories=0", "--set", "evaluate.probe_items=50"]
    first = subprocess.Popen(
        [sys.executable, "-m", "onceupon.cli", "evaluate", str(run), *small],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV},
    )
    deadline = time.monotonic() + 120
    while not (run / "evaluation" / ".lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # holding the lock, paused: no race with its end
    try:
        assert first.poll() is None, "the first evaluation ended before it could be paused"
        second = run_cli("evaluate", str(run), *small, env=ENV)
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert_one_sentence(second, f"PID {first.pid}", "in use")
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert [r["checkpoint"] for r in rows] == ["chck_0W"] and rows[0]["tasks"]["storyworld_entity_tracking"]["n"] == 50


# --------------------------------------------------------------------------- rate
RATE_STORY = {"id": "a", "prompt": "Once upon a time,", "continuation": "there lived a fox. It found a red box and took it home."}


def _rate(tmp_path: Path, url: str | None = None, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    stories = tmp_path / "stories.jsonl"
    if not stories.exists():
        stories.write_text(json.dumps(RATE_STORY) + "\n")
    server = ["--set", "teacher.backend=openai", "--set", f"teacher.base_url={url}"] if url else []
    return run_cli("rate", str(stories), *server, *args, env=ENV), tmp_path / "stories.ratings.jsonl"


def _nothing_rated_left(tmp_path: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stories.jsonl"]


@pytest.mark.parametrize("kind, described", [("html", "an HTML page"), ("text", "plain text"), ("badjson", "malformed JSON")])
def test_rate_against_a_server_that_is_not_openai(kind, described, tmp_path):
    from http_servers import start_garbage_server

    proc, url = start_garbage_server(kind)  # answers everything, GET /models too, with garbage
    with proc:
        result, _ = _rate(tmp_path, url)
    assert_one_sentence(result, "does not speak the OpenAI API", described, "teacher.base_url")
    _nothing_rated_left(tmp_path)


@pytest.mark.parametrize("kind, described", [("html", "an HTML page"), ("text", "plain text"), ("badjson", "malformed JSON")])
def test_rate_when_every_answer_is_garbage(kind, described, tmp_path):
    from http_servers import start_garbage_server

    proc, url = start_garbage_server(kind, models_ok=True)  # passes the start-up check, then garbage
    with proc:
        result, _ = _rate(tmp_path, url, "--set", "teacher.max_retries=1", "--set", "teacher.backoff=0.01")
    assert_one_sentence(result, "stopped answering", described)
    _nothing_rated_left(tmp_path)


def test_rate_with_an_unreachable_server(tmp_path):
    from http_servers import free_port

    result, _ = _rate(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    assert_one_sentence(result, "Cannot reach the teacher server")
    _nothing_rated_left(tmp_path)


def test_rate_out_that_is_a_directory_is_refused_before_any_request(tmp_path):
    (tmp_path / "ratings").mkdir()
    result, _ = _rate(tmp_path, None, "--out", str(tmp_path / "ratings"))
    assert_one_sentence(result, "is a directory")
    assert list((tmp_path / "ratings").iterdir()) == []


def test_rate_with_duplicate_ids_is_refused(tmp_path):
    (tmp_path / "stories.jsonl").write_text(json.dumps(RATE_STORY) + "\n" + json.dumps({**RATE_STORY, "continuation": "another tale."}) + "\n")
    result, out = _rate(tmp_path)
    assert_one_sentence(result, "lines 1 and 2 both have the id 'a'")
    assert not out.exists()


# --------------------------------------------------------------------------- check-teacher, evaluate --judge
def _stories_file(path: Path, n: int) -> Path:
    story = "The fox found a red box. She put a stone in it. Then she ran home to tell the bear about it all."
    path.write_text("".join(json.dumps({"continuation": story}) + "\n" for _ in range(n)))
    return path


@pytest.mark.parametrize(
    "case, needles",
    [
        ("unreachable server", ["Cannot reach the teacher server"]),
        ("empty stories file", ["holds no stories"]),
        ("stories file not JSON", ["line 1: not valid JSON"]),
        ("too few usable stories", ["has 4 usable stories of 4", "needs at least 10"]),
        ("too few stories asked for", ["--n 3 is too few", "at least 10"]),
    ],
)
def test_check_teacher_bad_input_is_one_sentence_and_makes_nothing(case, needles, tmp_path):
    out = tmp_path / "check"
    args = {
        "unreachable server": ["--set", "teacher.backend=openai", "--set", "teacher.base_url=http://127.0.0.1:9/v1"],
        "empty stories file": ["--stories", str(tmp_path / "empty.jsonl")],
        "stories file not JSON": ["--stories", str(tmp_path / "notes.jsonl")],
        "too few usable stories": ["--stories", str(_stories_file(tmp_path / "few.jsonl", 4))],
        "too few stories asked for": ["--n", "3"],
    }[case]
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "notes.jsonl").write_text("my stories, one per line\n")
    assert_one_sentence(run_cli("check-teacher", "--out", str(out), *args, env=ENV), *needles)
    assert not out.exists()


def test_judging_a_run_that_was_never_evaluated_is_one_sentence(tmp_path, tiny_checkpoint):
    run = _evaluate_run(tmp_path, tiny_checkpoint)
    assert_one_sentence(run_cli("evaluate", str(run), "--judge", env=ENV), "no results.json", "onceupon evaluate")
    assert not (run / "evaluation").exists()


# --------------------------------------------------------------------------- interact
SHORT_INTERACTION = ["interact.batch_size=4", "interact.mini_batch_size=4", "interact.max_new_tokens=8", "interact.max_steps=1"]


def _interact(start: Path, out: Path, *settings: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    args = [*prefix, sys.executable, "-m", "onceupon.cli", "interact", "--from", str(start), "--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env={**os.environ, **ENV})


def test_interact_out_that_is_a_file_is_refused_and_kept(tmp_path, tiny_checkpoint):
    out = tmp_path / "notes.txt"
    out.write_text("precious\n")
    assert_one_sentence(_interact(tiny_checkpoint, out), str(out), "is a file")
    assert out.read_text() == "precious\n"


def test_interact_out_in_a_read_only_directory_is_refused(tmp_path, tiny_checkpoint):
    locked = _read_only_dir()
    try:
        assert_one_sentence(_interact(tiny_checkpoint, locked / "run", prefix=tuple(_as_nobody())), "not writable")
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(locked.parent, ignore_errors=True)


def test_interact_settings_that_cannot_work_are_refused_before_the_run_exists(tmp_path, tiny_checkpoint):
    run = tmp_path / "run"
    # max_new_tokens beyond the student's context; a batch that cannot fit in memory
    # (and a mini-batch bigger than the batch: it would silently mean the whole batch)
    for settings, needle in [(["interact.max_new_tokens=100000"], "interact.max_new_tokens"),
                             (["interact.batch_size=100000000", "interact.mini_batch_size=100000000"], "GB"),
                             (["interact.mini_batch_size=64"], "must not exceed interact.batch_size (4)")]:  # fmt: skip
        assert_one_sentence(_interact(tiny_checkpoint, run, *SHORT_INTERACTION, *settings), needle)
        assert not run.exists()
    corrected = _interact(tiny_checkpoint, run, *SHORT_INTERACTION)  # the same --out works at once
    assert corrected.returncode == 0, corrected.stderr
    assert json.loads((run / "state.json").read_text())["done"] and not (run / ".lock").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_interact_from_damaged_weights_is_one_sentence(damage, tmp_path, tiny_checkpoint):
    start = tmp_path / "chck_0W"
    shutil.copytree(tiny_checkpoint, start)
    weights = start / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"<html>not a model</html>" * 40)
    assert_one_sentence(_interact(start, tmp_path / "run"), str(start), "cannot be read")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- files read through a schema
# Each file a command reads is checked as a whole before any work (onceupon.schemas); the cases
# found by hand, through the real command. tests/test_schemas.py fuzzes the readers themselves.
_SCORES = {"readability": 2, "coherence": 3, "creativity": 1}


@pytest.mark.parametrize(
    "other, needles",
    [
        ({"id": "a", "scores": {**_SCORES, "coherence": float("nan")}}, ["line 1", "scores.coherence", "0 to 3"]),
        ({"id": "a", "readability": float("inf"), "coherence": 1, "creativity": 1}, ["line 1", "readability"]),
        ({"id": "a", "annotator": "ada", "scores": {**_SCORES, "coherence": 7}}, ["line 1", "scores.coherence", "0 to 3"]),
        ({"id": "a", "annotator": ["ada"], "scores": _SCORES}, ["line 1", "annotator"]),
    ],
    ids=["NaN score", "Infinity score (spreadsheet)", "annotator score 7", "annotator a list"],
)
def test_rate_compare_with_a_bad_file_is_refused_before_any_rating(other, needles, tmp_path):
    compare = tmp_path / "other.jsonl"
    compare.write_text(json.dumps(other) + "\n")  # Python's json writes NaN and Infinity as they are read
    result, out = _rate(tmp_path, None, "--compare", str(compare))
    assert_one_sentence(result, str(compare), *needles)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["other.jsonl", "stories.jsonl"]


def test_rate_as_rated_on_stories_without_ratings_is_refused(tmp_path):
    (tmp_path / "people.jsonl").write_text(json.dumps({"id": "a", **_SCORES}) + "\n")
    result, _ = _rate(tmp_path, None, "--as-rated", "--compare", str(tmp_path / "people.jsonl"))
    assert_one_sentence(result, "stories.jsonl holds stories but no ratings", "without --as-rated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["people.jsonl", "stories.jsonl"]


def test_a_binary_prompt_template_is_one_sentence(tmp_path):
    template = tmp_path / "prompt.j2"
    template.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    result, out = _rate(tmp_path, None, "--set", f"teacher.template={template}")
    assert_one_sentence(result, str(template), "not valid UTF-8")
    assert not out.exists()


@pytest.mark.parametrize(
    "case, needles",
    [("probe targets a number", ["probes.jsonl, line 1", "targets"]), ("--n absurd", ["--n 1,000,000,000", "at most 10,000"])],
)
def test_check_teacher_refuses_bad_probes_and_an_absurd_n(case, needles, tmp_path):
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps({"id": "p1", "story": "s1", "kind": "shuffled", "targets": 5, "continuation": "x."}) + "\n")
    args = ["--probes", str(probes)] if case.startswith("probe") else ["--n", "1000000000"]
    out = tmp_path / "check"
    assert_one_sentence(run_cli("check-teacher", "--out", str(out), *args, env=ENV), *needles)
    assert not out.exists()


@pytest.mark.parametrize(
    "option, content, needles",
    [
        ("--check", {"criteria": {"coherence": []}, "verdict": {}}, ["check.json", "field"]),
        ("--agreement", {"annotators": {"ada": 3}, "teacher_vs": {}}, ["teacher_vs_mean", "missing"]),
        ("--agreement", {"annotators": {"ada": 3}, "teacher_vs": [], "teacher_vs_mean": 1, "between": {}}, ["teacher_vs"]),
    ],
    ids=["check.json of the wrong shape", "partial agreement", "agreement wrongly typed"],
)
def test_report_with_a_results_file_of_the_wrong_shape_is_one_sentence(option, content, needles, tmp_path):
    given = tmp_path / ("check.json" if option == "--check" else "ours.agreement.json")
    given.write_text(json.dumps(content))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,loss\n1,2.0\n")
    out = tmp_path / "report"
    assert_one_sentence(run_cli("report", str(run), "--out", str(out), option, str(given), env=ENV), str(given), *needles)
    assert not out.exists()


@pytest.mark.parametrize("setting", ["pretrain.epochs=inf", "pretrain.seed=99999999999999999999999"])
def test_pretrain_with_a_number_that_does_not_fit_is_one_sentence(setting, tmp_path):
    assert_one_sentence(_pretrain(tmp_path / "run", setting), setting.split("=")[0])
    assert not (tmp_path / "run").exists()


def test_interact_with_a_seed_numpy_cannot_take_is_refused_at_once(tmp_path, tiny_checkpoint):
    started = time.monotonic()
    result = _interact(tiny_checkpoint, tmp_path / "run", *SHORT_INTERACTION, "interact.seed=99999999999999999999999")
    assert_one_sentence(result, "interact.seed", "4294967295")
    assert time.monotonic() - started < 60 and not (tmp_path / "run").exists()  # it was 18 s of loading first


def test_report_score_that_names_no_criterion_is_one_sentence(tmp_path):
    from fake_runs import make_pretraining_run

    run = make_pretraining_run(tmp_path / "runs", {1_000: 3.0, 10_000: 5.0}, n_stories=4)
    result = run_cli("report", str(run), "--out", str(tmp_path / "report"), "--set", "report.score=nosuch", env=ENV)
    assert_one_sentence(result, "report.score 'nosuch' is not a criterion", "coherence")
    assert not (tmp_path / "report").exists()
    corrected = run_cli("report", str(run), "--out", str(tmp_path / "report"), "--set", "report.score=coherence", env=ENV)
    assert corrected.returncode == 0, corrected.stderr


# --------------------------------------------------------------------------- --resume and the saved config
def _saved_run(run: Path, *settings: str, state: object = None) -> Path:
    """A run directory as a new run leaves it before its first checkpoint: its config (and,
    for an interaction run, ``state``)."""
    from onceupon.config import load_config, save_config

    run.mkdir(parents=True)
    save_config(load_config(TINY, list(settings)), run)
    if state is not None:
        (run / "state.json").write_text(json.dumps(state))
    return run


@pytest.mark.parametrize("how", ["--set", "an edited config.yaml"])
def test_pretrain_resume_refuses_a_change_that_alters_the_run(how, tmp_path):
    run = _saved_run(tmp_path / "run")
    args = ["--set", "pretrain.batch_size=8"] if how == "--set" else []
    if how != "--set":
        (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("batch_size: 4\n", "batch_size: 8\n", 1))
    before = sorted(p.name for p in run.iterdir())
    result = run_cli("pretrain", "--resume", str(run), *args, env=ENV)
    assert_one_sentence(result, "would change pretrain.batch_size from 4 to 8", "alters the run")
    assert sorted(p.name for p in run.iterdir()) == before  # no corpus, tokenizer or packed data


def test_interact_resume_refuses_a_changed_batch_size_and_a_state_json_of_the_wrong_shape(tmp_path, tiny_checkpoint):
    state = {"start_checkpoint": str(tiny_checkpoint), "algorithm": "ppo", "step": 0, "stories": 0, "input_words": 0,
             "generated_words": 0, "checkpoint": None, "done": False}  # fmt: skip
    run = _saved_run(tmp_path / "run", *SHORT_INTERACTION, state=state)
    result = run_cli("interact", "--resume", str(run), "--set", "interact.batch_size=8", env=ENV)
    assert_one_sentence(result, "would change interact.batch_size from 4 to 8")
    (run / "state.json").write_text("[1, 2]")
    assert_one_sentence(run_cli("interact", "--resume", str(run), env=ENV), "state.json", "expected a JSON object, not a list")
