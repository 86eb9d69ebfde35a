"""`onceupon annotate`: people rate stories on a local page; `rate --compare` reads their answers.

Everything is real: the command runs as a subprocess serving on 127.0.0.1, the page runs in
headless Chromium driven through chromedriver's W3C WebDriver HTTP API (real key presses),
and the answers file is read back as written.
"""

from __future__ import annotations

import json
import os
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

from conftest import run_cli

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
def annotate(*args: str):
    """`onceupon annotate ARGS --port 0` in a subprocess; yields its URL; stops it with Ctrl-C."""
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
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped:" in rest


def call(url: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.split("?")[0] + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


# --------------------------------------------------------------------------- a real browser
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium through chromedriver's W3C WebDriver HTTP API (no client library)."""

    def __init__(self, profile: Path):
        chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
        if not (chromium and driver):
            pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
        port = free_port()
        self.driver = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000", f"--user-data-dir={profile}"]
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

    def wait(self, state: str = "ready") -> None:
        for _ in range(200):
            if self.js("return document.body.dataset.state") == state:
                return
            time.sleep(0.05)
        pytest.fail(f"the page never became {state!r}: {self.js('return document.body.innerText')}")

    def press(self, *keys: str) -> None:
        """Press keys one by one as a person would, waiting for the page after each."""
        for key in keys:
            actions = [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
            self._call("POST", f"/session/{self.session}/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})
            time.sleep(0.05)
            self.wait(self.js("return document.body.dataset.state === 'done' ? 'done' : 'ready'"))

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
        browser.go(url + "?name=ada")
        browser.wait()
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

    with annotate(*args) as url:  # a restart resumes where ada left off
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

    records = read_jsonl(out)
    entered = [(a, [3, 2, 1]), (b, [2, 1, 0]), (c, [0, 0, 1]), (d, [2, 2, 2]), (e, [1, 1, 1]), (d, [3, 3, 2])]
    assert [(r["id"], list(r["scores"].values())) for r in records] == entered
    assert all(r["annotator"] == "ada" and not r["skipped"] for r in records)
    assert [(r["flagged"], r["comment"]) for r in records][2] == (True, "odd ending")
    assert not any(r["flagged"] for i, r in enumerate(records) if i != 2)

    # The teacher (the offline heuristic) against the one annotator, from the file as it is.
    proc = run_cli("rate", str(stories), "--out", str(tmp_path / "teacher.jsonl"), "--compare", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "teacher.agreement.json").read_text())
    assert result["annotators"] == {"ada": 5}
    assert result["teacher_vs"]["ada"]["both_valid"] == 5  # d's changed answer counts once
    assert "ada" in proc.stdout
