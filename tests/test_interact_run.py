"""Whole interaction runs: learning, budgets, checkpoints, anthology, crash and resume, CLI.

Students are tiny gpt2-micro models; teachers are the deterministic ones in
tests/interact_support.py (in-process) or the default heuristic teacher (CLI runs).
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_one_sentence, run_cli
from interact_support import KeywordTeacher, make_pretrained_micro
from onceupon.config import PAPER_PROMPT, load_config
from onceupon.interact.interact import interact
from onceupon.lifecycle.checkpoints import list_checkpoints, read_meta
from onceupon.words import count_words

PROMPT_WORDS = count_words(PAPER_PROMPT)  # 16


def config(*overrides: str):
    base = [
        "interact.batch_size=8",
        "interact.mini_batch_size=8",
        "interact.max_new_tokens=16",
        "interact.learning_rate=1e-4",
    ]
    return load_config(None, base + list(overrides))


def anthology(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "anthology.jsonl").read_text(encoding="utf-8").splitlines()]


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    return make_pretrained_micro(tmp_path_factory.mktemp("student") / "chck_pre")


# --------------------------------------------------------------------------- learning
def mean_reward(rows, steps):
    return sum(float(rows[s]["reward/mean"]) for s in steps) / len(steps)


@pytest.mark.parametrize(
    "algorithm, overrides",
    [
        ("rloo", ["interact.learning_rate=3e-4", "interact.group_size=4"]),
        ("grpo", ["interact.learning_rate=1e-4", "interact.group_size=4"]),
        ("ppo", ["interact.learning_rate=1e-4", "interact.init_kl_coef=0.05"]),
    ],
)
def test_mean_reward_rises(pretrained, tmp_path, algorithm, overrides):
    steps = 24
    cfg = config(
        f"interact.algorithm={algorithm}",
        "interact.batch_size=16",
        "interact.mini_batch_size=16",
        "interact.max_new_tokens=24",
        "interact.length_bonus=0",
        f"interact.max_steps={steps}",
        "interact.checkpoint_every=1M",
        *overrides,
    )
    interact(cfg, pretrained, tmp_path / "run", teacher=KeywordTeacher())
    rows = metrics(tmp_path / "run")
    assert len(rows) == steps
    first, last = mean_reward(rows, range(0, 4)), mean_reward(rows, range(steps - 4, steps))
    assert last > first + 0.05, (first, last)


class Reinforce:
    """Plain REINFORCE with a batch-mean baseline, written against the objective interface
    alone (onceupon.interact.objective.Objective): the loop runs it without knowing its name."""

    name, group_size, needs_value_head, kl_coef = "reinforce", 1, False, None

    def __init__(self, cfg):
        self.cfg = cfg

    def loss(self, part, logprobs, values, n_tok):
        loss = -(part.advantages * logprobs * part.mask).sum() / n_tok
        return loss, {"loss/policy": (loss * n_tok).item()}

    def update(self, policy, optimizer, exp, accelerator=None):
        from dataclasses import replace

        from onceupon.interact.update import UpdateResult, optimise

        baseline = (exp.rewards * exp.include).sum() / exp.include.sum()
        train = replace(exp, advantages=(exp.rewards - baseline)[:, None] * exp.mask)
        return UpdateResult(optimise(policy, optimizer, train, self.loss, self.cfg, accelerator), exp.include)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_a_new_objective_runs_end_to_end_without_touching_the_loop(tiny_checkpoint, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    cfg = config("interact.max_steps=3", "interact.max_new_tokens=8", "interact.checkpoint_every=40",
                 "interact.epochs=1")
    final = interact(cfg, tiny_checkpoint, run, teacher=KeywordTeacher(invalid_every=4),
                     objective=Reinforce(cfg.interact))
    state = json.loads((run / "state.json").read_text())
    assert state["done"] and state["step"] == 3 and state["algorithm"] == "reinforce"
    assert [(s["step"], s["index"]) for s in anthology(run)] == [(t, i) for t in (1, 2, 3) for i in range(8)]
    rows = metrics(run)
    assert len(rows) == 3 and all(float(r["loss/policy"]) != 0 for r in rows)
    assert read_meta(final).extra["algorithm"] == "reinforce"
    before = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).state_dict()
    after = AutoModelForCausalLM.from_pretrained(final).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it learned something


# --------------------------------------------------------------------------- budget and files
def test_paper_accounting_exactly_on_a_small_budget(tiny_checkpoint, tmp_path):
    # The prompt counted once (16 words) + 3 words per teacher reply: a budget of 16 + 3 * 21
    # admits exactly 21 stories: two full batches of 8 and 5 of the third.
    run = tmp_path / "run"
    cfg = config(f"interact.input_budget={PROMPT_WORDS + 3 * 21}", "interact.checkpoint_every=30")
    final = interact(cfg, tiny_checkpoint, run, teacher=KeywordTeacher(invalid_every=4))
    state = json.loads((run / "state.json").read_text())
    assert state["done"] and state["step"] == 3
    assert state["stories"] == 21 and state["input_words"] == PROMPT_WORDS + 63 == cfg.interact.input_budget
    assert state["prompt_words"] == PROMPT_WORDS and state["teacher_words"] == 63
    stories = anthology(run)
    assert [(s["step"], s["index"]) for s in stories] == [(t, i) for t in (1, 2, 3) for i in range(8)][:21]
    assert state["generated_words"] == sum(s["n_words"] for s in stories)
    assert all(s["n_words"] == count_words(s["continuation"]) for s in stories)
    # cumulative input words per batch: 16 + 24, then +24, then +15
    assert [s["input_words"] for s in stories[::8]] == [40, 64, 79]
    # invalid ratings are recorded, rewarded with null, and counted as input words
    invalid = [s for s in stories if not s["valid"]]
    assert len(invalid) == 5 and all(s["reward"] is None and s["score"] is None for s in invalid)
    assert all(s["raw"] == "cannot rate this" for s in invalid)
    # checkpoints at the 30- and 60-word milestones and a final one at the budget
    names = [p.name for p in list_checkpoints(run)]
    assert names == ["chck_30W", "chck_60W", f"chck_{PROMPT_WORDS + 63}W"] == names
    meta = read_meta(final)
    assert meta.stage == "interact" and meta.interact_words == 79 and meta.step == 3
    assert meta.generated_words == state["generated_words"]
    rows = metrics(run)
    assert [int(r["budget/dropped_stories"]) for r in rows] == [0, 0, 3]
    assert float(rows[0]["invalid_rate"]) == pytest.approx(2 / 8)


def test_generation_budget_is_never_exceeded(tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    cfg = config("interact.generation_budget=100", "interact.checkpoint_every=1M")
    interact(cfg, tiny_checkpoint, run, teacher=KeywordTeacher())
    state = json.loads((run / "state.json").read_text())
    stories = anthology(run)
    assert 0 < state["generated_words"] <= 100
    assert state["generated_words"] == sum(s["n_words"] for s in stories)
    assert state["stories"] == len(stories)
    # The budget ended the run (no max_steps): every batch but the last was taken whole, and the
    # last one either used the generation budget up exactly or was cut because its next story
    # would not have fitted.
    dropped = [int(r["budget/dropped_stories"]) for r in metrics(run)]
    assert dropped[:-1] == [0] * (len(dropped) - 1)
    assert dropped[-1] > 0 or state["generated_words"] == 100, (dropped, state["generated_words"])
    assert len(stories) == 8 * len(dropped) - dropped[-1]


def test_a_run_with_a_prompts_file_counts_each_distinct_prompt_once(tiny_checkpoint, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Once there was a fox.\nA bear had a box.\n", encoding="utf-8")
    run = tmp_path / "run"
    cfg = config(f"interact.prompts_file={prompts}", "interact.max_steps=2", "interact.algorithm=rloo",
                 "interact.group_size=4")
    interact(cfg, tiny_checkpoint, run, teacher=KeywordTeacher())
    stories = anthology(run)
    assert len(stories) == 16
    assert {s["prompt"] for s in stories} == {"Once there was a fox.", "A bear had a box."}
    for g in range(4):  # groups of 4 consecutive stories share their prompt
        assert len({s["prompt"] for s in stories[4 * g : 4 * g + 4]}) == 1
    state = json.loads((run / "state.json").read_text())
    assert state["prompt_words"] == 5 + 5 and state["teacher_words"] == 3 * 16


def test_a_story_the_update_did_not_learn_from_has_a_null_reward(tiny_checkpoint, tmp_path):
    # Groups of 2 where every second story's rating is invalid: no group has a baseline.
    run = tmp_path / "run"
    cfg = config("interact.algorithm=rloo", "interact.group_size=2", "interact.max_steps=1")
    interact(cfg, tiny_checkpoint, run, teacher=KeywordTeacher(invalid_every=2))
    stories = anthology(run)
    assert len(stories) == 8 and sum(s["score"] is not None for s in stories) == 4
    assert all(s["reward"] is None for s in stories)
    assert float(metrics(run)[0]["group/without_baseline"]) == 4


class FailingTeacher(KeywordTeacher):
    """Answers ``calls_before`` batches, then its server is gone for good."""

    def __init__(self, calls_before: int):
        super().__init__()
        self.calls_before = calls_before

    def rate(self, stories):
        if self.calls == self.calls_before:
            raise RuntimeError("teacher gone")
        return super().rate(stories)


def test_state_json_names_the_newest_checkpoint_on_disk(tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    cfg = config("interact.checkpoint_every=50", "interact.max_new_tokens=8")  # a checkpoint after step 2 (64 words)
    with pytest.raises(RuntimeError, match="teacher gone"):
        interact(cfg, tiny_checkpoint, run, teacher=FailingTeacher(calls_before=2))
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 2 and not state["done"]
    assert state["checkpoint"] == list_checkpoints(run)[-1].name == "chck_50W"


def test_settings_of_the_other_algorithm_are_named_in_the_log(tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    cfg = config("interact.max_steps=1", "interact.max_new_tokens=8", "interact.group_size=6", "interact.gamma=0.9")
    interact(cfg, tiny_checkpoint, run, teacher=KeywordTeacher())  # ppo: group_size is not read
    warnings = [line for line in (run / "log.txt").read_text().splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "interact.group_size only apply to rloo/grpo" in warnings[0], warnings
    assert "gamma" not in warnings[0]  # a ppo setting: used


class StallingBackend:
    """A backend that streams its ratings: its first story answered, its second a request that
    failed, then a stall of two seconds before the rest. ``status()`` says how often it was read."""

    identity = "test:stalling"

    def __init__(self, rubric):
        self.rubric, self.reads = rubric, 0

    def status(self) -> str:
        self.reads += 1
        return f"status read {self.reads} times"

    def rate(self, stories, on_rated=None):
        from onceupon.teacher.base import Outcome, Rating

        out = []
        for i, _ in enumerate(stories):
            if i == 1:
                rating = Rating(valid=False, raw="", error="no answer after 6 attempts", outcome=Outcome.FAILED)
            else:
                rating = self.rubric.rating("2 2 2", {c.name: 2 for c in self.rubric.criteria})
            if i == 2:
                time.sleep(2.0)
            on_rated(i, rating)
            out.append(rating)
        return out

    def close(self) -> None:
        pass


def test_the_progress_line_counts_failed_ratings_apart_and_refreshes_while_the_teacher_stalls(
    pretrained, tmp_path, monkeypatch
):
    from onceupon.teacher.pipeline import RubricTeacher
    from onceupon.teacher.rubric import Rubric

    monkeypatch.setenv("ONCEUPON_PROGRESS", "plain")
    monkeypatch.setenv("ONCEUPON_PROGRESS_INTERVAL", "0.05")
    run = tmp_path / "run"
    cfg = config("interact.batch_size=4", "interact.mini_batch_size=4", "interact.max_steps=1",
                 "interact.teacher_check=skip")
    rubric = Rubric()
    interact(cfg, pretrained, run, teacher=RubricTeacher(StallingBackend(rubric), rubric, min_words=0))
    lines = [line for line in (run / "log.txt").read_text().splitlines() if "interact (ppo)" in line]
    # While the teacher stalls after a failed request, the line is refreshed all the same (the
    # teacher's status is read anew with no rating arriving), and the failed story is not
    # "rated". (An empty story is rated by the rubric's rule, not asked: hence k, not 1.)
    reads: dict[str, set[str]] = {}
    for line in lines:
        if found := re.search(r"step 1: (\d)/4 rated, 1 failed, status read (\d+) times", line):
            reads.setdefault(found[1], set()).add(found[2])
    assert max(map(len, reads.values()), default=0) >= 3, lines
    assert re.search(r"step 1: 3/4 rated, 1 failed, status read \d+ times$", lines[-1]), lines[-1]
    assert not any("4/4 rated" in line for line in lines), lines


def test_the_lock_is_taken_before_anything_is_loaded(tmp_path):
    # A start checkpoint that does not exist would be refused once loaded; the lock comes first.
    from onceupon.lifecycle.lock import run_lock

    run = tmp_path / "run"
    with run_lock(run):
        res = run_cli("interact", "--from", str(tmp_path / "nowhere"), "--out", str(run))
    assert_one_sentence(res, f"PID {os.getpid()}", "in use")


def test_a_locked_run_is_refused_before_torch_is_imported(tiny_checkpoint, tmp_path):
    # Importing torch takes seconds (tens on a busy machine): the lock is checked before it.
    from onceupon.lifecycle.lock import run_lock

    new, old = tmp_path / "new", tmp_path / "old"
    old.mkdir()
    (old / "state.json").write_text("{}")  # enough for --resume to take it for an interaction run
    code = "import sys\nfrom onceupon.cli import main\ntry:\n    main()\nfinally:\n    print('torch' in sys.modules)"
    for run, args in ((new, ["--from", str(tiny_checkpoint), "--out", str(new)]), (old, ["--resume", str(old)])):
        with run_lock(run):
            res = subprocess.run([sys.executable, "-c", code, "interact", *args], capture_output=True, text=True)
        assert res.returncode == 2 and "in use" in res.stderr, res.stderr
        assert res.stdout.strip() == "False", args


# --------------------------------------------------------------------------- crash and resume
def cli_env():
    # the tests' folder first, then whatever PYTHONPATH already names (a checkout's src/ that
    # must be the onceupon under test, not the one installed)
    paths = [str(Path(__file__).parent), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


RESUME_SETTINGS = [
    "--set", "interact.batch_size=8", "--set", "interact.mini_batch_size=8",
    "--set", "interact.max_new_tokens=16", "--set", "interact.learning_rate=1e-4",
    "--set", "interact.max_steps=10", "--set", "interact.checkpoint_every=50",
]


def comparable(stories):
    return [(s["step"], s["index"], s["continuation"], s["raw"], s["reward"], s["input_words"]) for s in stories]


def start_run(checkpoint: Path, run: Path, *args: str) -> subprocess.Popen:
    """``onceupon interact`` with RESUME_SETTINGS in a real process (stderr kept)."""
    return subprocess.Popen(
        [sys.executable, "-m", "onceupon.cli", "interact", *args, "--from", str(checkpoint), "--out", str(run),
         *RESUME_SETTINGS],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )  # fmt: skip


def wait_for_batches(proc: subprocess.Popen, run: Path, batches: int) -> None:
    """Until the anthology holds ``batches`` batches of 8 (the process is then mid-run)."""
    deadline = time.time() + 300
    book = run / "anthology.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if book.exists() and book.read_text(encoding="utf-8").count("\n") >= batches * 8:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended or stalled before {batches} batches: {proc.communicate()[1]}")


def assert_same_run(run: Path, straight: Path) -> None:
    """The same counters, stories, metrics steps and checkpoints as the uninterrupted run, and
    bit-identical final weights."""
    from safetensors.numpy import load_file

    a, b = json.loads((straight / "state.json").read_text()), json.loads((run / "state.json").read_text())
    for key in ("step", "stories", "input_words", "prompt_words", "teacher_words", "generated_words", "done"):
        assert a[key] == b[key], key
    sa, sb = anthology(straight), anthology(run)
    assert [(s["step"], s["index"]) for s in sb] == [(t, i) for t in range(1, 11) for i in range(8)]  # no gap, no repeat
    assert comparable(sa) == comparable(sb)  # the very same stories: RNG and weights were restored
    assert [r["step"] for r in metrics(run)] == [str(s) for s in range(1, 11)]
    # the watch resumed too: its state from the checkpoint, its records cut back to it
    assert (run / "watch.jsonl").read_text(encoding="utf-8") == (straight / "watch.jsonl").read_text(encoding="utf-8")
    assert [p.name for p in list_checkpoints(straight)] == [p.name for p in list_checkpoints(run)]
    final = list_checkpoints(straight)[-1].name
    wa = load_file(straight / "checkpoints" / final / "model.safetensors")
    wb = load_file(run / "checkpoints" / final / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert not (run / "resume_point").exists() and not (run / ".lock").exists()


@pytest.fixture(scope="module")
def straight(tiny_checkpoint, tmp_path_factory) -> Path:
    """An uninterrupted run of RESUME_SETTINGS (read-only for the tests)."""
    run = tmp_path_factory.mktemp("straight") / "run"
    res = run_cli("interact", "--from", str(tiny_checkpoint), "--out", str(run), *RESUME_SETTINGS)
    assert res.returncode == 0, res.stderr
    return run


@pytest.fixture(scope="module")
def killed(tiny_checkpoint, tmp_path_factory) -> Path:
    """A run killed with SIGKILL after 6 batches: past the checkpoint of step 4, mid-way to the
    next one (read-only for the tests: copy it)."""
    crashed = tmp_path_factory.mktemp("killed") / "run"
    proc = start_run(tiny_checkpoint, crashed)
    wait_for_batches(proc, crashed, 6)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not json.loads((crashed / "state.json").read_text())["done"]
    return crashed


def test_sigkill_and_resume_equals_an_uninterrupted_run(straight, killed, tmp_path, cli):
    crashed = tmp_path / "run"
    shutil.copytree(killed, crashed)
    with open(crashed / "anthology.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 7, "index": 0, "prompt": "Once up')  # a torn tail: cut on resume
    res = cli("interact", "--resume", str(crashed))
    assert res.returncode == 0, res.stderr
    assert_same_run(crashed, straight)
    # a finished run resumes to a no-op
    again = cli("interact", "--resume", str(crashed))
    assert again.returncode == 0 and "already complete" in again.stdout


@pytest.mark.parametrize("damage", ["a story lost", "a story changed", "a line torn"])
def test_damage_inside_the_checkpointed_anthology_is_refused(killed, tmp_path, cli, damage):
    run = tmp_path / "run"
    shutil.copytree(killed, run)
    lines = (run / "anthology.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    if damage == "a story lost":
        del lines[3]
    elif damage == "a story changed":
        lines[3] = lines[3].replace('"continuation": "', '"continuation": "edited ', 1)
    else:
        lines[3] = lines[3][:20] + "\n"
    (run / "anthology.jsonl").write_text("".join(lines), encoding="utf-8")
    files = lambda: {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}  # noqa: E731
    before = files()
    res = cli("interact", "--resume", str(run))
    assert_one_sentence(res, "anthology.jsonl no longer matches checkpoint chck_", "backup")
    assert files() == before  # nothing touched


def test_resume_from_damaged_weights_is_one_sentence(killed, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(killed, run)
    weights = list_checkpoints(run)[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = (run / "anthology.jsonl").read_bytes()
    res = cli("interact", "--resume", str(run))
    assert assert_one_sentence(res).startswith(f"error: The checkpoint {weights.parent} cannot be read"), res.stderr
    assert (run / "anthology.jsonl").read_bytes() == before


@pytest.mark.slow  # three processes in turn (~30 s on two idle cores)
def test_ctrl_c_then_sigterm_stop_safely_and_resume_identically(tiny_checkpoint, straight, tmp_path, cli):
    """Ctrl-C after 3 batches, resume, SIGTERM after 7, resume: the same run as uninterrupted."""
    run = tmp_path / "run"
    proc = start_run(tiny_checkpoint, run)
    for signum, batches in ((signal.SIGINT, 3), (signal.SIGTERM, 7)):
        wait_for_batches(proc, run, batches)
        proc.send_signal(signum)
        stderr = proc.communicate(timeout=300)[1]
        assert proc.returncode == 128 + signum and "Traceback" not in stderr, stderr
        last = [line for line in stderr.splitlines() if line.strip()][-1]
        assert last.startswith("stopped after step") and f"onceupon interact --resume {run}" in last, stderr
        state = json.loads((run / "state.json").read_text())
        assert not state["done"] and len(anthology(run)) == state["stories"] >= batches * 8  # nothing rated lost
        proc = subprocess.Popen(
            [sys.executable, "-m", "onceupon.cli", "interact", "--resume", str(run)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(),
        )  # fmt: skip
    assert proc.wait(timeout=300) == 0, proc.communicate()[1]
    assert_same_run(run, straight)


def test_a_second_process_on_the_same_run_is_refused_and_the_first_is_unharmed(tiny_checkpoint, straight, tmp_path):
    run = tmp_path / "run"
    first = start_run(tiny_checkpoint, run)
    wait_for_batches(first, run, 1)
    first.send_signal(signal.SIGSTOP)  # paused mid-run, still holding the lock: no race with its end
    try:
        second = run_cli("interact", "--resume", str(run), env={"PYTHONPATH": str(Path(__file__).parent)})
    finally:
        first.send_signal(signal.SIGCONT)
    stderr = first.communicate(timeout=300)[1]
    assert first.returncode == 0, stderr
    assert_one_sentence(second, f"PID {first.pid}")
    assert_same_run(run, straight)


# --------------------------------------------------------------------------- CLI errors
def test_bad_input_exits_2_with_one_sentence(tiny_checkpoint, tmp_path, cli):
    cases = [
        ("interact", "--out", str(tmp_path / "a")),  # no --from
        ("interact", "--from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")),
        ("interact", "--resume", str(tmp_path / "empty")),
        ("interact", "--resume", str(tmp_path / "empty"), "--set", "interact.batch_size=4"),  # config is the run's
        ("interact", "--from", str(tiny_checkpoint), "--out", str(tmp_path / "c"),
         "--set", "interact.algorithm=rloo", "--set", "interact.batch_size=6", "--set", "interact.group_size=4"),
        ("interact", "--from", str(tiny_checkpoint), "--out", str(tmp_path / "d"),
         "--set", f"interact.prompts_file={tmp_path / 'missing.txt'}"),
        ("interact", "--from", str(tiny_checkpoint), "--out", str(tmp_path / "e"), "--set", "interact.top_p=2"),
    ]
    for args in cases:
        assert_one_sentence(cli(*args))
    assert not (tmp_path / "c" / "anthology.jsonl").exists()


def test_an_existing_run_is_not_overwritten(tiny_checkpoint, tmp_path, cli):
    run = tmp_path / "run"
    ok = cli("interact", "--from", str(tiny_checkpoint), "--out", str(run), "--set", "interact.batch_size=4",
             "--set", "interact.max_new_tokens=8", "--set", "interact.max_steps=1")
    assert ok.returncode == 0, ok.stderr
    before = (run / "anthology.jsonl").read_text()
    res = cli("interact", "--from", str(tiny_checkpoint), "--out", str(run))
    assert res.returncode == 2 and "--resume" in res.stderr
    assert (run / "anthology.jsonl").read_text() == before


# --------------------------------------------------------------------------- openai teacher
def test_end_to_end_with_the_openai_backend(tiny_checkpoint, tmp_path, cli, teacher_server):
    run = tmp_path / "run"
    res = cli(
        "interact", "--from", str(tiny_checkpoint), "--out", str(run),
        "--set", "teacher.backend=openai", "--set", f"teacher.base_url={teacher_server}",
        "--set", "interact.batch_size=4", "--set", "interact.mini_batch_size=4",
        "--set", "interact.max_new_tokens=12", "--set", "interact.max_steps=2",
        "--set", "teacher.min_words=0",
        "--skip-teacher-check",  # a judge that answers "2 3 1" to everything fails the check (test_check_teacher)
        env={"ONCEUPON_PROGRESS": "plain", "ONCEUPON_PROGRESS_INTERVAL": "0.05"},
    )
    assert res.returncode == 0, res.stderr
    # Never silent while the teacher rates: the progress lines (stderr and RUN/log.txt alike)
    # say how far the step's rating is and what the server is doing.
    logged = (run / "log.txt").read_text()
    assert re.search(r"interact \(ppo\): .*step \d: \d/4 rated, \d+ in flight", logged), logged[-2000:]
    assert "rated" in res.stderr
    stories = anthology(run)
    assert len(stories) == 8
    answered = [s for s in stories if s["valid"] and s["raw"].strip() == "2 3 1"]
    assert answered, [s["raw"] for s in stories]
    for s in answered:
        assert s["scores"] == {"readability": 2, "coherence": 3, "creativity": 1}
        assert s["reward"] == pytest.approx((6 / 9 + 0.4 * s["n_words"] / 90) / 1.4)
    state = json.loads((run / "state.json").read_text())
    assert state["teacher_words"] == sum(count_words(s["raw"]) for s in stories)


# --------------------------------------------------------------------------- data parallel
@pytest.mark.slow
def test_accelerate_launch_two_processes(tiny_checkpoint, tmp_path):
    """Two CPU processes (gloo): each tells half the batch, one anthology and budget for all.
    Started by torchrun, as accelerate launches several processes on GPUs: on a CPU
    ``accelerate launch --cpu --num_processes 2`` (accelerate 1.16) starts one process only,
    which this test once ran without noticing."""
    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "onceupon.cli", "interact",
         "--from", str(tiny_checkpoint), "--out", str(run),
         "--set", "interact.batch_size=8", "--set", "interact.mini_batch_size=4", "--set", "interact.max_new_tokens=12",
         "--set", "interact.max_steps=3", "--set", "interact.checkpoint_every=40"],
        capture_output=True, text=True, timeout=900, env={**cli_env(), "ACCELERATE_USE_CPU": "true"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "data-parallel: 2 processes, 4 stories each per step" in (run / "log.txt").read_text()
    stories = anthology(run)
    assert [(s["step"], s["index"]) for s in stories] == [(t, i) for t in (1, 2, 3) for i in range(8)]
    state = json.loads((run / "state.json").read_text())
    assert state["done"] and state["stories"] == 24
    assert state["input_words"] == PROMPT_WORDS + sum(count_words(s["raw"]) for s in stories)
    assert state["generated_words"] == sum(s["n_words"] for s in stories)
    # the two halves of a batch were sampled with different seeds
    assert stories[0]["continuation"] != stories[4]["continuation"]
    assert [p.name for p in list_checkpoints(run)][-1].startswith("chck_")
