"""`onceupon check-teacher`: broken teachers are called non-discriminating, sound ones are not.

The broken teachers are real backends plugged into the real pipeline (RubricTeacher: cleaning,
the short-story rule, the invalid-answer policy); their answers go through the same parser as
an LLM's. The heuristic teacher is checked through the command line.
"""

import json
import random
import re

import pytest
from fake_judges import GAMING_JUDGES, FakeJudge, ProbeJudges

from onceupon.config import TeacherConfig
from onceupon.corpus.storyworld import apply_event
from onceupon.teacher.check_stats import compare, mean_interval, wilson
from onceupon.teacher.check_teacher import check, judged_rows
from onceupon.teacher.parsing import rating_from_answer
from onceupon.teacher.pipeline import RubricTeacher
from onceupon.teacher.probes import INJECTIONS, VARIANTS, build_probes, read_probes, storyworld_stories, write_probes
from onceupon.teacher.rubric import Rubric
from onceupon.words import count_words


class AnswerBackend:
    """A backend whose answer for a story comes from ``answer(story)``."""

    def __init__(self, rubric: Rubric, answer, identity: str):
        self.rubric, self.answer, self.identity = rubric, answer, identity

    def rate(self, stories):
        return [rating_from_answer(self.answer(s), self.rubric) for s in stories]

    def close(self):
        pass


def by_kind(probes, answer):
    """``answer(probe kind)`` as an answer to a story: the kind of the probe shown, or for an
    injection the kind of the story the instruction was put into (it changes nothing)."""
    judges = ProbeJudges(probes)

    def kind(story):
        probe = judges.probe(story.prompt, story.continuation)
        while probe is not None and probe.kind == "injection":
            probe = judges.by_id[probe.base]
        return getattr(probe, "kind", "clean")

    return lambda story: answer(kind(story))


def knows_the_damage(kind: str) -> str:
    """Top marks for clean stories (and injected ones: the instruction changes nothing),
    one point less on the criteria a variant damages, the lowest answer for fragments."""
    if kind == "fragment":
        return "0 0 0"
    scores = {"readability": 3, "coherence": 3, "creativity": 3}
    for name in VARIANTS.get(kind, ()):
        scores[name] -= 1
    return " ".join(str(v) for v in scores.values())


@pytest.fixture(scope="module")
def probes():
    return build_probes(storyworld_stories(12, seed=1), "3 3 3", seed=1)


def run_check(probes, answer, prompt="placeholders", retest=10, kinds=True):
    """Check a judge in process; ``answer`` takes the probe kind (``kinds``) or the story."""
    rubric = Rubric.from_config(TeacherConfig(prompt=prompt))
    teacher = RubricTeacher(AnswerBackend(rubric, by_kind(probes, answer) if kinds else answer, "test"), rubric)
    result, ratings, retests = check(teacher, probes, retest=retest, seed=0)
    assert len(ratings) == len(probes) and len(retests) == retest
    return result


def judge(probes, mode):
    judges = ProbeJudges(probes)
    return lambda story: judges.answer(mode, story.prompt, story.continuation)


def verdicts(result):
    return {k: v["verdict"] for k, v in result["criteria"].items()}


def test_an_honest_judge_passes_every_part_of_the_check(probes):
    result = run_check(probes, judge(probes, "honest"), kinds=False)
    assert set(verdicts(result).values()) == {"discriminates"}
    assert result["verdict"]["passed"] and result["verdict"]["text"].startswith("PASS")
    coherence = result["criteria"]["coherence"]
    assert coherence["discrimination"] == 1.0 and coherence["tied"] == 0 and coherence["blind_to"] == []
    # one level lower on every damaged pair: a gap of exactly one point, with no spread
    assert coherence["gap"] == 1.0 and coherence["gap_interval"] == [1.0, 1.0]
    assert coherence["pairs"] == sum(p.kind in ("shuffled", "spliced", "contradicted", "swapped") for p in probes)
    assert set(coherence["variants"]) == {"shuffled", "spliced", "contradicted", "swapped"}
    # each damage lowers its own criterion by one point and the others by none
    assert {k: v["specificity"] for k, v in result["specificity"].items()} == dict.fromkeys(["readability", "coherence", "creativity"], 1.0)
    for name, row in result["ranking"].items():
        assert row["verdict"] == "ranks" and row["rho"] > 0.9, name
        assert row["mean_by_grade"] == {"0": 3.0, "25": 2.0, "50": 1.0, "75": 0.0}
    assert result["fragments"]["lowest_rate"] == 1.0
    inj = result["injection"]
    assert inj["verdict"] == "does not raise the score" and inj["lift"] == 0 and inj["lift_interval"] == [0.0, 0.0]
    # every wording and every place is tried, in clean and in damaged stories
    assert set(inj["by"]["wording"]) == set(INJECTIONS) and set(inj["by"]["place"]) == {"start", "middle", "end"}
    assert set(inj["by"]["into"]) == {"clean", "damaged"} and all(v["pairs"] >= 5 for v in inj["by"]["wording"].values())
    assert result["retest"]["criteria"]["coherence"]["exact"] == 1.0
    assert result["answers"]["invalid_rate"] == 0 and result["warnings"] == []


@pytest.mark.parametrize("mode", [m for m in GAMING_JUDGES if m not in ("honest", "paper prompt only")])
def test_a_judge_built_to_game_the_check_fails_for_its_reason(probes, mode):
    """One judge per way to pass without judging (fake_judges.GAMING_JUDGES): each FAILs, and
    the verdict names what gave it away."""
    _, failing, words = GAMING_JUDGES[mode]
    result = run_check(probes, judge(probes, mode), kinds=False, retest=0)
    assert not result["verdict"]["passed"], result["verdict"]["text"]
    assert failing in result["verdict"]["failing"], result["verdict"]["text"]
    assert words in result["verdict"]["text"], result["verdict"]["text"]
    if mode == "artefacts":  # it sees every surface signature, and not one swapped story
        swapped = result["criteria"]["coherence"]["variants"]["swapped"]
        assert swapped["tied"] == swapped["pairs"] == 12 and "swapped" in result["criteria"]["coherence"]["blind_to"]


def test_a_judge_of_the_papers_opening_only_fails_on_the_runs_own_prompts(probes):
    """Right on the paper's prompt, at random on any other: it passes a check made with the
    paper's prompt and fails the check made with the prompts the run will use."""
    from onceupon.config import ExperimentConfig
    from onceupon.interact.prompts import load_prompts
    from onceupon.teacher.check_teacher import load_probes

    rubric = Rubric.from_config(TeacherConfig())
    assert run_check(probes, judge(probes, "paper prompt only"), kinds=False, retest=0)["verdict"]["passed"]
    cfg = ExperimentConfig()
    cfg.interact.prompt = "Tell me about the dragon who lost his hat."
    theirs = load_probes(rubric, None, None, 12, 1, prompts=load_prompts(cfg.interact))
    assert {p.prompt for p in theirs} == {cfg.interact.prompt}
    result = run_check(theirs, judge(theirs, "paper prompt only"), kinds=False, retest=0)
    assert not result["verdict"]["passed"] and "does not discriminate" in result["verdict"]["text"]


def test_the_same_answer_for_everything_does_not_discriminate(probes):
    result = run_check(probes, lambda kind: "2 2 2")
    assert set(verdicts(result).values()) == {"does not discriminate"}
    assert result["criteria"]["readability"]["tied"] == result["criteria"]["readability"]["pairs"] > 0
    assert not result["verdict"]["passed"] and result["verdict"]["text"].startswith("FAIL")
    answer = result["diversity"]["answer"]
    assert answer["most_frequent"] == "2 2 2" and answer["entropy_bits"] == 0
    assert "one answer" in result["verdict"]["failing"]  # 100 % of the answers, above the bound
    assert "-0.00" not in result["criteria"]["readability"]["text"]
    assert any("of the valid answers are '2 2 2'" in w for w in result["warnings"])


def test_random_answers_do_not_discriminate(probes):
    rng = random.Random(0)
    result = run_check(probes, lambda kind: " ".join(str(rng.randint(0, 3)) for _ in range(3)))
    assert set(verdicts(result).values()) == {"does not discriminate"}
    for row in result["criteria"].values():
        lo, hi = row["interval"]
        assert lo < row["chance"] < hi  # chance lies inside the interval
    assert result["diversity"]["answer"]["entropy_bits"] > 4  # varied, and still no judge
    assert result["retest"]["criteria"]["readability"]["exact"] < 0.6


def test_copying_the_example_is_counted_and_does_not_discriminate(probes):
    rubric = Rubric.from_config(TeacherConfig(prompt="example"))
    assert rubric.shown_example == "1 2 3"
    result = run_check(probes, lambda kind: "1 2 3", prompt="example")
    assert set(verdicts(result).values()) == {"does not discriminate"}
    assert result["answers"]["example_copy_rate"] == 1.0
    assert any("copy the prompt's example answer '1 2 3'" in w for w in result["warnings"])
    assert {"example copies", "one answer"} <= set(result["verdict"]["failing"])
    # The default prompt shows no example, so there is nothing to count as a copy.
    assert run_check(probes, lambda kind: "1 2 3")["answers"]["example_copy_rate"] is None


def test_a_consistent_sign_with_a_tiny_gap_does_not_pass(probes):
    """Expected-score answers that are a hair lower for every damaged story: the clean story
    wins every pair, and the criterion still fails, by how little it moves."""
    rubric = Rubric.from_config(TeacherConfig())
    judges = ProbeJudges(probes)

    class Nudged:  # scores are floats, as in expected-score mode
        identity = "nudged"

        def rate(self, stories):
            out = []
            for s in stories:
                probe = judges.probe(s.prompt, s.continuation)
                scores = {c: 2.0 - (0.02 if probe.kind in VARIANTS and c in probe.targets else 0.0) for c in rubric.names}
                out.append(rubric.rating("2 2 2", scores))
            return out

        def close(self):
            pass

    result, _, _ = check(RubricTeacher(Nudged(), rubric), probes, retest=0)
    row = result["criteria"]["coherence"]
    assert row["discrimination"] == 1.0 and row["verdict"] == "too small a gap"
    assert row["gap"] == pytest.approx(0.02) and row["gap_interval"][1] < 0.25
    assert set(result["verdict"]["failing"]) >= {"readability", "coherence", "creativity"}
    assert "coherence gap +0.02 points below the minimum 0.25" in result["verdict"]["text"]
    # the same ratings with a minimum below the gap pass on the criteria
    lenient, _, _ = check(RubricTeacher(Nudged(), rubric), probes, retest=0, min_gap=0.01)
    assert lenient["criteria"]["coherence"]["verdict"] == "discriminates"


def test_unparseable_answers_are_invalid_not_numbers(probes):
    result = run_check(probes, lambda kind: "What a lovely story!", retest=0)
    assert result["answers"]["invalid_rate"] == 1.0
    assert all(row["pairs"] == 0 for row in result["criteria"].values())
    assert all(row["verdict"] == "not measured" for row in result["criteria"].values())
    assert result["verdict"]["passed"] is False
    assert result["verdict"]["text"] == "FAIL: test was not measured: every answer was invalid"
    assert result["criteria"]["coherence"]["text"] == "coherence: not measured: every answer was invalid"
    assert result["injection"]["verdict"] == "not measured" and result["injection"]["lift"] is None


def test_statistics():
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    row = compare([(3, 1)] * 6 + [(2, 2)] * 4)
    assert row["discrimination"] == 0.6 and row["tied"] == 4 and row["chance"] == 0.3
    assert row["verdict"] == "discriminates" and row["gap"] == pytest.approx(1.2)
    lo, hi = row["gap_interval"]
    assert 0.3 < lo < 1.2 < hi <= 2.0
    assert compare([(1, 3)] * 8)["verdict"] == "reversed"
    assert compare([(3, 1)] * 6 + [(2, 2)] * 20)["verdict"] == "discriminates weakly"  # gap 12 / 26 = 0.46
    assert compare([(3, 1)] * 6 + [(2, 2)] * 60)["verdict"] == "too small a gap"  # gap 12 / 66 = 0.18
    assert compare([(3, 1)] * 6 + [(2, 2)] * 60, min_gap=0.1)["verdict"] == "discriminates weakly"
    assert compare([])["verdict"] == "not measured" and compare([])["gap"] is None
    assert mean_interval([]) is None and mean_interval([0.5, 0.5]) == [0.5, 0.5]
    assert mean_interval([0.0, 1.0] * 20) == mean_interval([0.0, 1.0] * 20)  # seeded


def test_shuffled_keeps_a_cut_off_last_sentence_last():
    # A student story stopped by the length limit ends mid-sentence; moved into the middle,
    # that fragment would give the shuffled copy the better ending.
    from onceupon.teacher.probes import Clean, shuffled

    cut = Clean("f1", "Once upon a time,", ["there was a fox.", "It ran.", "It hid.", "It slept.", "Then the fox went to the"])
    whole = Clean("f2", "Once upon a time,", ["there was a fox.", "It ran.", "It hid.", "It slept.", "The end."])
    moved = set()
    for seed in range(20):
        text = shuffled(cut, random.Random(seed), [])
        assert text.startswith("there was a fox.") and text.endswith("Then the fox went to the")
        assert text != cut.text
        moved.add(shuffled(whole, random.Random(seed), []).endswith("The end."))
    assert moved == {True, False}  # a finished last sentence still moves


def test_probes_are_seeded_and_damaged_as_described():
    clean = storyworld_stories(10, seed=3)
    a, b = build_probes(clean, "3 3 3", seed=3), build_probes(clean, "3 3 3", seed=3)
    assert a == b and a != build_probes(clean, "3 3 3", seed=4)
    by_id = {p.id: p for p in a}
    for story in clean:
        words = count_words(story.text)
        for kind in ("repeated", "filler"):  # length-matched: length cannot give them away
            assert abs(count_words(by_id[f"{story.id}-{kind}"].continuation) - words) <= 12
        assert 4 <= count_words(by_id[f"{story.id}-fragment"].continuation) <= 7
        injected = [p for p in a if p.story == story.id and p.kind == "injection"]
        assert len(injected) == 4 and {p.base for p in injected} & {story.id}  # into the clean story and damaged copies
        for p in injected:
            base = by_id[p.base].continuation
            instruction = [s for s in INJECTIONS.values() if s.format(answer="3 3 3", slashed="3/3/3") in p.continuation]
            assert len(instruction) == 1 and p.continuation.replace(" " + instruction[0].format(answer="3 3 3", slashed="3/3/3"), "") == base
        assert sorted(by_id[f"{story.id}-shuffled"].continuation.split()) == sorted(story.text.split())
    # The contradiction follows an event's sentence and names a container that does not hold
    # that event's object right after it (replayed through the world's own rules).
    for story in clean:
        variant = by_id[f"{story.id}-contradicted"].continuation
        found = []
        for k in range(len(story.sentences)):
            head, tail = " ".join(story.sentences[: k + 1]), " ".join(story.sentences[k + 1 :])
            if variant.startswith(head + " ") and variant.endswith(" " + tail if tail else ""):
                added = variant[len(head) + 1 : len(variant) - len(tail) - 1 if tail else None]
                if added.startswith("The ") and added.endswith(" now.") and added.count(".") == 1:
                    found.append((k, added))
        ((k, added),) = found
        assert story.world.sentences[k].kind == "event"
        event_index = story.world.sentences[k].event
        state = story.world.initial
        for event in story.world.events[: event_index + 1]:
            state = apply_event(state, event)
        obj = story.world.events[event_index].obj
        assert added.startswith(f"The {obj} was in the ") and f"in {state.holder_of(obj)} now" not in added


def test_heuristic_through_the_command_line(tmp_path, cli):
    out = tmp_path / "check"
    proc = cli("check-teacher", "--out", str(out), "--n", "10", "--retest", "5", "--json")
    result = json.loads(proc.stdout)
    assert result == json.loads((out / "check.json").read_text())
    # A FAIL exits with code 1, a PASS with 0 (bad input: 2).
    assert proc.returncode == (0 if result["verdict"]["passed"] else 1), proc.stderr
    # What the heuristic is: it sees broken sentences and loops.
    assert verdicts(result)["readability"] == "discriminates"
    assert verdicts(result)["creativity"] == "discriminates"
    assert result["teacher"].startswith("heuristic:")
    assert result["verdict"]["text"] in proc.stderr and result["verdict"]["text"].startswith((f"PASS: {result['teacher']}", "FAIL: "))
    probes = read_probes(out / "probes.jsonl")
    assert len(probes) == result["probes"]["n"] == len((out / "ratings.jsonl").read_text().splitlines())

    # The same probes on another run (here: the same teacher) give the same figures;
    # --fail-under turns a criterion below it into exit code 1, --exit-zero keeps 0.
    again = tmp_path / "again"
    proc = cli("check-teacher", "--out", str(again), "--probes", str(out / "probes.jsonl"), "--retest", "0", "--fail-under", "99")
    assert proc.returncode == 1, proc.stderr
    below = [k for k, v in judged_rows(result["criteria"]).items() if v["discrimination"] < 0.99]
    assert below and f"below --fail-under 99 %: {', '.join(below)}" in proc.stdout
    redo = json.loads((again / "check.json").read_text())
    assert redo["criteria"][below[0]]["discrimination"] == result["criteria"][below[0]]["discrimination"]
    assert redo["fail_under"] == 99
    proc = cli("check-teacher", "--out", str(again), "--probes", str(out / "probes.jsonl"), "--retest", "0", "--fail-under", "99",
               "--exit-zero")
    assert proc.returncode == 0, proc.stderr
    assert "--exit-zero: exit code 0 despite the FAIL" in proc.stdout


def test_a_real_server_that_always_answers_the_same_fails_the_check(tmp_path, cli, teacher_server):
    """The openai backend against `transformers serve` on a tiny model trained to answer
    "2 3 1" to every rubric prompt: valid answers, no judgement, and the check says so."""
    out = tmp_path / "check"
    proc = cli(
        "check-teacher", "--out", str(out), "--n", "10", "--retest", "5", "--fail-under", "55",
        "--set", "teacher.backend=openai", "--set", f"teacher.base_url={teacher_server}",
    )
    assert proc.returncode == 1, proc.stderr  # below --fail-under
    result = json.loads((out / "check.json").read_text())
    assert result["teacher"].startswith("openai:")
    assert set(verdicts(result).values()) == {"does not discriminate"}
    assert result["diversity"]["answer"]["most_frequent"] == "2 3 1"
    assert result["answers"]["invalid_rate"] < 0.1
    assert "FAIL: openai:" in proc.stdout


def test_stories_from_a_file_are_a_seeded_sample_of_the_usable_ones(tmp_path):
    from onceupon.teacher.probes import file_stories

    lines = [json.dumps({"prompt": "Once upon a time,", "continuation": f"This is story {i}. " * 3 + "The fox ran home to the old red box by the tree."})
             for i in range(30)]
    lines.insert(5, json.dumps({"continuation": "Too short."}))
    path = tmp_path / "stories.jsonl"
    path.write_text("\n".join(lines) + "\n")
    clean, total = file_stories(path, 12, seed=0)
    assert total == 31 and len(clean) == 12
    assert [c.id for c in clean] == sorted(c.id for c in clean)  # file order kept
    assert clean != file_stories(path, 12, seed=1)[0] and clean == file_stories(path, 12, seed=0)[0]
    assert all(c.prompt == "Once upon a time," and len(c.sentences) == 4 for c in clean)
    assert len(file_stories(path, 100)[0]) == 30  # the short one is not usable


def test_a_custom_rubric_is_judged_on_the_overall_score(probes):
    """Criteria the variants do not name: every damaged pair counts for the normalised score."""
    from onceupon.config import CriterionConfig

    quality = CriterionConfig(name="quality", description="How good the story is.", levels={0: "bad", 1: "so-so", 2: "good"})
    rubric = Rubric.from_config(TeacherConfig(criteria=[quality]))
    answer = {"clean": "2", "injection": "2", "fragment": "0"}
    teacher = RubricTeacher(AnswerBackend(rubric, by_kind(probes, lambda kind: answer.get(kind, "1")), "test"), rubric)
    result, _, _ = check(teacher, probes, retest=0)
    assert list(result["criteria"]) == ["overall"]
    assert result["criteria"]["overall"]["pairs"] == sum(p.kind in VARIANTS for p in probes)
    assert result["verdict"]["discriminates"] and result["verdict"]["text"].startswith("PASS: test discriminates on overall")


@pytest.mark.slow  # ~40 s on 2 shared cores: 110 generations on CPU
def test_the_transformers_backend_in_process_is_checked_the_same_way(tmp_path, cli, tiny_teacher_model):
    out = tmp_path / "check"
    proc = cli(
        "check-teacher", "--out", str(out), "--n", "10", "--retest", "0",
        "--set", "teacher.backend=transformers", "--set", f"teacher.model={tiny_teacher_model}", "--set", "teacher.device=cpu",
    )
    assert proc.returncode == 1, proc.stderr  # a FAIL
    result = json.loads((out / "check.json").read_text())
    assert result["teacher"].startswith("transformers:")
    assert set(verdicts(result).values()) == {"does not discriminate"}
    assert result["speed"]["ratings"] == result["probes"]["n"]


# --------------------------------------------------------------------------- judges over HTTP
# The teacher's openai backend against fake judges on loopback (fake_judges.py), through the
# command line: each judge answers from the story it is shown, in one controlled way.
@pytest.fixture(scope="module")
def probe_file(tmp_path_factory, probes):
    path = tmp_path_factory.mktemp("probes") / "probes.jsonl"
    write_probes(path, probes)
    return path


@pytest.fixture(scope="module")
def http_judges(probes):
    return ProbeJudges(probes)


def check_over_http(cli, out, probe_file, judge, *extra, env=None):
    with judge:
        proc = cli(
            "check-teacher", "--out", str(out), "--probes", str(probe_file), "--retest", "0",
            "--set", "teacher.backend=openai", "--set", f"teacher.base_url={judge.base_url}", *extra, env=env,
        )  # fmt: skip
    assert (out / "check.json").is_file(), proc.stderr
    return proc, json.loads((out / "check.json").read_text())


def test_an_honest_judge_over_http_passes(tmp_path, cli, probe_file, http_judges):
    judge = FakeJudge(lambda story: http_judges.answer("honest", None, story))
    # one request at a time, a progress line every 0.1 s: the count moves rating by rating
    env = {"ONCEUPON_PROGRESS": "plain", "ONCEUPON_PROGRESS_INTERVAL": "0.1"}
    proc, result = check_over_http(cli, tmp_path / "check", probe_file, judge, "--set", "teacher.concurrency=1", env=env)
    assert proc.returncode == 0, proc.stderr
    assert result["verdict"]["passed"] and result["verdict"]["text"].startswith("PASS: openai:fake-judge")
    assert {r["gap"] for r in judged_rows(result["criteria"]).values()} == {1.0}
    assert result["injection"]["verdict"] == "does not raise the score"
    counts = {int(m) for m in re.findall(r"^check: (\d+)/\d+ stories", proc.stderr, re.M)}
    n = result["probes"]["n"]
    assert len({c for c in counts if 0 < c < n}) >= 3, proc.stderr
    assert any(c % 16 for c in counts if c < n), proc.stderr  # not only whole chunks


@pytest.mark.slow  # ~10 checks of ~330 ratings each over HTTP
@pytest.mark.parametrize("mode", [m for m in GAMING_JUDGES if m not in ("honest", "paper prompt only")])
def test_a_judge_built_to_game_the_check_fails_over_http(tmp_path, cli, probe_file, http_judges, mode):
    """The same judges as test_a_judge_built_to_game_the_check_fails_for_its_reason, behind a
    real OpenAI-compatible server on loopback, checked through the command line."""
    _, failing, words = GAMING_JUDGES[mode]
    proc, result = check_over_http(cli, tmp_path / "check", probe_file, FakeJudge(lambda story: http_judges.answer(mode, None, story)))
    assert proc.returncode == 1, proc.stderr
    assert failing in result["verdict"]["failing"] and words in proc.stdout


def test_an_expected_score_judge_with_tiny_gaps_fails_over_http(tmp_path, cli, probe_file, http_judges):
    """Always "1 2 3"; only its digit probabilities move, by 0.012, and always the right way
    (the issue's SmolLM2-like judge). The clean story wins every pair, by 0.036 points."""
    rubric = Rubric.from_config(TeacherConfig())

    def digits(story, answer):
        probe = http_judges.probe(None, story)
        while probe is not None and probe.kind == "injection":  # an instruction changes nothing
            probe = http_judges.by_id[probe.base]
        targets = probe.targets if probe is not None and probe.kind in VARIANTS else ()
        out = []
        for name, chosen in zip(rubric.names, answer.split()):
            p = {d: 0.15 for d in "0123"} | {chosen: 0.55}
            if name in targets:  # damaged: a little mass from the top digit to the bottom one
                p["3"], p["0"] = p["3"] - 0.012, p["0"] + 0.012
            out.append(p)
        return out

    judge = FakeJudge(lambda story: "1 2 3", logprobs=digits)
    proc, result = check_over_http(cli, tmp_path / "check", probe_file, judge, "--set", "teacher.expected_score=true")
    assert proc.returncode == 1, proc.stderr
    assert result["teacher"].endswith("|expected")
    for name in ("readability", "coherence", "creativity"):
        row = result["criteria"][name]
        assert row["discrimination"] == 1.0 and row["verdict"] == "too small a gap"
        assert row["gap"] == pytest.approx(0.036, abs=1e-6)
    assert "coherence gap +0.04 points below the minimum 0.25" in proc.stdout
    # its expected scores round to one answer for every story: that fails it too
    # nor does it give fragments the lowest answer (its criteria fail already, so their
    # ranking is not named twice)
    assert result["verdict"]["failing"] == ["readability", "coherence", "creativity", "fragments", "one answer"]


# --------------------------------------------------------------------------- before an interaction run
SHORT_RUN = ["--set", "interact.batch_size=4", "--set", "interact.mini_batch_size=4", "--set", "interact.max_new_tokens=8",
             "--set", "interact.max_steps=1"]


def test_interact_refuses_a_teacher_that_fails_its_check(tmp_path, cli, tiny_checkpoint):
    """A judge that answers "2 2 2" to everything: `interact` refuses to train with it, in
    one sentence (exit 2) before its first step, and keeps the check in the run."""
    with FakeJudge(lambda story: "2 2 2") as judge:
        run = tmp_path / "run"
        proc = cli("interact", "--from", str(tiny_checkpoint), "--out", str(run), *judged_by(judge), *SHORT_RUN)
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error")]
    assert "The teacher failed its check (storyworld probes: readability does not discriminate;" in line
    assert "--allow-failing-teacher to train anyway" in line and str(run / "teacher_check" / "check.json") in line
    assert json.loads((run / "teacher_check" / "check.json").read_text())["verdict"]["passed"] is False
    assert not (run / "state.json").exists() and not (run / "anthology.jsonl").exists()
    # the student told its stories for the second probe set: 8 tokens each are too short to
    # probe, and the run says so instead of dropping the set silently
    skipped = json.loads((run / "teacher_check" / "student" / "skipped.json").read_text())
    assert skipped["told"] == 64 and skipped["usable"] == 0 and "only 0 of the 64 stories the student told" in skipped["reason"]
    assert "teacher check (the student's own stories): not made: only 0 of the 64 stories the student told" in proc.stderr


def judged_by(judge):
    return ["--set", "teacher.backend=openai", "--set", f"teacher.base_url={judge.base_url}"]


@pytest.mark.slow  # ~60 s on 2 shared cores: two short runs, one of them after ~480 ratings over HTTP
def test_interact_allows_or_skips_the_check_when_told(tmp_path, cli, tiny_checkpoint):
    """--allow-failing-teacher checks, trains, and the run keeps the FAIL (the same --out a
    refused run left works at once); --skip-teacher-check records that no check was made."""
    import yaml

    from onceupon.teacher.before_run import run_verdict

    with FakeJudge(lambda story: "2 2 2") as judge:
        run = tmp_path / "run"
        assert cli("interact", "--from", str(tiny_checkpoint), "--out", str(run), *judged_by(judge), *SHORT_RUN).returncode == 2
        requests = judge.requests
        proc = cli("interact", "--from", str(tiny_checkpoint), "--out", str(run), "--allow-failing-teacher", *judged_by(judge), *SHORT_RUN)
        assert proc.returncode == 0, proc.stderr
        assert "teacher check: FAIL: openai:fake-judge" in proc.stderr
        assert judge.requests > requests + 400  # the check's ~480 ratings again, then the step's 4 stories
    assert yaml.safe_load((run / "config.yaml").read_text())["interact"]["teacher_check"] == "allow"
    assert run_verdict(run)["status"] == "failed" and (run / "anthology.jsonl").is_file()

    skipped = tmp_path / "skipped"
    proc = cli("interact", "--from", str(tiny_checkpoint), "--out", str(skipped), "--skip-teacher-check", *SHORT_RUN)
    assert proc.returncode == 0, proc.stderr
    assert run_verdict(skipped) | {"path": None} == {
        "status": "skipped", "text": "teacher check skipped: --skip-teacher-check (interact.teacher_check: skip)",
        "reasons": "", "teacher": None, "path": None,
    }
    assert not (skipped / "teacher_check" / "check.json").exists()
    # A resumed run keeps its check: the flags are for new runs.
    proc = cli("interact", "--resume", str(skipped), "--allow-failing-teacher")
    assert proc.returncode == 2 and "apply to new runs only" in proc.stderr


def test_a_run_checks_its_teacher_on_the_students_own_stories_too(tmp_path):
    """Before its first step a run checks the teacher on storyworld stories told after its
    prompts and on stories its student told; with teacher_check: require a FAIL on either set
    stops it, and the run's verdict names each set."""
    from onceupon.config import ExperimentConfig
    from onceupon.errors import UserError
    from onceupon.teacher.before_run import check_before_run, run_verdict
    from onceupon.teacher.factory import build_teacher

    cfg = ExperimentConfig()
    cfg.interact.prompt = "Once upon a time, in a small town,"
    rng = random.Random(0)
    words = "the a boy girl went was to and he she big dog house ran".split()
    # what a barely trained student tells: sentences of frequent words, no story to damage
    told = [(cfg.interact.prompt, " ".join(" ".join(rng.choice(words) for _ in range(7)) + "." for _ in range(5))) for _ in range(30)]
    with build_teacher(cfg.teacher) as teacher:
        with pytest.raises(UserError) as refused:
            check_before_run(cfg, teacher, tmp_path / "run", [cfg.interact.prompt], lambda: told)
    assert "the student's own stories:" in str(refused.value) and "teacher_check/student/check.json" in str(refused.value)
    verdict = run_verdict(tmp_path / "run")
    assert verdict["sets"]["storyworld"]["status"] == "passed" and verdict["sets"]["student"]["status"] == "failed"
    assert verdict["status"] == "failed" and verdict["text"].startswith("storyworld probes: PASS")
    probes = read_probes(tmp_path / "run" / "teacher_check" / "probes.jsonl")
    assert {p.prompt for p in probes} == {cfg.interact.prompt}  # the run's prompt, not the paper's
    student = read_probes(tmp_path / "run" / "teacher_check" / "student" / "probes.jsonl")
    assert {p.story for p in student} <= {f"f{i:06d}" for i in range(30)} and len({p.story for p in student}) == 30


def test_probes_of_a_students_cut_off_stories_keep_the_cut_last_and_tell_honest_from_gaming():
    """Stories cut off by the length limit, as a student's are: every copy but the fragment
    still ends on the same unfinished sentence, and the honest judge passes on them while
    judges built to game the check fail, as on storyworld's."""
    from onceupon.teacher.probes import unfinished, usable_stories

    told = []
    for clean in storyworld_stories(24, seed=5):
        words = clean.text.split()[:48]  # about 60 tokens, cut wherever that falls
        told.append((clean.prompt, " ".join(words)))
    stories = [c for c in usable_stories(told, 24) if c.cut_off]
    assert len(stories) >= 12
    probes = build_probes(stories, "3 3 3", seed=0)
    for p in probes:  # no copy gains a finished ending the story it comes from lacks
        assert unfinished(p.continuation), (p.id, p.continuation[-60:])
        if p.kind in ("shuffled", "spliced", "swapped", "repeated", "filler") or (p.kind == "injection" and p.base == p.story):
            cut = next(s for s in stories if s.id == p.story).sentences[-1]
            assert p.continuation.endswith(cut), (p.id, p.continuation[-60:])
    assert run_check(probes, judge(probes, "honest"), kinds=False, retest=0)["verdict"]["passed"]
    for mode in ("ceiling", "halo", "no spread", "artefacts"):
        result = run_check(probes, judge(probes, mode), kinds=False, retest=0)
        assert GAMING_JUDGES[mode][1] in result["verdict"]["failing"], (mode, result["verdict"]["text"])
