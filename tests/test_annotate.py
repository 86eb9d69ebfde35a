"""`onceupon annotate`: people rate stories on a local page; `rate --compare` reads their answers.

Everything is real: the command runs as a subprocess serving on 127.0.0.1, the page runs in
headless Chromium driven through chromedriver's W3C WebDriver HTTP API (real key presses),
and the answers file is read back as written.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import assert_one_sentence, run_cli

PROMPT = "Once upon a time, in a faraway land,"
ENTER, BACKSPACE = "\ue007", "\ue003"


def write_stories(path: Path, n: int) -> Path:
    rows = [
        {"id": f"s{i}", "prompt": PROMPT, "continuation": f"there lived fox number {i}. " + "She found a red box. " * (i % 4)}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- the server process
@contextmanager
def annotate(*args: str, stop: signal.Signals = signal.SIGINT):
    """`onceupon annotate ARGS --port 0` in a subprocess; yields its URL; stops it with ``stop``
    (Ctrl-C's signal unless told), after which it exits as every command does: 128 + the signal."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "onceupon.cli", "annotate", *args, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("annotate at "):
                break
        else:
            pytest.fail("annotate ended before serving:\n" + "".join(lines))
        yield line.split()[2]
    finally:
        proc.send_signal(stop)
        rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 128 + stop, "".join(lines) + rest
    assert "stopped:" in rest and "Traceback" not in rest


def call(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.split("?")[0].rstrip("/") + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


# --------------------------------------------------------------------------- a real browser
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium through chromedriver's W3C WebDriver HTTP API (no client library)."""

    def __init__(self, profile: Path, *extra_args: str):
        chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
        if not (chromium and driver):
            pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
        port = free_port()
        self.driver = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000", f"--user-data-dir={profile}",
                *extra_args]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}}}}
        for _ in range(100):
            try:
                self.session = self._call("POST", "/session", caps)["sessionId"]
                break
            except urllib.error.URLError:
                time.sleep(0.1)
        else:
            pytest.fail("chromedriver did not start")

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def go(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def js(self, script: str):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": script, "args": []})

    def js_async(self, script: str):
        """Run ``script``, which ends by calling ``done(value)``; returns the value."""
        script = "const done = arguments[arguments.length - 1];\n" + script
        return self._call("POST", f"/session/{self.session}/execute/async", {"script": script, "args": []})

    def wait(self, *states: str) -> str:
        """Wait until the page is in one of ``states`` (default: waiting for the annotator)."""
        states = states or ("ready", "done")
        for _ in range(200):
            if (state := self.js("return document.body.dataset.state")) in states:
                return state
            time.sleep(0.05)
        pytest.fail(f"the page never became {states}: {self.js('return document.body.innerText')}")

    def type(self, text: str) -> None:
        """Key presses into whatever has the focus, without waiting for the page."""
        actions = [{"type": t, "value": key} for key in text for t in ("keyDown", "keyUp")]
        self._call("POST", f"/session/{self.session}/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})

    def press(self, *keys: str) -> None:
        """Press keys one by one as a person would, waiting for the page after each."""
        for key in keys:
            self.type(key)
            self.wait()

    def text(self, element_id: str) -> str:
        return self.js(f"return document.getElementById('{element_id}').textContent")

    def screenshot(self, path: Path) -> None:
        import base64

        path.write_bytes(base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot")))

    def close(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            self.driver.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "chrome-profile")
    yield b
    b.close()


# --------------------------------------------------------------------------- the tests
def test_rate_by_keyboard_stop_restart_change_an_answer_and_compare(tmp_path, browser):
    stories = write_stories(tmp_path / "stories.jsonl", 8)
    out = tmp_path / "human.jsonl"
    args = (str(stories), "--out", str(out), "--sample", "8", "--overlap", "0")
    sample = []

    def rate_shown(*keys):
        """Rate the story on screen; returns its id (read back through the sample file)."""
        shown = browser.text("continuation")
        assert browser.text("prompt") == PROMPT
        (item,) = [s for s in sample if s["continuation"] == shown]
        browser.press(*keys)
        return item["id"]

    with annotate(*args) as url:
        sample = read_jsonl(tmp_path / "human.sample.jsonl")
        assert len(sample) == 8
        browser.go(url)
        browser.wait("login")  # the page asks for a name first
        browser.type("ada" + ENTER)
        browser.wait()
        assert browser.text("who-name") == "ada"
        assert browser.text("progress") == "story 1 of 8"
        page = browser.js("return document.body.innerText")
        assert "Narrative coherence" in page and "Many serious grammar mistakes; hard to understand." in page
        a = rate_shown("3", "2", "1", ENTER)
        b = rate_shown("1", BACKSPACE, "2", "1", "0", ENTER)  # a digit erased before saving
        c = rate_shown("f")
        browser.js("document.getElementById('comment').value = 'odd ending'")
        browser.press(ENTER)  # keeps the comment, back to the story
        rate_shown("0", "0", "1", ENTER)
        assert browser.text("progress") == "story 4 of 8"

    with open(out, "a") as f:  # a crash in the middle of an append leaves a torn last line
        f.write('{"id": "s0", "annotator": "ada", "sco')
    with annotate(*args) as url:  # a restart drops it and resumes where ada left off
        browser.go(url + "?name=ada")
        browser.wait()
        assert browser.text("progress") == "story 4 of 8"
        d = rate_shown("2", "2", "2", ENTER)
        e = rate_shown("1", "1", "1", ENTER)
        browser.press(BACKSPACE, BACKSPACE)  # back to story 5, then 4 (d), answers shown
        assert browser.text("progress") == "story 4 of 8"
        assert browser.js("return [...document.querySelectorAll('.level.chosen')].map(b => b.dataset.score)") == ["2", "2", "2"]
        rate_shown("3", "3", "2", ENTER)  # change d
        assert browser.text("progress") == "story 5 of 8"
        browser.press(ENTER, "s", "s", "s")  # e unchanged (nothing appended), then skip the last three
        assert browser.wait() == "done"
        visible = "return ['login', 'task', 'done'].filter(id => document.getElementById(id).offsetParent !== null)"
        assert browser.js(visible) == ["done"]

    records, skips = read_jsonl(out)[:6], read_jsonl(out)[6:]
    entered = [(a, [3, 2, 1]), (b, [2, 1, 0]), (c, [0, 0, 1]), (d, [2, 2, 2]), (e, [1, 1, 1]), (d, [3, 3, 2])]
    assert [(r["id"], list(r["scores"].values())) for r in records] == entered
    assert all(r["annotator"] == "ada" and not r["skipped"] for r in records)
    assert [(r["flagged"], r["comment"]) for r in records][2] == (True, "odd ending")
    assert not any(r["flagged"] for i, r in enumerate(records) if i != 2)
    assert len(skips) == 3 and all(r["skipped"] and r["scores"] is None for r in skips)
    assert {r["id"] for r in records + skips} == {s["id"] for s in sample}

    # The teacher (the offline heuristic) against the one annotator, from the file as it is.
    proc = run_cli("rate", str(stories), "--out", str(tmp_path / "teacher.jsonl"), "--compare", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "teacher.agreement.json").read_text())
    assert result["annotators"] == {"ada": 5}
    assert result["teacher_vs"]["ada"]["both_valid"] == 5  # d's changed answer counts once
    assert "ada" in proc.stdout


def scores_for(key: int) -> dict:
    return {"readability": key % 4, "coherence": (key // 2) % 4, "creativity": (key // 3) % 4}


def test_annotators_at_once_on_one_file_from_two_processes(tmp_path):
    """Three annotators answer concurrently: two on one server process, one on a second
    process appending to the same file. No line is lost or broken; shared stories reach
    everyone, the others one annotator each (per process)."""
    stories = write_stories(tmp_path / "stories.jsonl", 30)
    out = tmp_path / "human.jsonl"
    args = (str(stories), "--out", str(out), "--sample", "30", "--overlap", "0.4")  # 12 shared: enough for kappa
    sent: dict[str, list[int]] = {"ada": [], "bob": [], "cy": []}

    def work(url: str, name: str) -> None:
        while not (story := call(url, "/api/next", {"name": name})).get("done"):
            scores = scores_for(story["key"]) if name != "cy" else {"readability": 1, "coherence": 1, "creativity": 1}
            body = {"name": name, "key": story["key"], "scores": scores, "flagged": True, "comment": name * 300}
            call(url, "/api/answer", body)
            sent[name].append(story["key"])

    with annotate(*args) as first, annotate(*args) as second:
        threads = [threading.Thread(target=work, args=a) for a in ((first, "ada"), (second, "bob"), (first, "cy"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)

    records = read_jsonl(out)  # every line is whole JSON
    sample = read_jsonl(tmp_path / "human.sample.jsonl")
    assert [r["id"] for r in records if r["annotator"] == "ada"] == [sample[k]["id"] for k in sent["ada"]]
    assert len(records) == sum(map(len, sent.values()))
    assert all(r["comment"] == r["annotator"] * 300 for r in records)
    shared = {k for k, s in enumerate(sample) if s["shared"]}
    assert len(shared) == 12
    assert all(shared <= set(keys) for keys in sent.values())
    assert not (set(sent["ada"]) - shared) & (set(sent["cy"]) - shared)  # one process hands a story out once
    assert set().union(*map(set, sent.values())) == set(range(30))

    from onceupon.annotate.agreement import compare
    from onceupon.config import ExperimentConfig
    from onceupon.teacher import rate
    from onceupon.teacher.rubric import Rubric

    ours = rate.run(ExperimentConfig(), stories, tmp_path / "teacher.jsonl", out)  # the heuristic teacher
    result = compare(ours, out, Rubric())  # an annotations file: compared as people's answers
    ada_bob = result["between"]["ada ~ bob"]
    assert ada_bob["both_valid"] >= 12  # at least the shared stories
    assert all(ada_bob["criteria"][c]["kappa"] == pytest.approx(1.0) for c in ("readability", "coherence", "creativity"))
    assert result["between_mean"]["pairs"] == 3
    assert result["teacher_vs_mean"]["both_valid"] == 30


def test_the_page_needs_its_token(tmp_path):
    stories = write_stories(tmp_path / "stories.jsonl", 3)
    with annotate(str(stories), "--out", str(tmp_path / "h.jsonl"), "--token", "s3cret", stop=signal.SIGTERM) as url:
        assert url.endswith("/?token=s3cret")
        base = url.split("?")[0]
        for path in ("", "?token=wrong", "api/setup", "api/annotator?name=ada"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + path, timeout=30)
            assert refused.value.code == 403
        assert urllib.request.urlopen(url, timeout=30).status == 200
        assert urllib.request.urlopen(base + "api/setup?token=s3cret", timeout=30).status == 200
        # with a token, the token is the defence: the machine under any name (as --host 0.0.0.0 is reached) ...
        assert raw(url, "GET", "/api/setup?token=s3cret", host="annotate.lab.example:8000")[0] == 200
        # ... but still no answers from another site's page
        refused = post(url, "/api/next?token=s3cret", {"name": "ada"}, headers={"Origin": "http://evil.example"})
        assert refused[0] == 403
    from onceupon.annotate.annotate import access_token

    assert access_token("127.0.0.1", None) is None and access_token("localhost", None) is None
    assert len(access_token("0.0.0.0", None)) >= 16 and access_token("0.0.0.0", "mine") == "mine"


def test_bad_input_is_one_sentence_and_exit_2_with_nothing_written(tmp_path):
    from onceupon.annotate.annotate import run
    from onceupon.config import ExperimentConfig
    from onceupon.errors import UserError

    stories = write_stories(tmp_path / "stories.jsonl", 3)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "orphan.jsonl").write_text('{"id": "s0", "annotator": "ada", "scores": null}\n')
    out = tmp_path / "h.jsonl"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # The cases as real commands ...
        commands = {
            "is in use": [str(stories), "--out", str(out), "--port", str(port)],
            "holds no stories": [str(tmp_path / "empty.jsonl"), "--out", str(out)],
            "is a directory": [str(stories), "--out", str(tmp_path)],
        }
        for expected, args in commands.items():
            assert_one_sentence(run_cli("annotate", *args), expected)
    # ... and the rest in this process (the same UserError becomes the same exit 2).
    calls = {
        "is a file, not a directory": ([stories], tmp_path / "a_file" / "h.jsonl", {}),
        "does not exist": ([tmp_path / "nowhere.jsonl"], out, {}),
        "--overlap is a share": ([stories], out, {"overlap": 1.5}),
        "--sample must be at least 1": ([stories], out, {"n": 0}),
        "its sample file": ([stories], tmp_path / "orphan.jsonl", {}),  # answers kept, not resampled
    }
    for expected, (sources, where, options) in calls.items():
        with pytest.raises(UserError, match=expected):
            run(ExperimentConfig(), sources, where, port=0, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "empty.jsonl", "orphan.jsonl", "stories.jsonl"]


def test_sampling_is_stratified_shuffled_and_hides_the_origin(tmp_path):
    from fake_runs import make_interaction_run, make_pretraining_run

    from onceupon.annotate.sample import Item, choose, collect

    # Three origins of 2, 10 and 30 stories: 12 taken as 2 + 5 + 5; more than all: everything.
    items = [Item(f"{o}{i}", "p", "c", o) for o, size in (("a", 2), ("b", 10), ("c", 30)) for i in range(size)]
    chosen = choose(items, 12, seed=3, share=0.25)
    assert sorted(sum(i.origin == o for i in chosen) for o in "abc") == [2, 5, 5]
    assert [i.shared for i in chosen] == [False, False, False, True] * 3  # evenly spread
    assert [i.id for i in choose(items, 12, seed=3, share=0.25)] == [i.id for i in chosen]  # seeded
    assert [i.origin for i in chosen] != sorted(i.origin for i in chosen)  # shuffled
    assert len(choose(items, 100, seed=0, share=0)) == 42

    # Run directories: their anthology and evaluation stories, ids naming the file.
    pre = make_pretraining_run(tmp_path, {1_000: 3.0, 10_000: 5.0}, n_stories=6)
    rl = make_interaction_run(tmp_path, Path("/nowhere/chck_1K"), 1_000, 3.0, 5.0, "rl", steps=2, batch=4, n_stories=6)
    found = collect([pre, rl])
    origins = {i.origin for i in found}
    assert origins == {"pretrain/evaluation/chck_1K/stories.jsonl", "pretrain/evaluation/chck_10K/stories.jsonl",
                       "rl/anthology.jsonl", "rl/evaluation/chck_200W/stories.jsonl", "rl/evaluation/start/stories.jsonl"}
    assert {i.id for i in found} >= {"rl/anthology.jsonl:1", "pretrain/evaluation/chck_1K/stories.jsonl:6"}
    assert sum(i.scores is not None for i in found) > 0  # the source's ratings are kept for --as-rated


def test_the_page_gets_nothing_about_run_checkpoint_or_score(tmp_path):
    from fake_runs import make_interaction_run

    from onceupon.annotate.answers import AnswersFile, Desk
    from onceupon.annotate.sample import choose, collect
    from onceupon.teacher.rubric import Rubric

    rl = make_interaction_run(tmp_path, Path("/nowhere/chck_1K"), 1_000, 3.0, 5.0, "rl", steps=2, batch=4, n_stories=6)
    items = choose(collect([rl]), 10, seed=0, share=0.2)
    desk = Desk(items, AnswersFile(tmp_path / "h.jsonl"), Rubric())
    story = desk.next("ada")
    assert set(story) == {"key", "prompt", "continuation", "answer"} and story["key"] == 0
    assert desk.next("ada") == story  # the same story until it is answered
    view = desk.answer("ada", 0, None, True, "not a story")  # skipped and flagged
    assert view == {"history": [0], "total": 10}
    assert desk.next("bob")["key"] == 1  # 0 was ada's (not shared); bob gets the next
    (record,) = read_jsonl(tmp_path / "h.jsonl")
    assert {k: record[k] for k in ("id", "scores", "skipped", "flagged", "comment")} == {
        "id": items[0].id, "scores": None, "skipped": True, "flagged": True, "comment": "not a story"}
    desk.answer("ada", 0, None, True, "not a story")  # the same answer again appends nothing
    assert len(read_jsonl(tmp_path / "h.jsonl")) == 1
    with pytest.raises(ValueError, match="from 0 to 3"):
        desk.answer("ada", 1, {"readability": 4, "coherence": 0, "creativity": 0}, False, "")


def test_agreement_with_several_annotators_by_hand(tmp_path):
    from onceupon.annotate.agreement import compare_with_annotators, mean_of
    from onceupon.teacher.agreement import Rated
    from onceupon.teacher.rubric import Rubric

    def answer(who, sid, r, c, k, **extra):
        return {"id": sid, "annotator": who, "scores": {"readability": r, "coherence": c, "creativity": k},
                "skipped": False, "flagged": False, "comment": "", **extra}

    rows = [
        answer("ada", "1", 0, 0, 0), answer("ada", "2", 3, 3, 3), answer("ada", "3", 1, 1, 1),
        answer("bob", "1", 0, 0, 0), answer("bob", "2", 1, 1, 1), answer("bob", "2", 3, 2, 3),  # bob changed "2"
        {"id": "3", "annotator": "bob", "scores": None, "skipped": True, "flagged": False, "comment": ""},
    ]
    path = tmp_path / "human.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher = [Rated("1", {"readability": 0, "coherence": 0, "creativity": 0}),
               Rated("2", {"readability": 3, "coherence": 3, "creativity": 3}),
               Rated("3", {"readability": 2, "coherence": 2, "creativity": 2})]
    result = compare_with_annotators(teacher, path, Rubric(), min_shared=1)  # the arithmetic, on 3 stories
    assert result["annotators"] == {"ada": 3, "bob": 2}  # bob's skip is no rating
    # ada vs bob on stories 1 and 2: readability identical, coherence 3 vs 2 on story 2
    ab = result["between"]["ada ~ bob"]
    assert ab["both_valid"] == 2 and ab["criteria"]["readability"]["exact"] == 1.0
    assert ab["criteria"]["coherence"]["mean_abs_diff"] == pytest.approx(0.5)
    assert result["between_mean"]["criteria"]["coherence"]["mean_abs_diff"] == pytest.approx(0.5)
    # the mean of the annotators: story 2 coherence (3 + 2) / 2, story 3 only ada's
    means = {r.id: r.scores for r in mean_of({"ada": [Rated("2", {"c": 3.0}), Rated("3", {"c": 1.0})],
                                             "bob": [Rated("2", {"c": 2.0})]})}
    assert means == {"2": {"c": 2.5}, "3": {"c": 1.0}}
    assert result["teacher_vs"]["ada"]["criteria"]["readability"]["mean_abs_diff"] == pytest.approx(1 / 3)
    assert result["teacher_vs_mean"]["criteria"]["coherence"]["mean_abs_diff"] == pytest.approx((0 + 0.5 + 1) / 3)


def test_pairs_sharing_too_few_stories_are_named_and_left_out_of_the_ceiling(tmp_path, cli):
    """ada and bob share 11 stories; carl rated one of ada's and none of bob's. Their pairs
    say how few they share, get no kappa (no "0.00" from one story), and stay out of the
    ceiling, which is ada ~ bob's alone; every kappa that is computed has its interval."""
    rows = [{"id": str(i + first), "annotator": who, "scores": scores_for(i + first), "skipped": False}
            for who, first in (("ada", 0), ("bob", 1)) for i in range(12)]
    rows.append({"id": "0", "annotator": "carl", "scores": scores_for(0), "skipped": False})
    human = tmp_path / "human.jsonl"
    human.write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text("".join(json.dumps({"id": str(i), "scores": scores_for(i)}) + "\n" for i in range(12)))

    proc = cli("rate", str(teacher), "--as-rated", "--compare", str(human))
    assert proc.returncode == 0, proc.stderr
    out = " ".join(proc.stdout.split())
    assert "warning: ada and carl share 1 rated story, fewer than 10: left out of the ceiling" in out
    assert "warning: bob and carl share 0 rated stories, fewer than 10: left out of the ceiling" in out
    result = json.loads((tmp_path / "teacher.agreement.json").read_text())
    assert result["left_out"] == {"ada ~ carl": 1, "bob ~ carl": 0}
    assert result["between_mean"]["pairs"] == 1
    ab = result["between"]["ada ~ bob"]
    assert ab["both_valid"] == 11 and ab["enough"]
    assert result["between_mean"]["criteria"]["readability"]["kappa"] == pytest.approx(ab["criteria"]["readability"]["kappa"])
    lo, hi = ab["criteria"]["readability"]["kappa_interval"]
    assert lo <= ab["criteria"]["readability"]["kappa"] <= hi
    ac = result["between"]["ada ~ carl"]
    assert ac["both_valid"] == 1 and ac["criteria"]["readability"]["kappa"] is None and ac["total"]["kappa"] is None
    assert result["teacher_vs"]["carl"]["enough"] is False  # the teacher against carl: one story too

    from onceupon.annotate.agreement import read_agreement

    shown = {r["label"]: r for r in read_agreement(tmp_path / "teacher.agreement.json")["rows"]}
    assert shown["ada vs carl"]["note"] == "not enough shared stories (1)" and shown["ada vs bob"]["note"] is None
    assert shown["between annotators (ceiling: mean of pairs)"]["n"] == "1 pair(s), 2 left out"


def test_report_shows_the_teacher_against_people(tmp_path, cli):
    from fake_runs import make_pretraining_run

    from onceupon.analysis.report import build
    from onceupon.config import ReportConfig
    from onceupon.errors import UserError

    human = tmp_path / "human.jsonl"
    human.write_text("".join(
        json.dumps({"id": str(i), "annotator": who, "scores": scores_for(i + shift), "skipped": False}) + "\n"
        for who, shift in (("ada", 0), ("bob", 1)) for i in range(12)
    ))
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text("".join(json.dumps({"id": str(i), "scores": scores_for(i)}) + "\n" for i in range(12)))
    # through the command: `rate --compare` must tell people's answers from one rater's ratings
    rated = cli("rate", str(teacher), "--as-rated", "--compare", str(human))
    assert rated.returncode == 0, rated.stderr
    agreement = tmp_path / "teacher.agreement.json"
    result = json.loads(agreement.read_text())
    assert result["teacher_vs"]["ada"]["criteria"]["readability"]["kappa"] == pytest.approx(1.0)

    run = make_pretraining_run(tmp_path / "runs", {1_000: 3.0, 10_000: 5.0}, n_stories=6)
    index, summary = build(ReportConfig(bootstrap=0), [run], tmp_path / "report", agreements=[agreement])
    html = index.read_text()
    assert 'id="people"' in html and "teacher.jsonl vs ada" in html and "between annotators (ceiling: mean of pairs)" in html
    bob = next(r for r in summary["human_agreement"][0]["rows"] if r["label"] == "teacher.jsonl vs bob")
    assert bob["kappa"]["readability"] == pytest.approx(result["teacher_vs"]["bob"]["criteria"]["readability"]["kappa"])
    with pytest.raises(UserError, match="not an agreement with people"):
        build(ReportConfig(bootstrap=0), [run], tmp_path / "report2", agreements=[run / "results.json"])
    assert not (tmp_path / "report2").exists()


# --------------------------------------------------------------------------- the page, hardened (raw HTTP)
def raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
        host: str | None = None, timeout: float = 30):
    """One request through http.client, exactly as given (``host``: the Host header to send,
    None: http.client's own); returns (status, headers, body bytes)."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host:
            conn.putheader("Host", host)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None and not {"Content-Length", "Transfer-Encoding"} & set(headers or {}):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def post(url: str, path: str, obj, **options):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return raw(url, "POST", path, body, {"Content-Type": "application/json", **options.pop("headers", {})}, **options)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """One server without a token (the default on loopback) for every raw-HTTP check below:
    yields (url, answers file)."""
    tmp = tmp_path_factory.mktemp("page")
    stories = write_stories(tmp / "stories.jsonl", 4)
    with annotate(str(stories), "--out", str(tmp / "h.jsonl"), "--overlap", "1") as url:
        yield url, tmp / "h.jsonl"


def answers_in(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


GOOD = {"name": "ada", "key": 0, "scores": {"readability": 2, "coherence": 3, "creativity": 1}, "flagged": False, "comment": ""}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhost.evil.example",
                                  "10.0.0.1"])
def test_without_a_token_a_request_must_name_this_machine(page, host):
    """DNS rebinding: a page under another name that resolves here is refused, for the page,
    its assets and every API call."""
    url, out = page
    before = answers_in(out)
    for method, path in (("GET", "/"), ("GET", "/annotate.js"), ("GET", "/api/setup"), ("GET", "/api/annotator?name=ada")):
        status, _, body = raw(url, method, path, host=host)
        assert status == 403 and b"address onceupon annotate printed" in body, (method, path, status, body)
    assert post(url, "/api/answer", GOOD, host=host)[0] == 403
    assert answers_in(out) == before


def test_this_machine_under_any_of_its_names_is_served(page):
    url, _ = page
    port = url.split(":")[2].split("/")[0]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", "127.0.0.2"):
        assert raw(url, "GET", "/api/setup", host=host)[0] == 200, host


def test_answers_only_from_the_page_itself(page):
    """A browser adds Origin to every POST: another site's page cannot post answers."""
    url, out = page
    before = answers_in(out)
    for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
        status, _, body = post(url, "/api/answer", GOOD, headers={"Origin": origin})
        assert status == 403 and b"another site" in body, origin
    assert answers_in(out) == before
    own = url.split("/?")[0].rstrip("/")
    assert post(url, "/api/answer", GOOD, headers={"Origin": own})[0] == 200
    assert answers_in(out) == before + 1


def test_a_large_body_is_refused_before_it_is_read(page):
    url, out = page
    before = answers_in(out)
    # 50 MB declared, nothing sent: answered at once (the old server waited for the body)
    status, _, body = raw(url, "POST", "/api/answer", b"", {"Content-Type": "application/json", "Content-Length": "50000000"},
                          timeout=10)
    assert status == 413 and b"at most 64 KiB" in body
    # sent in chunks without a length, past the bound
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in [b"x" * 32768] * 4) + b"0\r\n\r\n"
    status, _, body = raw(url, "POST", "/api/answer", chunked, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    assert status == 413
    assert answers_in(out) == before


BAD_ANSWERS = {
    "key as a string": {**GOOD, "key": "0"},
    "key as true": {**GOOD, "key": True},
    "key as a float": {**GOOD, "key": 0.0},
    "score as a string": {**GOOD, "scores": {**GOOD["scores"], "readability": "3"}},
    "score as true": {**GOOD, "scores": {**GOOD["scores"], "readability": True}},
    "score as a float": {**GOOD, "scores": {**GOOD["scores"], "readability": 2.0}},
    "score above the scale": {**GOOD, "scores": {**GOOD["scores"], "readability": 4}},
    "score below the scale": {**GOOD, "scores": {**GOOD["scores"], "readability": -1}},
    "a criterion missing": {**GOOD, "scores": {"readability": 2, "coherence": 3}},
    "flagged as 1": {**GOOD, "flagged": 1},
    "flagged as a string": {**GOOD, "flagged": "true"},
    "an unknown field": {**GOOD, "admin": True},
    "name with a newline": {**GOOD, "name": "ada\nbob"},
    "name with NUL": {**GOOD, "name": "ada\x00"},
    "name with markup": {**GOOD, "name": "<b>ada</b>"},
    "name with a direction override": {**GOOD, "name": "ada\u202ebob"},
    "name with outer spaces": {**GOOD, "name": " ada"},
    "name too long": {**GOOD, "name": "a" * 101},
    "name empty": {**GOOD, "name": ""},
    "name not text": {**GOOD, "name": ["ada"]},
}
RAW_BAD = {  # what json.dumps cannot write: NaN and infinities, lone surrogates, huge numbers
    "score NaN": b'{"name": "ada", "key": 0, "scores": {"readability": NaN, "coherence": 3, "creativity": 1}}',
    "score Infinity": b'{"name": "ada", "key": 0, "scores": {"readability": Infinity, "coherence": 3, "creativity": 1}}',
    "score -Infinity": b'{"name": "ada", "key": 0, "scores": {"readability": -Infinity, "coherence": 3, "creativity": 1}}',
    "key NaN": b'{"name": "ada", "key": NaN, "scores": null}',
    "key 1e400": b'{"name": "ada", "key": 1e400, "scores": null}',
    "name a lone surrogate": b'{"name": "ada\\ud800", "key": 0, "scores": null}',
    "comment a lone surrogate": b'{"name": "ada", "key": 0, "scores": null, "flagged": true, "comment": "\\udc80"}',
    "not JSON": b'{"name": "ada", "key": 0,',
    "a list": b"[1, 2]",
}


@pytest.mark.parametrize("body", [*BAD_ANSWERS.values(), *RAW_BAD.values()], ids=[*BAD_ANSWERS, *RAW_BAD])
def test_a_loose_or_odd_answer_is_a_422_naming_the_field_and_stores_nothing(page, body):
    url, out = page
    before = answers_in(out)
    status, _, reply = post(url, "/api/answer", body)
    assert status == 422, (status, reply)
    detail = json.loads(reply)["detail"]
    assert isinstance(detail, str) and detail.endswith(".") and len(detail) < 200, detail
    assert answers_in(out) == before


def test_an_invalid_request_is_not_echoed_back(page):
    url, _ = page
    big = "<script>" + "x" * 60_000  # under the size bound
    for body in ({**GOOD, "name": big}, {**GOOD, "comment": big}, {**GOOD, "scores": {big: 1}}, {**GOOD, "key": big}):
        status, _, reply = post(url, "/api/answer", body)
        assert status == 422 and len(reply) < 300 and b"xxxx" not in reply and b"script" not in reply, reply[:300]
    status, _, reply = raw(url, "GET", "/api/annotator?name=%3Cscript%3E%0A" + "x" * 5000)
    assert status == 422 and b"xxxx" not in reply and b"script" not in reply


def test_names_are_checked_in_every_call(page):
    url, _ = page
    for path in ("/api/annotator?name=ada%0Abob", "/api/story?key=0&name=%3Cb%3E", "/api/annotator?name=a%00"):
        assert raw(url, "GET", path)[0] == 422, path
    assert post(url, "/api/next", {"name": "ada\r\nbob"})[0] == 422
    assert post(url, "/api/next", {"name": "Zoë O'Brien-Łukasz 李"})[0] == 200  # names in any script


def test_every_response_carries_the_security_headers(page):
    url, _ = page
    responses = [
        raw(url, "GET", "/"), raw(url, "GET", "/annotate.js"), raw(url, "GET", "/api/setup"),
        raw(url, "GET", "/nowhere"), raw(url, "GET", "/", host="evil.example"),
        post(url, "/api/answer", {**GOOD, "key": "0"}),
        raw(url, "POST", "/api/answer", b"", {"Content-Length": "50000000"}),
    ]
    assert [r[0] for r in responses] == [200, 200, 200, 404, 403, 422, 413]
    for status, headers, _ in responses:
        csp = headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "default-src 'none'" in csp, status
        assert headers.get("x-frame-options") == "DENY" and headers.get("x-content-type-options") == "nosniff", status
        assert headers.get("referrer-policy") == "no-referrer", status  # the address may carry the token


def test_a_valid_answer_is_stored_with_its_types(page):
    url, out = page
    status, _, reply = post(url, "/api/answer", {**GOOD, "name": "cy", "key": 1, "flagged": True, "comment": "odd\tend"})
    assert status == 200, reply
    record = read_jsonl(out)[-1]
    assert record["annotator"] == "cy" and record["comment"] == "odd\tend" and record["flagged"] is True
    assert all(type(v) is int for v in record["scores"].values())


def test_in_a_browser_a_rebound_name_gets_nothing_and_another_site_cannot_answer(tmp_path):
    """DNS rebinding in a real browser: Chromium resolves evil.example to 127.0.0.1 (as an
    attacker's DNS would after the page loaded), so its requests reach the server under that
    name. The server refuses them (the old server served the page and its stories). A page of
    that site posting an answer across origins (a 'simple' text/plain request, which a browser
    sends without asking first) is refused by its Origin (FastAPI would not read a text/plain
    body as JSON either: the check is a second wall). The real page still runs under its
    Content-Security-Policy."""
    browser = Browser(tmp_path / "chrome-profile", "--host-resolver-rules=MAP evil.example 127.0.0.1")
    stories = write_stories(tmp_path / "stories.jsonl", 3)
    out = tmp_path / "h.jsonl"
    try:
        with annotate(str(stories), "--out", str(out)) as url:
            port = url.split(":")[2].split("/")[0]
            browser.go(f"http://evil.example:{port}/")
            assert "address onceupon annotate printed" in browser.js("return document.body.innerText")
            answer = {"name": "mallory", "key": 0, "scores": {"readability": 0, "coherence": 0, "creativity": 0}}
            sent = browser.js_async(
                f"fetch('http://127.0.0.1:{port}/api/answer', {{method: 'POST', headers: {{'Content-Type': 'text/plain'}}, "
                f"body: {json.dumps(json.dumps(answer))}}}).then(r => done(r.status), e => done(String(e)))"
            )
            assert sent != 200  # (the browser hides the answer from the other site either way)
            assert not out.exists() or "mallory" not in out.read_text()
            browser.go(url)  # the page itself, under its policy: its script runs
            assert browser.wait("login") == "login"
    finally:
        browser.close()
