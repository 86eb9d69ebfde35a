"""``onceupon rate``: rating files end to end, and agreement numbers computed by hand."""

import json
import math

import pytest

from onceupon.errors import UserError
from onceupon.teacher.agreement import Rated, agreement, load_ratings, quadratic_kappa
from onceupon.teacher.rubric import Rubric

from conftest import assert_one_sentence

PROMPT = "Let me tell you a long, magical tale. Once upon a time, in a faraway land,"
GOOD = (
    "there lived a little fox named Pip. Pip had a shiny red box that sang when the moon rose. "
    "One night the box fell silent, so Pip set out to find its lost song. He asked the old owl, "
    "who told him to listen to the river. Pip caught the tune in his box and carried it home."
)
SALAD = "green quickly table moon sings purple jumping happily under cloud river bottle seven running"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ agreement by hand
def rated(values_r, values_c, values_k):
    return [Rated(str(i), {"readability": r, "coherence": c, "creativity": k}) for i, (r, c, k) in enumerate(zip(values_r, values_c, values_k))]


def test_agreement_matches_hand_computed_values():
    rubric = Rubric()
    # readability: identical; coherence: reversed; creativity: one miss by one
    a = rated([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]) + [Rated("4", None)]
    b = rated([0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 2, 3]) + [Rated("4", {"readability": 1, "coherence": 1, "creativity": 1})]
    b = [b[i] for i in (4, 2, 0, 3, 1)]  # order differs: matched by id
    result = agreement(a, b, rubric, min_shared=1)  # the arithmetic, on four stories (too few by default)
    assert result["matched"] == 5 and result["matched_by"] == "id" and result["both_valid"] == 4
    assert result["invalid_rate_a"] == pytest.approx(1 / 5) and result["invalid_rate_b"] == 0
    r, c, k = (result["criteria"][n] for n in ("readability", "coherence", "creativity"))
    assert (r["spearman"], r["kappa"], r["exact"], r["mean_abs_diff"]) == (pytest.approx(1), pytest.approx(1), 1.0, 0.0)
    # reversed: rank correlation -1; quadratic kappa: observed weighted disagreement 20/9,
    # chance 10/9 (uniform margins, sum of (i-j)^2 over the 4x4 grid is 40, / 9 / 4) -> -1
    assert c["spearman"] == pytest.approx(-1) and c["kappa"] == pytest.approx(-1) and c["exact"] == 0.0
    assert c["mean_abs_diff"] == pytest.approx((3 + 1 + 1 + 3) / 4)
    # one miss by one: ranks (1,2,3,4) vs (1.5,1.5,3,4) -> r = 4.5 / sqrt(5 * 4.5) = 3 / sqrt(10);
    # kappa = 1 - (1/9) / (32/36) = 0.875 (hand-computed in the comment of agreement tests)
    assert k["spearman"] == pytest.approx(3 / math.sqrt(10))
    assert k["kappa"] == pytest.approx(0.875)
    assert k["exact"] == pytest.approx(0.75)
    assert result["total"]["n"] == 4


def test_too_few_shared_stories_get_no_kappa_and_say_so():
    rubric = Rubric()
    a = rated([3, 2, 1], [3, 2, 1], [3, 2, 1])
    b = [Rated("0", {"readability": 3, "coherence": 3, "creativity": 3}), Rated("9", None)]
    result = agreement(a, b, rubric)
    assert result["both_valid"] == 1 and result["enough"] is False and result["min_shared"] == 10
    for stats in [*result["criteria"].values(), result["total"]]:
        assert stats["n"] == 1 and stats["kappa"] is None and stats["spearman"] is None and stats["kappa_interval"] is None
    assert result["criteria"]["readability"]["exact"] == 1.0  # what one story can say is still said
    from onceupon.teacher.agreement import too_few

    assert too_few(result) == "not enough shared stories (1)"


def test_kappa_comes_with_a_seeded_bootstrap_interval_that_narrows_with_more_stories():
    rubric = Rubric()

    def noisy(n, seed):
        import random

        rng = random.Random(seed)
        truth = [rng.randint(0, 3) for _ in range(n)]
        other = [min(3, max(0, t + rng.choice([-1, 0, 0, 1]))) for t in truth]
        return rated(truth, truth, truth), rated(other, other, other)

    small, large = agreement(*noisy(30, 0), rubric), agreement(*noisy(600, 0), rubric)
    for result in (small, large):
        stats = result["criteria"]["coherence"]
        lo, hi = stats["kappa_interval"]
        assert lo < stats["kappa"] < hi <= 1.0
    width = {name: r["criteria"]["coherence"]["kappa_interval"][1] - r["criteria"]["coherence"]["kappa_interval"][0]
             for name, r in (("small", small), ("large", large))}
    assert width["large"] < width["small"] / 2  # about 1/sqrt(n): 600 stories vs 30
    assert agreement(*noisy(30, 0), rubric) == small  # seeded: the same ratings, the same interval
    assert agreement(*noisy(30, 0), rubric, seed=1)["criteria"]["coherence"]["kappa_interval"] != small["criteria"]["coherence"]["kappa_interval"]


def test_rate_compare_warns_when_two_raters_share_too_few_stories(tmp_path, cli):
    ours = write_jsonl(tmp_path / "ours.jsonl", [{"id": str(i), "scores": {"readability": 2, "coherence": 1, "creativity": i % 4}} for i in range(12)])
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "3", "readability": 2, "coherence": 1, "creativity": 3}])
    proc = cli("rate", str(ours), "--as-rated", "--compare", str(other))
    assert proc.returncode == 0, proc.stderr
    assert "not enough shared stories (1)" in " ".join(proc.stdout.split())
    report = json.loads((tmp_path / "ours.agreement.json").read_text())
    assert report["enough"] is False and report["criteria"]["creativity"]["kappa"] is None


def test_kappa_edge_cases():
    assert quadratic_kappa([2, 2], [2, 2], 0, 3) is None  # undefined, not a made-up number
    assert quadratic_kappa([], [], 0, 3) is None
    assert quadratic_kappa([0, 3], [0, 3], 0, 3) == pytest.approx(1.0)


def test_agreement_refuses_an_id_twice_on_either_side():
    rubric = Rubric()
    one = {"readability": 1, "coherence": 2, "creativity": 3}
    twice = [Rated("x", one), Rated("x", one)]
    for a, b in ((twice, [Rated("x", one)]), ([Rated("x", one)], twice)):
        with pytest.raises(UserError, match="id 'x' twice"):
            agreement(a, b, rubric)


def test_agreement_by_line_order_and_size_mismatch():
    rubric = Rubric()
    a = [Rated(None, {"readability": 1, "coherence": 2, "creativity": 3})] * 3
    assert agreement(a, a, rubric)["matched_by"] == "line order"
    with pytest.raises(UserError, match="same number of lines"):
        agreement(a, a[:2], rubric)


def test_human_ratings_as_top_level_fields(tmp_path):
    path = write_jsonl(
        tmp_path / "human.jsonl",
        [
            {"id": "x", "readability": 2, "coherence": 1, "creativity": 0},
            {"id": "y", "readability": 2, "coherence": None, "creativity": 0},  # incomplete: invalid
            {"id": "z", "valid": False, "scores": None},
        ],
    )
    rows = load_ratings(path, Rubric())
    assert rows[0].scores == {"readability": 2.0, "coherence": 1.0, "creativity": 0.0}
    assert rows[1].scores is None and rows[2].scores is None


# ------------------------------------------------------------------ the command
def test_rate_command_with_the_heuristic_teacher(tmp_path, cli):
    stories = write_jsonl(
        tmp_path / "stories.jsonl",
        [
            {"id": "good", "prompt": PROMPT, "continuation": GOOD + "</s><pad>"},
            {"id": "salad", "prompt": PROMPT, "continuation": SALAD},
            {"prompt": PROMPT, "text": PROMPT + " " + GOOD},
            {"continuation": ""},
        ],
    )
    result = cli("rate", str(stories), "--out", str(tmp_path / "ratings.jsonl"))
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "ratings.jsonl")
    assert [r["id"] for r in rows] == ["good", "salad", "3", "4"]
    assert all(r["valid"] for r in rows)
    assert rows[0]["continuation"] == GOOD  # cleaned
    assert rows[0]["total"] > rows[1]["total"]
    assert rows[2]["scores"] == rows[0]["scores"]  # the prompt was cut off the whole text
    assert rows[3]["total"] == 0 and rows[3]["raw"] == "0 0 0"
    assert set(rows[0]) >= {"scores", "score", "total", "raw", "error", "attempts", "teacher", "rubric"}
    assert rows[0]["teacher"].startswith("heuristic")


def test_rate_compare_writes_agreement_json(tmp_path, cli):
    stories = write_jsonl(
        tmp_path / "stories.jsonl",
        [{"id": str(i), "prompt": PROMPT, "continuation": t} for i, t in enumerate([GOOD, SALAD, GOOD[:60] + ".", "the fox ran. " * 9])],
    )
    human = write_jsonl(
        tmp_path / "human.jsonl",
        [{"id": "3", "readability": 0, "coherence": 0, "creativity": 0}, {"id": "0", "readability": 3, "coherence": 3, "creativity": 2}],
    )
    result = cli("rate", str(stories), "--out", str(tmp_path / "r.jsonl"), "--compare", str(human))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.agreement.json").read_text())
    assert report["matched"] == 2 and report["unmatched_a"] == 2
    assert set(report["criteria"]) == {"readability", "coherence", "creativity"}
    assert "spearman" in result.stdout and "kappa" in result.stdout
    # comparing the file with itself, without rating again: perfect agreement
    again = cli("rate", str(tmp_path / "r.jsonl"), "--as-rated", "--compare", str(tmp_path / "r.jsonl"))
    assert again.returncode == 0, again.stderr
    self_report = json.loads((tmp_path / "r.agreement.json").read_text())
    assert self_report["criteria"]["readability"]["exact"] == 1.0


def test_rate_command_user_errors(tmp_path, cli):
    assert_one_sentence(cli("rate", str(tmp_path / "none.jsonl")), "none.jsonl")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x"}])
    assert_one_sentence(cli("rate", str(bad)), "needs a 'continuation'")
    assert not (tmp_path / "bad.ratings.jsonl").exists()


def test_rate_command_through_a_real_server(tmp_path, cli, teacher_server, monkeypatch):
    secret = "sk-cli-" + "q9" * 10
    stories = write_jsonl(tmp_path / "s.jsonl", [{"id": str(i), "prompt": PROMPT, "continuation": GOOD} for i in range(4)])
    args = ["--set", "teacher.backend=openai", "--set", f"teacher.base_url={teacher_server}", "--set", "teacher.api_key_env=ONCEUPON_KEY"]
    res = cli("rate", str(stories), "--out", str(tmp_path / "r.jsonl"), *args, env={"ONCEUPON_KEY": secret})
    assert res.returncode == 0, res.stderr
    rows = read_jsonl(tmp_path / "r.jsonl")
    assert [r["scores"] for r in rows] == [{"readability": 2, "coherence": 3, "creativity": 1}] * 4
    assert rows[0]["teacher"].startswith("openai:")
    everything = res.stdout + res.stderr + (tmp_path / "r.jsonl").read_text()
    assert secret not in everything


def test_rate_command_with_an_unreachable_server_leaves_no_output(tmp_path, cli):
    from http_servers import free_port

    stories = write_jsonl(tmp_path / "s.jsonl", [{"continuation": GOOD}])
    url = f"http://127.0.0.1:{free_port()}/v1"
    res = cli("rate", str(stories), "--set", "teacher.backend=openai", "--set", f"teacher.base_url={url}")
    assert res.returncode == 2 and "Cannot reach the teacher server" in res.stderr
    assert not (tmp_path / "s.ratings.jsonl").exists()


# ------------------------------------------------------------------ never silent, nothing lost
def _wait_for_lines(path, n, proc, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines (exit {proc.poll()})")


@pytest.mark.parametrize("signum, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_rate_stopped_keeps_every_finished_rating_and_continues(tmp_path, signum, code):
    import os
    import signal
    import subprocess
    import sys

    from http_servers import proxy_stats, start_shared_cpu_server

    n = 30
    stories = write_jsonl(tmp_path / "s.jsonl", [{"id": f"s{i}", "prompt": PROMPT, "continuation": f"{GOOD} ({i})"} for i in range(n)])
    out, partial = tmp_path / "r.jsonl", tmp_path / "r.jsonl.partial"
    proc, url = start_shared_cpu_server(work=0.1)  # one request at a time takes 0.1 s: ~3 s for all
    args = [sys.executable, "-m", "onceupon.cli", "rate", str(stories), "--out", str(out),
            "--set", "teacher.backend=openai", "--set", f"teacher.base_url={url}", "--set", "teacher.concurrency=4"]
    env = {**os.environ, "ONCEUPON_PROGRESS": "plain", "ONCEUPON_PROGRESS_INTERVAL": "0.2"}
    with proc:
        first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        _wait_for_lines(partial, 1 + 5, first)  # the header and five ratings
        first.send_signal(getattr(signal, signum))
        _, err = first.communicate(timeout=60)
        assert first.returncode == code, err
        assert "Traceback" not in err and not out.exists()
        kept = [json.loads(line) for line in partial.read_text().splitlines()[1:]]
        assert 5 <= len(kept) < n and all(r["valid"] for r in kept)
        last = err.strip().splitlines()[-1]
        assert last == f"stopped: {len(kept)} of {n} stories are rated and kept in {partial}; run the same command again to rate the rest."
        before = proxy_stats(url)["requests"]

        second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 0, second.stderr
        asked_again = proxy_stats(url)["requests"] - before
    # the teacher's one start-up request, then only the stories not yet rated
    assert asked_again == 1 + n - len(kept)
    assert f"continuing from {partial}: {len(kept)} of {n} stories already rated" in second.stderr
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [f"s{i}" for i in range(n)] and all(r["valid"] for r in rows)
    assert not partial.exists()
    by_id = {r["id"]: r for r in rows}
    assert all(by_id[k["id"]] == {key: v for key, v in k.items() if key != "index"} for k in kept)
    # progress advanced story by story (not per chunk of 64), with requests in flight and retries
    progress = [line for line in (err + second.stderr).splitlines() if line.startswith("rate: ")]
    done = {int(line.split()[1].split("/")[0]) for line in progress}
    assert any(0 < d < n for d in done), progress
    assert any("in flight" in line and "retries" in line for line in progress), progress


def test_rate_refuses_a_partial_file_from_other_stories(tmp_path, cli):
    stories = write_jsonl(tmp_path / "s.jsonl", [{"continuation": GOOD}])
    partial = tmp_path / "s.ratings.jsonl.partial"
    partial.write_text(json.dumps({"format": "onceupon-rate-partial/1", "stories": "0" * 64}) + "\n")
    assert_one_sentence(cli("rate", str(stories)), "holds ratings of other stories")
    assert partial.exists() and not (tmp_path / "s.ratings.jsonl").exists()  # nothing lost


def test_rate_continues_a_partial_file_of_an_earlier_version(tmp_path, capsys):
    """The partial file's first line has named the same things since its first version
    (format, stories, teacher, rubric, settings); the teacher's fingerprint fills the last
    three now, so a file left by an earlier version is continued, not refused."""
    import hashlib

    from onceupon.config import ExperimentConfig
    from onceupon.teacher.factory import build_teacher
    from onceupon.teacher.rate import rate_file

    stories = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "continuation": GOOD}, {"id": "b", "continuation": SALAD}])
    with build_teacher() as teacher:
        identity = teacher.identity  # the heuristic teacher's
    digest = hashlib.sha256()
    for sid, text in (("a", GOOD), ("b", SALAD)):
        digest.update(json.dumps([sid, "", text]).encode("utf-8"))
    header = {
        "format": "onceupon-rate-partial/1", "stories": digest.hexdigest(), "teacher": identity, "rubric": Rubric().hash,
        "settings": {"invalid_policy": "exclude", "invalid_retries": 2, "min_words": 3},
    }
    kept = {"index": 0, "id": "a", "valid": True, "scores": {"readability": 3, "coherence": 3, "creativity": 3}, "mark": "kept"}
    out = tmp_path / "s.ratings.jsonl"
    (tmp_path / "s.ratings.jsonl.partial").write_text(json.dumps(header) + "\n" + json.dumps(kept) + "\n")
    records = rate_file(ExperimentConfig(), stories, out)
    assert "continuing from" in capsys.readouterr().err
    assert records[0]["mark"] == "kept" and "mark" not in records[1]  # the kept rating, not asked again
    assert records[1]["teacher"] == identity
