"""A teacher that fails mid-run costs at most its step; one that never answers validly stops
the run. Real tiny students, real teachers behind real loopback HTTP servers
(tests/fake_judges.py, tests/http_servers.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fake_judges import FakeJudge
from interact_support import KeywordTeacher
from onceupon.config import load_config
from onceupon.errors import UserError
from onceupon.interact.interact import interact
from onceupon.lifecycle.checkpoints import read_meta
from onceupon.lifecycle.stop import Stopped


def config(*overrides: str):
    base = ["interact.batch_size=4", "interact.mini_batch_size=4", "interact.max_new_tokens=12",
            "interact.learning_rate=1e-4", "interact.teacher_check=skip", "teacher.min_words=0"]  # fmt: skip
    return load_config(None, base + list(overrides))


def anthology(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "anthology.jsonl").read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- invalid answers
def test_a_teacher_that_answers_garbage_stops_the_run_with_one_sentence(tiny_checkpoint, tmp_path):
    """Before: 0 of 28 ratings valid, the run 'finished' with exit 0 and no warning."""
    run = tmp_path / "run"
    with FakeJudge(lambda story: "<html>502 Bad Gateway</html>") as judge:
        cfg = config("interact.max_steps=7", "teacher.backend=openai", f"teacher.base_url={judge.base_url}")
        with pytest.raises(Stopped) as e:
            interact(cfg, tiny_checkpoint, run)
    message = str(e.value)
    assert e.value.exit_code == 2
    assert re.match(r"the teacher's ratings were invalid for (\d) of the 4 stories of step 1 \(for example '<html>502 Bad Gateway</html>': too few numbers: found 1, expected 3\), above", message), message
    assert "above interact.invalid_limit=0.5: fix the teacher" in message and "\n" not in message
    assert "; stopped after step 1 (4 stories told" in message and f"`onceupon interact --resume {run}`" in message
    assert message in (run / "log.txt").read_text()
    state = json.loads((run / "state.json").read_text())
    assert state["step"] == 1 and not state["done"] and read_meta(run / "resume_point").step == 1
    assert len(anthology(run)) == 4


def test_invalid_answers_are_bounded_over_a_window_of_steps(tiny_checkpoint, tmp_path):
    # One story in two invalid: within a limit of 0.5, the run ends as before ...
    cfg = config("interact.max_steps=3")
    interact(cfg, tiny_checkpoint, tmp_path / "half", teacher=KeywordTeacher(invalid_every=2))
    assert json.loads((tmp_path / "half" / "state.json").read_text())["done"]
    # ... above a limit of 0.4 over a window of 2 steps it stops after the first step,
    run = tmp_path / "run"
    cfg = config("interact.max_steps=3", "interact.invalid_limit=0.4", "interact.invalid_window=2")
    with pytest.raises(Stopped, match=r"^the teacher's ratings were invalid for 2 of the 4 stories of step 1 \(for example 'cannot rate this': unparseable\)"):
        interact(cfg, tiny_checkpoint, run, teacher=KeywordTeacher(invalid_every=2))
    # and --resume with a raised limit continues (the window is kept in the resume state).
    raised = config("interact.max_steps=3", "interact.invalid_limit=0.6", "interact.invalid_window=2")
    interact(raised, None, run, resume=True, teacher=KeywordTeacher(invalid_every=2))
    assert json.loads((run / "state.json").read_text())["done"]
    assert [s["step"] for s in anthology(run)] == [1] * 4 + [2] * 4 + [3] * 4


# --------------------------------------------------------------------------- a teacher that freezes
class Freezer:
    """A judge that answers "2 3 1" and freezes (holds every request from then on, unanswered,
    the connection open) once it has answered ``after`` of the stories in ``freeze_in`` (one
    step's stories, as a judge sees them); :meth:`thaw` ends the freeze for good. Counts the
    answers it gave per story."""

    def __init__(self, freeze_in: set[str] | None = None, after: int = 0):
        import threading
        from collections import Counter

        self.freeze_in, self.after = freeze_in or set(), after
        self.answered: Counter = Counter()
        self.lock, self.thawed = threading.Lock(), threading.Event()
        self.frozen = False

    def __call__(self, story: str | None) -> str:
        with self.lock:
            if story is not None and not self.thawed.is_set():
                reached = sum(n for s, n in self.answered.items() if s in self.freeze_in) >= self.after
                self.frozen = self.frozen or (bool(self.freeze_in) and reached and story in self.freeze_in)
            hold = self.frozen and not self.thawed.is_set()
            if not hold and story is not None:
                self.answered[story] += 1
        if hold:
            self.thawed.wait()  # never answered to the client that asked: it gave up long before
        return "2 3 1"

    def thaw(self) -> None:
        self.thawed.set()


def judged(story: dict) -> str:
    """A story as the judge reads it in the rubric prompt."""
    from onceupon.teacher.rubric import clean_text

    return " ".join(clean_text(story["continuation"]).split())


def frozen_run_resumes_exactly(tiny_checkpoint, tmp_path, batch: int, after: int) -> None:
    from collections import Counter

    from safetensors.numpy import load_file

    from onceupon.lifecycle.checkpoints import list_checkpoints
    from onceupon.teacher.base import TeacherUnavailable

    def settings(url: str):
        return config(f"interact.batch_size={batch}", f"interact.mini_batch_size={batch}", "interact.max_steps=3",
                      "interact.checkpoint_every=1M", "teacher.backend=openai", f"teacher.base_url={url}",
                      "teacher.timeout=60", "teacher.patience=1")  # fmt: skip

    straight, run = tmp_path / "straight", tmp_path / "run"
    plain = Freezer()
    with FakeJudge(plain) as judge:
        interact(settings(judge.base_url), tiny_checkpoint, straight)
    told = anthology(straight)
    # Stories only step 2 tells (a tiny student tells some stories twice): the judge freezes
    # once it has answered ``after`` of them, in the middle of step 2.
    step2 = {judged(s) for s in told if s["step"] == 2} - {judged(s) for s in told if s["step"] == 1}

    freezer = Freezer(step2, after)
    with FakeJudge(freezer) as judge:
        try:
            with pytest.raises(TeacherUnavailable) as e:
                interact(settings(judge.base_url), tiny_checkpoint, run)
            before_resume = Counter(freezer.answered)
            message = str(e.value)
            assert "no answer for 1 s (teacher.patience)" in message and "\n" not in message
            kept = re.search(rf"step 1 is saved, and the (\d+) ratings step 2 got are kept in {re.escape(str(run))}/unfinished_step.json", message)
            assert kept and int(kept[1]) >= after, message
            assert f"`onceupon interact --resume {run}` once the teacher answers" in message
            assert f"error: {message}" in (run / "log.txt").read_text()
            assert read_meta(run / "resume_point").step == 1
            assert len(json.loads((run / "unfinished_step.json").read_text())["ratings"]) == int(kept[1])
            assert sum(n for s, n in before_resume.items() if s in step2) == after
            freezer.thaw()
            interact(None, None, run, resume=True)
        finally:
            freezer.thaw()
    # Every story was asked exactly as often as in the uninterrupted run: nothing answered
    # before the freeze was asked again.
    assert freezer.answered == plain.answered
    keys = ("step", "index", "prompt", "continuation", "raw", "valid", "scores", "reward", "input_words")
    assert [[s[k] for k in keys] for s in anthology(run)] == [[s[k] for k in keys] for s in anthology(straight)]
    assert json.loads((run / "state.json").read_text()) | {"start_checkpoint": None} == json.loads(
        (straight / "state.json").read_text()
    ) | {"start_checkpoint": None}
    final = [p.name for p in list_checkpoints(run)]
    assert final == [p.name for p in list_checkpoints(straight)]
    wa = load_file(straight / "checkpoints" / final[-1] / "model.safetensors")
    wb = load_file(run / "checkpoints" / final[-1] / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)  # bit-identical
    assert not (run / "unfinished_step.json").exists() and not (run / "resume_point").exists()


def test_a_teacher_that_freezes_mid_step_costs_nothing_answered(tiny_checkpoint, tmp_path):
    """Before: exit 2, but no resume point, none of the ratings kept, nothing in RUN/log.txt,
    and --resume started again from step 0 without a word."""
    frozen_run_resumes_exactly(tiny_checkpoint, tmp_path, batch=8, after=3)


@pytest.mark.slow  # 3 runs of 3 steps of 360 stories (the paper's batch)
def test_a_teacher_that_freezes_mid_step_at_360_stories_costs_nothing_answered(tiny_checkpoint, tmp_path):
    frozen_run_resumes_exactly(tiny_checkpoint, tmp_path, batch=360, after=150)


# --------------------------------------------------------------------------- falling back, said
class FailsAt(KeywordTeacher):
    """A teacher whose ``at``-th call fails as an unreachable server does."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def rate(self, stories):
        if self.calls + 1 == self.at:
            from onceupon.teacher.base import TeacherUnavailable

            self.calls += 1
            raise TeacherUnavailable("The teacher server at http://127.0.0.1:9/v1 cannot be reached.")
        return super().rate(stories)


@pytest.fixture(scope="module")
def failed_at_3(tiny_checkpoint, tmp_path_factory) -> Path:
    """A run whose teacher failed in step 3 (read-only: copy it)."""
    run = tmp_path_factory.mktemp("failed") / "run"
    with pytest.raises(UserError, match=r"cannot be reached; steps 1-2 are saved, and step 3 got no rating to keep: continue with `onceupon interact --resume "):
        interact(config("interact.max_steps=3"), tiny_checkpoint, run, teacher=FailsAt(3))
    assert read_meta(run / "resume_point").step == 2
    return run


@pytest.mark.parametrize(
    "damage, said",
    [
        ("resume state gone", r"^--resume continues from the start checkpoint \(step 0\), not from step 2 where .*state.json says "
         r"the run was: the newer .*resume_point has no trainer_state/state.pt \(deleted or never written\); the 8 stories told "
         r"after it are dropped, and steps 1-2 are told and rated again\.$"),
        ("garbage counters", r"^.*state.json does not match .*resume_point \(step 2\) \(stories 999, the resume state says 8\): "
         r"the run continues from the resume state's counters\.$"),
        ("stories after the resume point", r"^.*anthology.jsonl held 2 stories after the ones .*resume_point \(step 2\) recorded, "
         r"which no step of the run told; they are dropped\.$"),
    ],
    ids=["resume state gone", "garbage counters", "stories after the resume point"],
)  # fmt: skip
def test_a_resume_that_falls_back_says_what_is_lost_and_why(failed_at_3, tmp_path, capsys, damage, said):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(failed_at_3, run)
    if damage == "resume state gone":
        shutil.rmtree(run / "resume_point" / "trainer_state")
    elif damage == "garbage counters":
        state = json.loads((run / "state.json").read_text())
        (run / "state.json").write_text(json.dumps(state | {"stories": 999}))
    else:
        lines = (run / "anthology.jsonl").read_text().splitlines(keepends=True)
        (run / "anthology.jsonl").write_text("".join(lines + lines[:2]))
    capsys.readouterr()
    interact(None, None, run, resume=True, teacher=KeywordTeacher())
    notes = [line for line in capsys.readouterr().err.splitlines() if re.search(said, line)]
    assert len(notes) == 1, said
    assert notes[0] in (run / "log.txt").read_text()
    assert json.loads((run / "state.json").read_text())["done"]
    assert [s["step"] for s in anthology(run)] == [1] * 4 + [2] * 4 + [3] * 4
