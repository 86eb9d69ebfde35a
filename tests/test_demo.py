"""`onceupon demo`: the real pipeline end to end (slow), and its refusal to reuse a directory."""

import json
import math
import re
from pathlib import Path

import pytest

from onceupon.analysis.efficiency import Curve, words_to_reach


def test_demo_refuses_an_existing_directory(tmp_path, cli):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    proc = cli("demo", "--out", str(out))
    assert proc.returncode == 2
    assert "already exists" in proc.stderr and "--force" in proc.stderr
    # --force replaces only an earlier demo, never a directory the demo did not write.
    proc = cli("demo", "--out", str(out), "--force")
    assert proc.returncode == 2 and "not a demo directory" in proc.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_log_spaced_checkpoints_keep_both_ends():
    from onceupon.demo import log_spaced

    points = [(w, Path(f"chck_{w}")) for w in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 30, 40)]
    chosen = [w for w, _ in log_spaced(points, 6)]
    assert chosen[0] == 1 and chosen[-1] == 40 and len(chosen) == 6
    assert chosen == sorted(chosen)
    assert [w for w, _ in log_spaced(points[:3], 6)] == [1, 2, 3]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, cli):
    out = tmp_path / "demo"
    proc = cli("demo", "--out", str(out), "--seed", "3", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = Path(re.search(r"^report: (.+)$", proc.stdout, re.M).group(1))
    headline = re.search(r"^headline: (.+)$", proc.stdout, re.M).group(1)
    data = json.loads((report.parent / "report.json").read_text())

    # The printed headline is the report's, and the report's numbers come from the runs'
    # evaluation results: recompute the headline run's equivalence from results.json.
    assert headline == data["headline"]["text"]
    eq = {r["run"]: r for r in data["equivalence"]["results"]}[data["headline"]["run"]]
    pre_rows = json.loads((out / "pretrain" / "results.json").read_text())["rows"]
    curve = Curve.from_points([(r["pretrain_words"], r["stories"]["mean_total"]) for r in pre_rows])
    run_rows = json.loads((out / data["headline"]["run"] / "results.json").read_text())["rows"]
    final = max(run_rows, key=lambda r: r["interact_words"])
    assert eq["final_score"] == pytest.approx(final["stories"]["mean_total"])
    assert eq["interact_words"] == final["interact_words"] > 0
    reach = words_to_reach(curve, final["stories"]["mean_total"])
    assert eq["position"] == reach.position
    if reach.position == "inside":
        assert eq["needed_words"] == pytest.approx(reach.words)
        assert eq["extra_words"] == pytest.approx(reach.words - eq["start_words"])

    # Every stage left its artifacts: milestone checkpoints, two interaction runs with
    # anthologies, evaluation rows with the storyworld probe and story quality, the page.
    assert len(pre_rows) >= 4
    runs = [r for r in data["runs"] if r["kind"] == "interact"]
    assert len(runs) == 2 and all(r["stories"] > 0 for r in runs)
    assert all("storyworld_entity_tracking" in r["tasks"] and r["stories"]["n"] > 0 for r in pre_rows)
    assert data["equivalence"]["source"] == "evaluate"
    assert (report.parent / "figures" / "equivalence.png").is_file()
    marker = json.loads((out / "demo.json").read_text())
    assert marker["status"] == "done"

    # Each interaction run checked its teacher first; the headline sentence carries the
    # headline run's verdict, printed above it too, and report.json holds both checks.
    checks = {(c["run"], c["set"]): c for c in data["teacher_checks"]}
    assert {run for run, _ in checks} == {r["name"] for r in runs}
    # Three probe sets: storyworld stories told after the run's prompt and the start
    # checkpoint's own stories (before the run), the stories it rated (after it); a set with
    # too few usable stories says so instead of vanishing.
    verdict = data["headline"]["teacher_check"]
    assert verdict["status"] in ("passed", "failed") and marker["teacher_check"] == verdict["status"]
    assert set(verdict["sets"]) == {"storyworld", "student", "rated"}
    assert verdict["sets"]["storyworld"]["text"] == checks[data["headline"]["run"], "storyworld probes"]["verdict"]["text"]
    assert f"teacher check: {verdict['text']}" in proc.stdout
    assert verdict["text"].startswith("storyworld probes: ") and "; the stories it rated: " in verdict["text"]
    if verdict["status"] == "failed":
        assert headline.endswith(f"; its teacher {verdict['teacher']} FAILED the teacher check ({verdict['reasons']})")
    else:
        assert f"; its teacher {verdict['teacher']} passed the teacher check on storyworld probes" in headline
        for name, one in verdict["sets"].items():
            said = {"student": "the student's own stories", "rated": "the stories it rated"}.get(name)
            assert one["status"] in ("passed", "skipped") and (said is None or said in headline)
    for run in runs:
        check_dir = out / run["name"] / "teacher_check"
        assert (check_dir / "check.json").is_file()
        for name in ("student", "rated"):
            assert (check_dir / name / "check.json").is_file() or (check_dir / name / "skipped.json").is_file()

    # A second run into the same directory reuses nothing: refused without --force.
    proc = cli("demo", "--out", str(out), "--seed", "3")
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert report.is_file()
    assert not math.isnan(data["equivalence"]["results"][0]["final_score"])
