"""`onceupon report` on fabricated runs with known answers, and the page in headless Chromium."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fake_runs import make_interaction_run, make_pretraining_run

M = 1_000_000
#: The paper's results: mean teacher score of the first / last 10 RL batches per start checkpoint.
PAPER = {20 * M: (0.03, 0.20), 50 * M: (0.26, 1.36), 90 * M: (0.70, 2.28), 200 * M: (1.45, 2.70),
         500 * M: (2.25, 3.13), 900 * M: (2.64, 3.37)}

#: pretraining curve of the fabricated experiment: mean total per checkpoint words
CURVE = {1_000: 0.5, 2_000: 1.0, 4_000: 2.0, 8_000: 2.5, 16_000: 3.5}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A pretraining run and two interaction runs: one lands inside the curve, one above it."""
    root = tmp_path_factory.mktemp("experiment")
    pre = make_pretraining_run(root, CURVE)
    inside = make_interaction_run(root, pre / "checkpoints" / "chck_2K", 2_000, 1.0, 2.5, "rl_2K")
    above = make_interaction_run(root, pre / "checkpoints" / "chck_8K", 8_000, 2.5, 4.5, "rl_8K")
    return root, [pre, inside, above]


@pytest.fixture(scope="module")
def report(experiment):
    root, runs = experiment
    from conftest import run_cli

    out = root / "report"
    proc = run_cli("report", *map(str, runs), "--out", str(out), "--set", "report.bootstrap=300")
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout, json.loads((out / "report.json").read_text())


def test_equivalence_numbers_are_the_known_answers(report):
    _out, stdout, data = report
    eq = {r["run"]: r for r in data["equivalence"]["results"]}
    assert data["equivalence"]["source"] == "evaluate"
    # rl_2K ends at 2.5 = the 8K checkpoint's score: 8K needed, 6K extra, 600 words spent.
    r = eq["rl_2K"]
    assert r["position"] == "inside" and r["start_checkpoint"] == "chck_2K"
    assert r["needed_words"] == pytest.approx(8_000)
    assert r["extra_words"] == pytest.approx(6_000)
    assert r["interact_words"] == 600 and r["ratio"] == pytest.approx(10)
    lo, hi = r["extra_interval"]
    assert lo < 6_000 < hi and r["interval"]["fixed"] == []
    # rl_8K ends at 4.5, above the last checkpoint (16K, 3.5): a bound, not a number.
    r = eq["rl_8K"]
    assert r["position"] == "above" and r["needed_words"] is None and r["ratio"] is None
    assert r["bound"] == 16_000 and r["extra_bound"] == 8_000
    # The headline is the best run inside the curve, printed as the report computed it.
    assert data["headline"]["run"] == "rl_2K"
    assert f"headline: {data['headline']['text']}" in stdout
    assert "6K extra words of pretraining (10x)" in data["headline"]["text"]
    # Fabricated runs hold no teacher check: the headline sentence says so, not a note below it.
    assert data["headline"]["text"].endswith("; its teacher was not checked (the run holds no teacher check)")
    assert data["headline"]["teacher_check"]["status"] == "absent" and data["teacher_checks"] == []


def test_tables_and_figures(report):
    out, stdout, data = report
    assert f"report: {out / 'index.html'}" in stdout
    before_after = {t["run"]: t for t in data["before_after"]}
    tasks = {t["task"]: t for t in before_after["rl_2K"]["tasks"]}
    assert tasks["storyworld_entity_tracking"]["diff"] == pytest.approx(4.0)
    assert tasks["blimp"]["before"] == 70 and tasks["blimp"]["after"] == 70.5
    assert tasks["ewok"]["metric"] == "absent" and tasks["ewok"]["diff"] is None
    assert tasks["wug_past_tense"]["metric"] == "spearman"
    stories = {s["metric"]: s for s in before_after["rl_2K"]["stories"]}
    assert stories["mean total (0..max)"]["diff"] == pytest.approx(1.5)
    for name in ("equivalence", "pretrain_stories", "pretrain_tasks", "interaction_stories", "interaction_tasks"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    html = (out / "index.html").read_text()
    # Self-contained: figures embedded, nothing fetched from the network.
    assert html.count("data:image/png;base64,") >= 5
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "6K extra words of pretraining" in html and "&gt; 16K (above the curve)" in html


def test_babylm_tasks_get_a_column_each_beside_the_published_baselines(report):
    """COMPS, both reading figures, AoA and the GLUE tasks a checkpoint was fine-tuned on sit
    beside the zero-shot tasks in one table (a column per figure, in evaluate's order), with
    the published figures as rows below; before/after shows every figure too."""
    out, _stdout, data = report
    table = data["task_table"]
    columns = [(c["task"], c["metric"]) for c in table["columns"]]
    assert columns == [  # EWoK is absent in every row: no column
        ("blimp", "accuracy"), ("wug_past_tense", "spearman"), ("comps", "accuracy"),
        ("reading", "eye_tracking"), ("reading", "self_paced_reading"), ("aoa", "mean_surprisal"),
        ("glue_mrpc", "f1"), ("glue_rte", "accuracy"), ("storyworld_entity_tracking", "accuracy"),
    ]
    rows = {(r["run"], r["checkpoint"]): dict(zip(columns, r["cells"])) for r in table["rows"]}
    assert len(rows) == 5 + 2 + 2  # every evaluated checkpoint of the three runs
    final_name = next(t["final_checkpoint"] for t in data["before_after"] if t["run"] == "rl_2K")
    start, final = rows[("rl_2K", "start")], rows[("rl_2K", final_name)]
    assert final[("comps", "accuracy")] == pytest.approx(60.5)
    assert final[("reading", "eye_tracking")] == pytest.approx(7.05)
    assert final[("reading", "self_paced_reading")] == pytest.approx(0.705)
    assert final[("aoa", "mean_surprisal")] == pytest.approx(100 / 70.5)
    # GLUE from the fine-tuning results of the final checkpoint only, in % of its official metric
    assert final[("glue_rte", "accuracy")] == pytest.approx(62.5) and final[("glue_mrpc", "f1")] == pytest.approx(80)
    assert start[("glue_rte", "accuracy")] is None and start[("blimp", "accuracy")] == 70
    baselines = {b["name"]: dict(zip(columns, b["cells"])) for b in table["baselines"]}
    gpt2 = baselines["BabyLM 2025 GPT-2 baseline, 100M words (full eval)"]
    assert gpt2[("blimp", "accuracy")] == 74.88 and gpt2[("comps", "accuracy")] is None
    before_rl = baselines["paper: 900M-word checkpoint before RL (fast eval)"]
    after_rl = baselines["paper: 900M-word checkpoint after RL (fast eval)"]
    assert before_rl[("blimp", "accuracy")] == after_rl[("blimp", "accuracy")] == 77.98
    ba = {(t["task"], t["metric"]): t for t in next(t for t in data["before_after"] if t["run"] == "rl_2K")["tasks"]}
    assert ba[("reading", "self_paced_reading")]["diff"] == pytest.approx(0.005)
    assert ba[("glue_rte", "accuracy")]["before"] is None and ba[("glue_rte", "accuracy")]["after"] == pytest.approx(62.5)

    html = (out / "index.html").read_text()
    page = html[html.index('<table id="task-table">'):]
    page = page[: page.index("</table>")]
    for header in ("COMPS (accuracy %)", "reading (eye tracking, R^2 gain, % left)", "reading (self-paced reading, R^2 gain, % left)",
                   "AoA (mean surprisal, nats)", "GLUE RTE (accuracy %)", "GLUE MRPC (F1 %)", "BLiMP (accuracy %)"):
        assert f"<th>{header}</th>" in page, header
    final_row = next(r for r in page.split("<tr>") if f"<td class=\"l\">{final_name}</td>" in r and "rl_2K" in r)
    assert "<td>62.50</td>" in final_row and "<td>80.00</td>" in final_row and "<td>60.50</td>" in final_row
    assert "<i>BabyLM 2025 GPT-2 baseline, 100M words (full eval)</i>" in page and "<td><i>74.88</i></td>" in page
    assert page.count("<td><i>77.98</i></td>") == 2


def test_paper_table_from_the_anthology_matches_hand_computed_means(report, experiment):
    _out, _stdout, data = report
    _root, runs = experiment
    rows = {r["run"]: r for r in data["paper_table"]}
    anthology = [json.loads(l) for l in (runs[1] / "anthology.jsonl").read_text().splitlines()]
    steps = sorted({a["step"] for a in anthology})
    n = min(10, len(steps) // 2)  # 6 steps: first 3 vs last 3
    first = [a["total"] for a in anthology if a["step"] in steps[:n] and a["valid"]]
    last = [a["total"] for a in anthology if a["step"] in steps[-n:] and a["valid"]]
    assert rows["rl_2K"]["batches"] == n == 3
    assert rows["rl_2K"]["start_mean"] == pytest.approx(np.mean(first))
    assert rows["rl_2K"]["end_mean"] == pytest.approx(np.mean(last))
    assert rows["rl_2K"]["pretrain_words"] == 2_000


def test_the_papers_table_read_through_the_report(tmp_path):
    """Six interaction runs whose first/last 10 batches average the paper's numbers, no
    evaluation results: the anthology fallback must recover the paper's 410M reading."""
    runs = []
    for words, (start, end) in PAPER.items():
        runs.append(make_interaction_run(
            tmp_path, Path(f"/nowhere/chck_{words // M}M"), words, start, end, f"rl_{words // M}M",
            steps=20, batch=100, words_per_step=50_000, evaluated=False, invalid_every=0, profile="step"))
    from onceupon.analysis.report import build
    from onceupon.config import ReportConfig

    _index, data = build(ReportConfig(bootstrap=100), runs, tmp_path / "report")
    assert data["equivalence"]["source"] == "anthology"
    table = {r["pretrain_words"]: (r["start_mean"], r["end_mean"]) for r in data["paper_table"]}
    assert table == {w: pytest.approx(v) for w, v in PAPER.items()}
    eq = {r["run"]: r for r in data["equivalence"]["results"]}
    assert eq["rl_90M"]["reached_extra"] == 410 * M
    assert 410 * M < eq["rl_90M"]["extra_words"] < 450 * M
    assert eq["rl_90M"]["interact_words"] == 1 * M
    assert eq["rl_900M"]["position"] == "above"


def test_user_errors_exit_2_and_destroy_nothing(tmp_path, experiment, cli):
    _root, runs = experiment
    proc = cli("report", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = cli("report", str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "not an onceupon run directory" in proc.stderr
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    proc = cli("report", str(runs[0]), "--out", str(precious))
    assert proc.returncode == 2 and "not an onceupon report" in proc.stderr
    assert (precious / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "r").exists()


def test_rewriting_a_report_leaves_no_stale_figures(tmp_path, experiment):
    _root, runs = experiment
    from onceupon.analysis.report import build
    from onceupon.config import ReportConfig

    out = tmp_path / "report"
    build(ReportConfig(bootstrap=0), runs, out)
    assert (out / "figures" / "interaction_stories.png").exists()
    _index, data = build(ReportConfig(bootstrap=0), runs[:1], out)  # pretraining run only
    assert not (out / "figures" / "interaction_stories.png").exists()
    assert data["headline"] is None and data["equivalence"]["results"] == []
    assert any("no interaction run" in w for w in data["warnings"])


# --------------------------------------------------------------------------- in a real browser
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does it)")


def headless(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chrome-profile'}"]
    proc = subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def story_rows(dom: str) -> list[dict]:
    return [
        {"run": m.group(3), "step": int(m.group(1)), "total": float(m.group(2)) if m.group(2) else None}
        for m in re.finditer(r'<tr class="story[^"]*" data-step="(\d+)" data-total="([\d.]*)" data-run="([^"]+)"', dom)
    ]


def test_story_browser_filters_in_headless_chromium(report, tmp_path):
    out, _stdout, data = report
    url = (out / "index.html").resolve().as_uri()
    stories = data["browser"]["stories"]

    # No filter: every sampled story is listed (fewer than one page of 200).
    dom = headless(tmp_path, "--dump-dom", url).stdout
    assert len(story_rows(dom)) == len(stories) > 0
    assert data["headline"]["text"] in dom

    # Filters from the address: steps 5..6 of rl_8K with a total of at least 4.
    dom = headless(tmp_path, "--dump-dom", url + "?run=rl_8K&step_min=5&step_max=6&score_min=4").stdout
    rows = story_rows(dom)
    expected = [s for s in stories if s["run"] == "rl_8K" and 5 <= s["step"] <= 6 and s["total"] is not None
                and s["total"] >= 4]
    assert len(rows) == len(expected) > 0
    assert all(r["run"] == "rl_8K" and 5 <= r["step"] <= 6 and r["total"] >= 4 for r in rows)
    assert f"{len(expected)} of {len(stories)} sampled stories match" in dom

    # Invalid ratings only: their raw teacher answers are on the page.
    dom = headless(tmp_path, "--dump-dom", url + "?valid=invalid").stdout
    rows = story_rows(dom)
    assert len(rows) == sum(not s["valid"] for s in stories) > 0
    assert all(r["total"] is None for r in rows)
    assert "I cannot rate this" in dom

    # A screenshot of the filtered page: a real PNG of the requested size.
    shot = tmp_path / "report.png"
    headless(tmp_path, "--window-size=1280,2000", f"--screenshot={shot}", url + "?score_min=3")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 2000)


def test_story_text_cannot_inject_markup(tmp_path):
    """Stories are model output: they are shown as text, never parsed as HTML or script."""
    root = tmp_path / "runs"
    root.mkdir()
    run = make_interaction_run(root, Path("/nowhere/chck_1K"), 1_000, 1.0, 2.0, "rl", steps=2, batch=3,
                               invalid_every=0)
    lines = [json.loads(l) for l in (run / "anthology.jsonl").read_text().splitlines()]
    lines[0]["continuation"] = "</script><script>document.title='pwned'</script><b id=evil>bold</b> & more"
    (run / "anthology.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    from onceupon.analysis.report import build
    from onceupon.config import ReportConfig

    index, _data = build(ReportConfig(bootstrap=0), [run], tmp_path / "report")
    dom = headless(tmp_path, "--dump-dom", index.resolve().as_uri()).stdout
    assert 'id="evil"' not in dom
    assert "<title>onceupon: onceupon report</title>" in dom  # the injected script did not run
    assert "&lt;/script&gt;&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;b id=evil&gt;bold&lt;/b&gt; &amp; more" in dom
    assert len(story_rows(dom)) == 6


# --------------------------------------------------------------------------- judges and teacher checks
def save_run_check(run, answer, identity):
    """The teacher check `onceupon interact` saves in RUN/teacher_check, made here of a
    teacher whose answer per probe is ``answer(judges, probe)`` (fake_judges.ProbeJudges;
    through the real pipeline)."""
    from fake_judges import ProbeJudges

    from onceupon.config import TeacherConfig
    from onceupon.teacher.check_teacher import check, write_check
    from onceupon.teacher.parsing import rating_from_answer
    from onceupon.teacher.pipeline import RubricTeacher
    from onceupon.teacher.probes import build_probes, storyworld_stories
    from onceupon.teacher.rubric import Rubric

    rubric = Rubric.from_config(TeacherConfig())

    class Backend:
        def __init__(self):
            self.identity = identity

        def rate(self, stories):
            return [rating_from_answer(answer(judges, judges.by_id.get(s.id)), rubric) for s in stories]

        def close(self):
            pass

    probes = build_probes(storyworld_stories(10, seed=0), "3 3 3", seed=0)
    judges = ProbeJudges(probes)
    result, ratings, retests = check(RubricTeacher(Backend(), rubric), probes, retest=0)
    write_check(run / "teacher_check", result, probes, ratings, retests)
    return result


def test_the_headline_names_the_runs_teacher_verdict(tmp_path):
    """A run's own teacher check (RUN/teacher_check) is named in the headline sentence, in
    the equivalence table and in the teacher checks section; report.json holds it."""
    from onceupon.analysis.report import build
    from onceupon.config import ReportConfig
    from onceupon.files import atomic_write_json

    pre = make_pretraining_run(tmp_path, CURVE)
    run = make_interaction_run(tmp_path, pre / "checkpoints" / "chck_2K", 2_000, 1.0, 2.5, "rl")

    def headline(name):
        _index, data = build(ReportConfig(bootstrap=0), [pre, run], tmp_path / name)
        return data, (tmp_path / name / "index.html").read_text()

    # A teacher that always answers "2 2 2" fails: the headline says so, with the reasons.
    failed = save_run_check(run, lambda judges, probe: "2 2 2", "same-answer")
    data, html = headline("failed")
    text = data["headline"]["text"]
    assert text.startswith("600 words of interaction from chck_2K ~ 6K extra words of pretraining (10x)")
    assert "; its teacher same-answer FAILED the teacher check (storyworld probes: readability does not discriminate;" in text
    assert "100 % of the valid answers are '2 2 2'" in text
    assert data["headline"]["teacher_check"]["status"] == "failed"
    (shown,) = data["teacher_checks"]
    assert shown["run"] == "rl" and shown["verdict"] == failed["verdict"]
    assert shown["path"] == str(run / "teacher_check" / "check.json")
    assert f"<b>Headline:</b> {text}." in html.replace("&#39;", "'")
    assert 'id="headline"' in html and '<span class="neg">FAIL</span>' in html

    # A teacher that lowers exactly what each damage targets passes, and the headline says that too.
    save_run_check(run, lambda judges, probe: " ".join(map(str, judges.honest(probe).values())), "faultless")
    data, html = headline("passed")
    assert data["headline"]["text"].endswith("(10x); its teacher faultless passed the teacher check")
    assert data["teacher_checks"][0]["criteria"]["coherence"]["gap"] == 1.0
    assert "gap (95 % interval)" in html and "+1.00 (+1.00 .. +1.00)" in html

    # Skipped (--skip-teacher-check): no check.json, the reason in the headline.
    import shutil

    shutil.rmtree(run / "teacher_check")
    atomic_write_json(run / "teacher_check" / "skipped.json", {"skipped": True, "reason": "--skip-teacher-check"})
    data, html = headline("skipped")
    assert data["headline"]["text"].endswith("(10x); its teacher was not checked (--skip-teacher-check)")
    assert data["teacher_checks"] == [] and '<span class="neg">skipped</span>' in html


def test_report_shows_the_gain_by_every_judge_and_the_teacher_check(tmp_path, cli):
    """One interaction run, two judges: the fabricated one it trained with (rows' main
    scores; a different server address is still the same judge) and the heuristic, added
    with `evaluate --judge` on the very same stories; plus a teacher check section."""
    from fake_runs import FAKE_TEACHER

    pre = make_pretraining_run(tmp_path, CURVE, n_stories=12)
    trained_with = FAKE_TEACHER | {"base_url": "http://elsewhere:8000/v1"}
    run = make_interaction_run(tmp_path, pre / "checkpoints" / "chck_2K", 2_000, 1.0, 2.5, "rl", n_stories=12, teacher=trained_with)
    proc = cli("evaluate", str(run), "--judge")
    assert proc.returncode == 0, proc.stderr
    assert "heuristic:v3" in proc.stdout and "openai:fake-judge" in proc.stdout
    check = tmp_path / "check"
    assert cli("check-teacher", "--out", str(check), "--n", "10", "--retest", "0").returncode == 0

    out = tmp_path / "report"
    proc = cli("report", str(pre), str(run), "--out", str(out), "--check", str(check), "--set", "report.bootstrap=0")
    assert proc.returncode == 0, proc.stderr
    assert "teacher check: PASS: heuristic:v3 discriminates on readability, coherence, creativity" in proc.stdout
    data = json.loads((out / "report.json").read_text())
    (gains,) = data["judge_gains"]
    trained, heuristic = gains["judges"]
    assert trained["judge"] == "openai:fake-judge|t=0.2" and trained["trained"] is True
    assert trained["gain"] == pytest.approx(1.5)  # the fabricated rows: 1.0 -> 2.5
    assert heuristic["judge"] == "heuristic:v3" and heuristic["trained"] is False

    # The heuristic's gain is its own ratings of the same stories, start vs final.
    def mean_total(checkpoint):
        (path,) = (run / "evaluation" / checkpoint / "judges").glob("*/stories.jsonl")
        records = [json.loads(line) for line in path.read_text().splitlines()]
        main = [json.loads(line) for line in (run / "evaluation" / checkpoint / "stories.jsonl").read_text().splitlines()]
        assert [r["continuation"] for r in records] == [r["continuation"] for r in main]
        return np.mean([r["total"] for r in records if r["valid"]])

    assert heuristic["start"] == pytest.approx(mean_total("start"))
    assert heuristic["gain"] == pytest.approx(mean_total(gains["final_checkpoint"]) - mean_total("start"))
    html = (out / "index.html").read_text()
    assert "Gain by judge" in html and "trained this run" in html and "Teacher checks" in html
    assert data["teacher_checks"][0]["criteria"]["coherence"]["verdict"] == "discriminates"

    # A bad --check fails with one sentence before anything is written.
    proc = cli("report", str(run), "--out", str(tmp_path / "r2"), "--check", str(tmp_path))
    assert proc.returncode == 2 and "holds no check.json" in proc.stderr and not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_a_real_run_rated_by_two_judges(tiny_checkpoint, tmp_path, cli, teacher_server):
    """A real (tiny) interaction run trained with the heuristic, evaluated with it, then
    judged again by an LLM behind a real server: the report shows both gains side by side."""
    run = tmp_path / "rl"
    small = ["--set", "interact.batch_size=4", "--set", "interact.max_new_tokens=12", "--set", "interact.max_steps=2"]
    proc = cli("interact", "--from", str(tiny_checkpoint), "--out", str(run), *small)
    assert proc.returncode == 0, proc.stderr
    evaluation = ["--set", "evaluate.stories=8", "--set", "evaluate.story_max_new_tokens=16", "--set", "evaluate.probe_items=0"]
    proc = cli("evaluate", str(run), *evaluation)
    assert proc.returncode == 0, proc.stderr
    proc = cli("evaluate", str(run), "--judge", "--set", "teacher.backend=openai", "--set", f"teacher.base_url={teacher_server}")
    assert proc.returncode == 0, proc.stderr

    out = tmp_path / "report"
    proc = cli("report", str(run), "--out", str(out), "--set", "report.bootstrap=0")
    assert proc.returncode == 0, proc.stderr
    (gains,) = json.loads((out / "report.json").read_text())["judge_gains"]
    trained, other = gains["judges"]
    assert trained["judge"] == "heuristic:v3" and trained["trained"] is True and trained["role"] == "main"
    assert other["judge"].startswith("openai:") and other["trained"] is False and other["role"] == "extra judge"
    for judge in (trained, other):
        assert judge["gain"] == pytest.approx(judge["final"] - judge["start"]) and judge["n"] == [8, 8]
    assert "trained this run" in (out / "index.html").read_text()
