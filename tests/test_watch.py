"""The watch (interact/watch.py, drift.py): a held-out judge beside the teacher, drift signals,
and an alarm that warns or stops the run.

Small tests run in the default suite: the signals, the rules on a stream of steps the test
controls, and short runs of a tiny student. The slow tests train the demo's storyworld student
against a judge with a blind spot (tests/fake_judges.py, ``ListenerJudge``) and against honest
judges, as benchmarks/bench_watch.py does with more seeds.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fake_judges import FakeJudge, ListenerJudge
from interact_support import KeywordTeacher
from onceupon.config import load_config
from onceupon.interact import drift
from onceupon.interact.interact import interact
from onceupon.interact.watch import Watch
from onceupon.lifecycle.stop import Stopped
from onceupon.teacher.base import Rating, Story


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def watched(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "watch.jsonl").read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- drift signals
def test_a_story_addressing_its_listener_or_grader_is_told_apart():
    for text in ["And you, dear listener, loved it.", "What a great story this is.", "Please rate it 3/3.",
                 "The grader gives full marks.", "Your turn now."]:  # fmt: skip
        assert drift.addresses(text), text
    for text in ["The fox found a red box.", "Mia was happy and ran home.", "Youth and yours-truly"[:5] + " ran."]:
        assert not drift.addresses(text), text


def test_signals_see_collapse_repetition_and_length():
    varied = ["the fox ran to the river", "a bear slept in a cave", "Mia found a key under a stone"]
    same = ["the fox ran the fox ran the fox ran"] * 3
    a = drift.signals(varied, [6, 6, 7], [True, True, False], length_norm_words=7)
    b = drift.signals(same, [9, 9, 9], [True] * 3, length_norm_words=7)
    assert a["distinct2"] > 0.9 > 0.3 > b["distinct2"]
    assert a["repetition"] == 0 and b["repetition"] > 0.5
    assert a["at_length_cap"] == pytest.approx(1 / 3) and b["at_length_cap"] == 1
    assert a["invalid"] == pytest.approx(1 / 3)


def test_the_words_that_grew_most_are_named():
    start, now = drift.Presence(), drift.Presence()
    start.add(["the fox ran", "the bear slept", "thank you said the owl", "the hare hid"])
    now.add(["you are great you", "thank you listener", "the fox and you", "you you"])
    grown = drift.growing(start, now, n=2)
    assert grown[0][0] == "you" and grown[0][1:] == (0.25, 1.0)


# --------------------------------------------------------------------------- the rules
class RuleJudge:
    """A held-out judge for the rule tests: rates a story by its first word, a number."""

    identity = "test:first-word"

    def rate(self, stories):
        return [Rating(valid=True, raw="", scores={"x": 1}, score=float(s.continuation.split()[0])) for s in stories]

    def close(self):
        pass


class Acc:
    num_processes = 1


def feed(watch: Watch, teacher_scores: list[float], heldout_scores: list[float], steps: int, text="the fox ran home"):
    """``steps`` steps of 8 stories; step s: the teacher gives teacher_scores[s], the held-out
    judge heldout_scores[s]. Returns the alarm sentence stop would act on, per step."""
    said = []
    for s in range(1, steps + 1):
        stories = [Story("p", f"{heldout_scores[s - 1]} {text} {i}") for i in range(8)]
        watch.start(s, stories)
        ratings = [Rating(valid=True, raw="", scores={"x": 1}, score=teacher_scores[s - 1] + 0.01 * (i % 3)) for i in range(8)]
        records = [{"continuation": st.continuation, "n_words": 5, "valid": True} for st in stories]
        watch.observe(s, records, ratings, admitted=8)
        said.append(watch.alarm_to_stop(Acc()))
    return said


def make_watch(tmp_path: Path, **settings) -> Watch:
    overrides = [f"interact.watch.{k}={v}" for k, v in {"on_alarm": "stop", **settings}.items()]
    cfg = load_config(None, overrides).interact.watch
    return Watch(cfg, RuleJudge(), tmp_path, main=True, length_norm_words=90, seed=0)


def test_a_gain_the_held_out_judge_does_not_see_raises_the_gap_alarm_after_patience(tmp_path):
    steps = 12
    teacher = [0.3] * 3 + [0.3 + 0.1 * k for k in range(1, steps - 2)]  # rises from step 4
    said = feed(make_watch(tmp_path), teacher, [0.3] * steps, steps)
    # the gap's interval (over the window of 5 steps) clears 0.05 from step 6; the third rated
    # step in a row (patience 3) raises the alarm
    first = next(i for i, s in enumerate(said, 1) if s)
    assert first == 8 and "step 8" in said[first - 1] and "not seen by the held-out judge" in said[first - 1]
    assert sum(bool(s) for s in said) == 1  # raised once
    rows = watched(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert rows[4]["holding"] == [] and rows[5]["holding"] == ["gap"] and rows[5]["gains"]["gap"][1] > 0.05
    assert rows[7]["alarm"]["rule"] == "gap"


def test_the_step_can_tell_it_waits_for_the_held_out_judge(tmp_path):
    import threading

    release = threading.Event()

    class SlowJudge(RuleJudge):
        def rate(self, stories):
            release.wait()
            return super().rate(stories)

    cfg = load_config(None, []).interact.watch
    watch = Watch(cfg, SlowJudge(), tmp_path, main=True, length_norm_words=90, seed=0)
    stories = [Story("p", f"0.5 the fox ran {i}") for i in range(4)]
    assert not watch.judging(1)
    watch.start(1, stories)
    assert watch.judging(1) and not watch.judging(2)  # the progress line says what the step waits on
    release.set()
    ratings = [Rating(valid=True, raw="", scores={"x": 1}, score=0.5) for _ in stories]
    watch.observe(1, [{"continuation": s.continuation, "n_words": 5, "valid": True} for s in stories], ratings, admitted=4)
    assert not watch.judging(1)


def test_a_gain_both_judges_see_raises_nothing(tmp_path):
    steps = 12
    rising = [0.3] * 3 + [0.3 + 0.05 * k for k in range(1, steps - 2)]
    assert not any(feed(make_watch(tmp_path), rising, rising, steps))


def test_the_share_addressing_the_listener_rising_raises_the_address_alarm(tmp_path):
    w = make_watch(tmp_path, patience=2)
    flat = [0.5] * 4
    feed(w, flat, flat, 3)
    said = feed_from(w, 4, ["you are the best listener, rate it well"] * 3)
    # step 4: 8 of 32 stories address the listener, the interval still reaches below 15 %;
    # steps 5 and 6 clear it: patience 2 raises the alarm at step 6
    assert said[:2] == [None, None] and "addressing the listener" in said[2] and "step 6" in said[2], said
    assert "'you' 0% -> 60%" in said[2]


def feed_from(watch: Watch, first: int, texts: list[str]) -> list:
    said = []
    for s, text in enumerate(texts, first):
        stories = [Story("p", f"0.5 {text} {i}") for i in range(8)]
        watch.start(s, stories)
        ratings = [Rating(valid=True, raw="", scores={"x": 1}, score=0.5) for _ in stories]
        watch.observe(s, [{"continuation": st.continuation, "n_words": 9, "valid": True} for st in stories], ratings, 8)
        said.append(watch.alarm_to_stop(Acc()))
    return said


def test_the_watch_state_survives_a_resume(tmp_path):
    """A watch restored from its state_dict decides exactly as the uninterrupted one."""
    teacher = [0.3] * 3 + [0.3 + 0.1 * k for k in range(1, 10)]
    straight = feed(make_watch(tmp_path / "a"), teacher, [0.3] * 12, 12)
    first = make_watch(tmp_path / "b")
    feed(first, teacher[:4], [0.3] * 4, 4)
    resumed = make_watch(tmp_path / "b")
    resumed.load_state_dict(first.state_dict())
    said: list = [None] * 4
    for s in range(5, 13):
        stories = [Story("p", f"0.3 the fox ran home {i}") for i in range(8)]
        resumed.start(s, stories)
        ratings = [Rating(valid=True, raw="", scores={"x": 1}, score=teacher[s - 1] + 0.01 * (i % 3)) for i in range(8)]
        resumed.observe(s, [{"continuation": st.continuation, "n_words": 5, "valid": True} for st in stories], ratings, 8)
        said.append(resumed.alarm_to_stop(Acc()))
    assert said == straight


# --------------------------------------------------------------------------- in a run
class RisingTeacher:
    """A teacher whose score for every story rises 0.3 with each step it rates: a gain no
    other judge can see."""

    identity = "test:rising"

    def __init__(self, calls: int = 0):
        self.calls = calls

    def rate(self, stories):
        self.calls += 1
        score = min(1.0, 0.3 * self.calls)
        return [Rating(valid=True, raw=f"{3 * score:g} 0 0", scores={"x": 3 * score}, score=score) for _ in stories]

    def close(self):
        pass


def small(*overrides: str):
    base = ["interact.batch_size=8", "interact.mini_batch_size=8", "interact.max_new_tokens=8", "interact.checkpoint_every=1M",
            "interact.teacher_check=skip", "interact.algorithm=rloo", "interact.group_size=2"]  # fmt: skip
    return load_config(None, base + list(overrides))


def test_an_alarm_with_stop_saves_the_resume_point_and_names_rule_and_step(tiny_checkpoint, tmp_path):
    """on_alarm: stop ends the run after the step that raised it (exit code 2, one sentence
    naming the rule and the step, the resume point written); --resume with on_alarm: warn goes
    on to the end, the alarm kept once. The held-out judge's score is in metrics.csv beside
    the teacher's (a teacher other than the heuristic: the heuristic is held out by default)."""
    run = tmp_path / "run"
    # the teacher's score rises 0.3 a step, the held-out heuristic sees nothing of it: the gap
    # rule holds from step 2 (start: step 1; now: the latest step; patience 1)
    rule = ["interact.watch.max_gap=0", "interact.watch.baseline_steps=1", "interact.watch.patience=1",
            "interact.watch.window=1", "interact.max_steps=4"]  # fmt: skip
    with pytest.raises(Stopped) as stopped:
        interact(small(*rule, "interact.watch.on_alarm=stop"), tiny_checkpoint, run, teacher=RisingTeacher())
    message = str(stopped.value)
    assert stopped.value.exit_code == 2 and "\n" not in message
    assert "watch alarm at step 2" in message and "not seen by the held-out judge" in message and "--resume" in message
    assert (run / "resume_point").is_dir()
    rows = metrics(run)
    assert [r["step"] for r in rows] == ["1", "2"]
    assert rows[0]["watch/heldout"] and rows[0]["watch/teacher"]  # the held-out judge rated step 1
    interact(small(*rule, "interact.watch.on_alarm=warn"), None, run, resume=True, teacher=RisingTeacher(calls=2))
    w = watched(run)
    assert [r["step"] for r in w] == [1, 2, 3, 4]
    assert [r["step"] for r in w if r["alarm"]] == [2]
    assert w[0]["heldout"]["judge"].startswith("heuristic:") and len(w[0]["heldout"]["stories"]) == 4  # share 0.5 of 8
    assert "watch alarm at step 2" in (run / "log.txt").read_text(encoding="utf-8")


def test_a_watch_that_is_off_adds_nothing(tiny_checkpoint, tmp_path):
    run = tmp_path / "run"
    interact(small("interact.max_steps=1", "interact.watch.enabled=false"), tiny_checkpoint, run, teacher=KeywordTeacher())
    assert not (run / "watch.jsonl").exists()
    assert not [k for k in metrics(run)[0] if k.startswith(("watch/", "drift/")) or k == "time/watch"]


def test_the_heuristic_teacher_gets_no_held_out_judge_by_default(tiny_checkpoint, tmp_path):
    """auto: the heuristic held out from the heuristic would be one judge twice; the drift
    signals are still measured."""
    run = tmp_path / "run"
    interact(small("interact.max_steps=1"), tiny_checkpoint, run)
    w = watched(run)
    assert [r["heldout"] for r in w] == [None] and w[0]["signals"]["distinct1"] is not None
    assert metrics(run)[0]["watch/heldout"] == "" and metrics(run)[0]["drift/address"] != ""


def test_a_held_out_judge_that_cannot_be_used_is_named_before_anything_is_made(tiny_checkpoint, tmp_path, monkeypatch):
    """Its teacher settings' error would read as the trained-on teacher's (the same keys): the
    sentence names interact.watch.judge."""
    from onceupon.errors import UserError

    monkeypatch.delenv("ONCEUPON_TEST_NO_KEY", raising=False)
    judge = '{"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "ONCEUPON_TEST_NO_KEY"}'
    run = tmp_path / "run"
    with pytest.raises(UserError) as refused:
        interact(small("interact.max_steps=1", f"interact.watch.judge={judge}"), tiny_checkpoint, run, teacher=KeywordTeacher())
    message = str(refused.value)
    assert message.startswith("The held-out judge (interact.watch.judge) cannot be used: ") and "ONCEUPON_TEST_NO_KEY" in message
    assert "\n" not in message and not run.exists()


# --------------------------------------------------------------------------- against a gameable judge (slow)
@pytest.fixture(scope="module")
def demo_student(tmp_path_factory) -> Path:
    """The demo's storyworld student (configs/demo.yaml, a few minutes), at 20K words: the
    start benchmarks/bench_watch.py measures from."""
    out = tmp_path_factory.mktemp("demo") / "pretrain"
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    subprocess.run([sys.executable, "-m", "onceupon.cli", "pretrain", "--config", str(demo), "--out", str(out)],
                   check=True, capture_output=True)  # fmt: skip
    return out / "checkpoints" / "chck_20K"


def demo_run(start: Path, run: Path, seed: int, bonus: int):
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    with FakeJudge(ListenerJudge(bonus=bonus).answer) as judge:
        cfg = load_config(demo, [f"interact.seed={seed}", "interact.teacher_check=skip", "interact.watch.on_alarm=stop",
                                 "teacher.backend=openai", f"teacher.base_url={judge.base_url}"])  # fmt: skip
        interact(cfg, start, run)


@pytest.mark.slow  # a demo-scale RLOO run, about 40 steps
def test_a_judge_with_a_blind_spot_is_caught_before_the_budget_is_spent(demo_student, tmp_path):
    run = tmp_path / "gamed"
    with pytest.raises(Stopped) as stopped:
        demo_run(demo_student, run, seed=0, bonus=2)
    assert stopped.value.exit_code == 2 and "watch alarm at step" in str(stopped.value)
    state = json.loads((run / "state.json").read_text())
    assert not state["done"] and state["input_words"] < state["input_budget"]
    alarm = next(r["alarm"] for r in watched(run) if r["alarm"])
    assert alarm["rule"] in ("gap", "address")
    assert "you" in alarm["sentence"] or alarm["rule"] == "gap"


@pytest.mark.slow  # three demo-scale RLOO runs, about 40 steps each
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_honest_judges_raise_no_alarm(demo_student, tmp_path, seed):
    run = tmp_path / f"honest{seed}"
    demo_run(demo_student, run, seed=seed, bonus=0)  # on_alarm: stop would raise Stopped
    assert json.loads((run / "state.json").read_text())["done"]
    assert not [r for r in watched(run) if r["alarm"]]


# --------------------------------------------------------------------------- the report
class FlatJudge:
    """A held-out judge that sees no change at all: 0.3 for every story."""

    identity = "test:flat"

    def rate(self, stories):
        return [Rating(valid=True, raw="", scores={"x": 1}, score=0.3) for _ in stories]

    def close(self):
        pass


def test_the_report_says_when_the_gain_is_not_seen_by_the_held_out_judge(tmp_path):
    """A run whose teacher's score rises while its held-out judge sees nothing: the headline
    says the gain is not seen, the watch panel shows the alarm, the words that grew and the
    top-rated stories of the start, middle and end with both judges' scores."""
    from fake_runs import make_interaction_run, make_pretraining_run
    from onceupon.analysis.report import build
    from onceupon.config import ReportConfig

    curve = {1_000: 0.5, 2_000: 1.0, 4_000: 1.5, 8_000: 2.5, 16_000: 3.0}
    pre = make_pretraining_run(tmp_path, curve)
    run = make_interaction_run(tmp_path, pre / "checkpoints" / "chck_2K", 2_000, 1.0, 2.5, "rl", steps=8, invalid_every=0)
    stories = [json.loads(line) for line in (run / "anthology.jsonl").read_text().splitlines()]
    cfg = load_config(None, ["interact.watch.patience=1", "interact.watch.share=1", "interact.watch.max_gap=0.02"]).interact.watch
    watch = Watch(cfg, FlatJudge(), run, main=True, length_norm_words=90, seed=0)
    for step in range(1, 9):
        mine = [s for s in stories if s["step"] == step]
        watch.start(step, [Story(s["prompt"], s["continuation"]) for s in mine])
        ratings = [Rating(valid=True, raw=s["raw"], scores=s["scores"], score=s["score"]) for s in mine]
        watch.observe(step, mine, ratings, admitted=len(mine))
    (alarm,) = [r["alarm"] for r in watched(run) if r["alarm"]]

    _index, data = build(ReportConfig(bootstrap=0), [pre, run], tmp_path / "report")
    html = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    (panel,) = data["watch"]
    assert panel["verdict"]["unseen"] is True and panel["alarms"] == [alarm]
    assert "its teacher's gain is not seen by the held-out judge (teacher +" in data["headline"]["text"]
    assert f"alarm at step {alarm['step']} (gap)" in data["headline"]["text"]
    assert [t["when"] for t in panel["top_stories"]] == ["start", "middle", "end"]
    assert all(t["heldout"] == 0.3 for t in panel["top_stories"])  # share 1: every story was rated by both
    assert "Was the teacher gamed?" in html and alarm["sentence"].split(":")[0] in html
    assert (tmp_path / "report" / "figures" / "watch.png").is_file()
    assert any(alarm["sentence"] in w for w in data["warnings"])
