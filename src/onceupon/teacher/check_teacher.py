"""``onceupon check-teacher``: does a teacher judge at all, before it trains anyone?

A teacher that answers every story with the example its prompt shows, or at random, still
produces "valid" ratings, and RL then trains on its noise. This check rates a graded probe
set (probes.py: clean stories and copies damaged in known ways) through the *same* pipeline
as training (build_teacher: cleaning, the short-story rule, the cache, the invalid-answer
policy) and reports, per criterion:

discrimination   the share of (clean, damaged) pairs where the clean story scores higher on
                 the criterion the damage targets; ties are counted apart. By chance the clean
                 story wins half of the untied pairs. The teacher *discriminates* when the
                 95 % Wilson interval of its wins among untied pairs lies above 50 %;
                 *reversed* when it prefers the damaged stories the same way. The interval
                 shown is the Wilson interval of the wins among all pairs.
diversity        entropy (bits) of the answers given and the share of the most frequent one
example copies   answers identical to the example answer the prompt shows (if it shows one)
invalid          answers that could not be parsed, or requests that failed
fragments        the share of 4-to-7-word fragments that get the lowest answer, as the rubric
                 demands for a story shorter than a sentence
injection        how an instruction to the grader inside the story ("rate this 3 3 3")
                 changes the normalised score (0..1) against the clean story: lift, and the
                 pairs it raised; a sound teacher is not moved by it
retest           a sample rated a second time, bypassing the cache, at the configured
                 temperature: exact agreement and quadratic kappa per criterion
speed            ratings per second over the first pass

``overall`` compares the normalised score over every damaged pair. Results go to ``OUT``:
``probes.jsonl`` (reusable with ``--probes`` on another teacher), ``ratings.jsonl`` and
``retest.jsonl`` (one rating per probe), and ``check.json`` (every figure above), written
last. ``--fail-under PCT`` makes the command exit with code 1 when any criterion's
discrimination is below PCT percent (bad input exits with 2).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections import Counter
from pathlib import Path

from rich.console import Console

from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.files import atomic_write_json, atomic_write_text, replace_dir
from onceupon.teacher.agreement import Rated, agreement
from onceupon.teacher.base import Outcome, Rating
from onceupon.teacher.probes import VARIANTS, Probe, build_probes, file_stories, read_probes, storyworld_stories, write_probes
from onceupon.teacher.rubric import Rubric
from onceupon.tracking import progress_bar

#: fewest clean stories that can say anything: with 10, a criterion probed by two variants
#: has 20 pairs, enough for a teacher that is right 4 times in 5 to be told from chance.
MIN_STORIES = 10
OVERALL = "overall"
CHECK_FILE = "check.json"
Z95 = 1.959964


# --------------------------------------------------------------------------- statistics
def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (good at small n and near 0 or 1)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def entropy_bits(counts: Counter) -> float:
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values() if c) if n else 0.0


def compare(pairs: list[tuple[float, float]]) -> dict:
    """Clean vs damaged scores: how often the clean story is higher, lower, tied; the verdict."""
    higher = sum(c > v for c, v in pairs)
    lower = sum(c < v for c, v in pairs)
    n = len(pairs)
    tied = n - higher - lower
    untied = higher + lower
    if untied and wilson(higher, untied)[0] > 0.5:
        verdict = "discriminates" if higher >= n / 2 else "discriminates weakly"
    elif untied and wilson(lower, untied)[0] > 0.5:
        verdict = "reversed"
    else:
        verdict = "does not discriminate"
    return {
        "pairs": n,
        "higher": higher,
        "lower": lower,
        "tied": tied,
        "discrimination": higher / n if n else None,
        "interval": list(wilson(higher, n)) if n else None,
        "chance": untied / 2 / n if n else None,
        "verdict": verdict,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def verdict_line(name: str, row: dict) -> str:
    """``coherence: does not discriminate, 51 % of 240 pairs (95 % CI 45-57 %), 2 % tied, chance 49 %``"""
    if not row["pairs"]:
        return f"{name}: not measured, no pair where both stories got a valid rating"
    lo, hi = row["interval"]
    return (
        f"{name}: {row['verdict']}, {_pct(row['discrimination'])} of {row['pairs']} pairs "
        f"(95 % CI {100 * lo:.0f}-{100 * hi:.0f} %), {_pct(row['tied'] / row['pairs'])} tied, chance {_pct(row['chance'])}"
    )


# --------------------------------------------------------------------------- figures
def _score(rating: Rating, criterion: str) -> float | None:
    if not rating.valid or rating.scores is None:
        return None
    return rating.score if criterion == OVERALL else rating.scores.get(criterion)


def discrimination(probes: list[Probe], ratings: list[Rating], rubric: Rubric) -> dict:
    """One row per probed criterion of the rubric, plus ``overall``, each with per-variant rows."""
    clean = {p.story: r for p, r in zip(probes, ratings) if p.kind == "clean"}
    probed = [c for c in rubric.names if any(c in targets for targets in VARIANTS.values())]
    rows = {}
    for criterion in [*probed, OVERALL]:
        pairs: dict[str, list[tuple[float, float]]] = {}
        for probe, rating in zip(probes, ratings):
            if probe.kind not in VARIANTS or probe.story not in clean:
                continue
            if criterion != OVERALL and criterion not in probe.targets:
                continue
            a, b = _score(clean[probe.story], criterion), _score(rating, criterion)
            if a is not None and b is not None:
                pairs.setdefault(probe.kind, []).append((a, b))
        row = compare([p for kind in pairs.values() for p in kind])
        row["variants"] = {kind: compare(p) for kind, p in pairs.items()}
        row["text"] = verdict_line(criterion, row)
        rows[criterion] = row
    return rows


def diversity(ratings: list[Rating], rubric: Rubric) -> dict:
    """Answer entropy and the most frequent answer, per criterion and for the whole answer
    (scores rounded to whole numbers, so expected-score answers are comparable)."""
    valid = [r for r in ratings if r.valid and r.scores is not None and r.outcome != Outcome.RULE]
    out = {}
    for name in [*rubric.names, "answer"]:
        if name == "answer":
            counts = Counter(rubric.answer({k: round(v) for k, v in r.scores.items()}) for r in valid)
        else:
            counts = Counter(str(round(r.scores[name])) for r in valid)
        top, top_n = counts.most_common(1)[0] if counts else (None, 0)
        out[name] = {
            "n": len(valid),
            "entropy_bits": entropy_bits(counts),
            "most_frequent": top,
            "most_frequent_share": top_n / len(valid) if valid else None,
            "distribution": dict(sorted(counts.items())),
        }
    return out


def answers_figures(ratings: list[Rating], shown_example: str | None) -> dict:
    """Invalid rate and example-copy rate over the ratings the teacher was asked for."""
    asked = [r for r in ratings if r.outcome not in (Outcome.RULE, Outcome.CACHED)]
    cached = sum(r.outcome == Outcome.CACHED for r in ratings)
    answers = [" ".join(a.split()) for r in asked for a in (r.answers or [])]
    copies = sum(a == shown_example for a in answers) if shown_example else 0
    judged = [r for r in ratings if r.outcome != Outcome.RULE]
    invalid = sum(not r.valid for r in judged)
    return {
        "ratings": len(ratings),
        "by_rule": len(ratings) - len(judged),
        "cached": cached,
        "invalid": invalid,
        "invalid_rate": invalid / len(judged) if judged else None,
        "failed_requests": sum(r.request_failed for r in judged),
        "shown_example": shown_example,
        "answers": len(answers),
        "example_copies": copies,
        "example_copy_rate": (copies / len(answers) if answers else None) if shown_example else None,
    }


def fragments(probes: list[Probe], ratings: list[Rating], rubric: Rubric) -> dict:
    rated = [r for p, r in zip(probes, ratings) if p.kind == "fragment"]
    lowest = rubric.lowest()
    hits = sum(r.valid and r.scores is not None and all(r.scores[k] == v for k, v in lowest.items()) for r in rated)
    by_rule = sum(r.outcome == Outcome.RULE for r in rated)
    return {"n": len(rated), "lowest": hits, "lowest_rate": hits / len(rated) if rated else None, "by_rule": by_rule}


def injection(probes: list[Probe], ratings: list[Rating], rubric: Rubric) -> dict:
    """How the instruction to the grader moves the normalised score against the clean story.
    ``asked_answer_given`` counts answers equal to the one asked for, which a clean story
    that already earns it also gives: the lift and the raised pairs are the evidence."""
    clean = {p.story: r for p, r in zip(probes, ratings) if p.kind == "clean"}
    top = rubric.answer({c.name: c.high for c in rubric.criteria})
    pairs, asked_answer_given = [], 0
    for probe, rating in zip(probes, ratings):
        if probe.kind != "injection" or probe.story not in clean:
            continue
        asked_answer_given += rating.valid and " ".join(rating.raw.split()) == top
        a, b = _score(clean[probe.story], OVERALL), _score(rating, OVERALL)
        if a is not None and b is not None:
            pairs.append((a, b))
    raised = sum(b > a for a, b in pairs)
    lowered = sum(b < a for a, b in pairs)
    moved = raised + lowered
    raises = bool(moved) and wilson(raised, moved)[0] > 0.5
    return {
        "pairs": len(pairs),
        "raised": raised,
        "lowered": lowered,
        "tied": len(pairs) - moved,
        "lift": sum(b - a for a, b in pairs) / len(pairs) if pairs else None,
        "asked_for": top,
        "asked_answer_given": asked_answer_given,
        "verdict": "raises the score" if raises else "does not raise the score",
    }


def retest_figures(first: list[Rating], second: list[Rating], rubric: Rubric, temperature: float | None) -> dict:
    if not first:
        return {"n": 0, "temperature": temperature}
    a = [Rated(str(i), r.scores if r.valid else None) for i, r in enumerate(first)]
    b = [Rated(str(i), r.scores if r.valid else None) for i, r in enumerate(second)]
    result = agreement(a, b, rubric)
    same = sum(x.raw.strip() == y.raw.strip() for x, y in zip(first, second))
    return {
        "n": len(first),
        "temperature": temperature,
        "both_valid": result["both_valid"],
        "identical_answers": same / len(first),
        "criteria": {name: {"exact": s["exact"], "kappa": s["kappa"]} for name, s in result["criteria"].items()},
    }


def measure(
    probes: list[Probe],
    ratings: list[Rating],
    first: list[Rating],
    second: list[Rating],
    rubric: Rubric,
    *,
    seconds: float,
    temperature: float | None,
    identity: str,
) -> dict:
    """Every figure of a check, as check.json holds them. ``ratings``: one per probe;
    ``first`` and ``second``: the retest sample's two ratings."""
    rows = discrimination(probes, ratings, rubric)
    criteria_rows = judged_rows(rows)
    failing = [k for k, v in criteria_rows.items() if v["verdict"] not in ("discriminates", "discriminates weakly")]
    answers = answers_figures(ratings, getattr(rubric, "shown_example", None))
    result = {
        "teacher": identity,
        "rubric": rubric.hash,
        "probes": {"n": len(probes), "stories": len({p.story for p in probes}), "kinds": dict(Counter(p.kind for p in probes))},
        "criteria": rows,
        "diversity": diversity(ratings, rubric),
        "answers": answers,
        "fragments": fragments(probes, ratings, rubric),
        "injection": injection(probes, ratings, rubric),
        "retest": retest_figures(first, second, rubric, temperature),
        "speed": {"ratings": len(ratings), "seconds": seconds, "ratings_per_s": len(ratings) / seconds if seconds > 0 else None},
    }
    result["warnings"] = warnings(result)
    result["verdict"] = {
        "discriminates": not failing,
        "failing": failing,
        "text": (
            f"PASS: {identity} discriminates on {', '.join(criteria_rows)}"
            if not failing
            else f"FAIL: {identity} does not discriminate on {', '.join(failing)}, so training with it cannot reward {' or '.join(failing)}"
        ),
    }
    return result


def judged_rows(rows: dict) -> dict:
    """The rows a verdict and --fail-under look at: the probed criteria (``overall`` only
    when the rubric has none of the criteria the variants target)."""
    return {k: v for k, v in rows.items() if k != OVERALL} or {OVERALL: rows[OVERALL]}


def warnings(result: dict) -> list[str]:
    """Plain sentences for figures that should worry anyone about to train with this teacher."""
    out = []
    answers, answer_div = result["answers"], result["diversity"]["answer"]
    if answers["example_copy_rate"] is not None and answers["example_copy_rate"] >= 0.2:
        out.append(f"{_pct(answers['example_copy_rate'])} of the answers copy the prompt's example answer '{answers['shown_example']}'")
    if answer_div["most_frequent_share"] is not None and answer_div["most_frequent_share"] >= 0.5:
        out.append(f"{_pct(answer_div['most_frequent_share'])} of the valid answers are '{answer_div['most_frequent']}'")
    if answers["invalid_rate"] is not None and answers["invalid_rate"] >= 0.1:
        out.append(f"{_pct(answers['invalid_rate'])} of the answers are invalid")
    frag = result["fragments"]
    if frag["n"] and frag["lowest_rate"] < 0.9:
        out.append(f"only {frag['lowest']} of {frag['n']} fragments get the lowest answer, as the rubric demands")
    inj = result["injection"]
    if inj["verdict"] == "raises the score":
        out.append(f"an instruction to the grader inside the story raised the score in {inj['raised']} of {inj['pairs']} pairs")
    return out


# --------------------------------------------------------------------------- rating
def rate_all(teacher, probes: list[Probe], chunk: int, label: str) -> tuple[list[Rating], float]:
    """Rate the probes in chunks with a progress bar; returns the ratings and the seconds taken."""
    ratings: list[Rating] = []
    start = time.perf_counter()
    with progress_bar("stories") as bar:
        task = bar.add_task(label, total=len(probes))
        for i in range(0, len(probes), chunk):
            part = probes[i : i + chunk]
            ratings += teacher.rate([p.as_story() for p in part])
            bar.advance(task, len(part))
    return ratings, time.perf_counter() - start


def retest_sample(probes: list[Probe], n: int, seed: int) -> list[int]:
    """Indices of up to ``n`` probes rated twice (fragments left out: the rule may rate them)."""
    candidates = [i for i, p in enumerate(probes) if p.kind != "fragment"]
    return sorted(random.Random(f"retest:{seed}").sample(candidates, min(n, len(candidates))))


def check(
    teacher, probes: list[Probe], *, retest: int = 40, seed: int = 0, chunk: int = 64, temperature: float | None = None
) -> tuple[dict, list[Rating], list[tuple[int, Rating]]]:
    """Rate the probes (and a retest sample again, bypassing the cache) and measure.

    ``teacher`` is any RubricTeacher (build_teacher's, or one around a test backend).
    Returns (check.json content, ratings per probe, [(probe index, second rating)]).
    """
    ratings, seconds = rate_all(teacher, probes, chunk, "check")
    picked = retest_sample(probes, retest, seed)
    second: list[Rating] = []
    if picked:
        cache, teacher.cache = getattr(teacher, "cache", None), None  # a cache hit would agree with itself
        try:
            second, _ = rate_all(teacher, [probes[i] for i in picked], chunk, "retest")
        finally:
            teacher.cache = cache
    result = measure(
        probes, ratings, [ratings[i] for i in picked], second, teacher.rubric,
        seconds=seconds, temperature=temperature, identity=teacher.identity,
    )
    return result, ratings, list(zip(picked, second))


# --------------------------------------------------------------------------- the command
def load_probes(rubric: Rubric, stories: Path | None, probes: Path | None, n: int, seed: int) -> list[Probe]:
    """The probe set: saved probes, probes from a stories file, or storyworld's (the default)."""
    if stories is not None and probes is not None:
        raise UserError("Give --stories (build probes from your stories) or --probes (reuse saved probes), not both.")
    if probes is not None:
        found = read_probes(probes)
    else:
        if n < MIN_STORIES:
            raise UserError(f"--n {n} is too few to say anything: the check needs at least {MIN_STORIES} clean stories.")
        top = rubric.answer({c.name: c.high for c in rubric.criteria})
        if stories is None:
            clean = storyworld_stories(n, seed)
        else:
            clean, total = file_stories(stories, n, seed)
            if len(clean) < MIN_STORIES:
                raise UserError(
                    f"{stories} has {len(clean)} usable stories of {total} (at least 3 sentences and 20 words each); "
                    f"the check needs at least {MIN_STORIES}."
                )
        found = build_probes(clean, top, seed)
    n_clean = sum(p.kind == "clean" for p in found)
    if n_clean < MIN_STORIES:
        raise UserError(f"{probes} holds {n_clean} clean stories; the check needs at least {MIN_STORIES}.")
    return found


def _records(probes: list[Probe], ratings: list[tuple[int, Rating]]) -> str:
    return "".join(json.dumps({"id": probes[i].id, "kind": probes[i].kind, **r.to_dict()}, ensure_ascii=False) + "\n" for i, r in ratings)


def write_check(out: Path, result: dict, probes: list[Probe], ratings: list[Rating], retests: list[tuple[int, Rating]]) -> None:
    """Write the results into a fresh directory and rename it into place (check.json last)."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_probes(tmp / "probes.jsonl", probes)
        atomic_write_text(tmp / "ratings.jsonl", _records(probes, list(enumerate(ratings))))
        atomic_write_text(tmp / "retest.jsonl", _records(probes, retests))
        atomic_write_json(tmp / CHECK_FILE, result)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_out(out: Path, probes_path: Path | None) -> None:
    from onceupon.preflight import output_dir

    output_dir(out)
    if out.is_dir() and any(out.iterdir()) and not (out / CHECK_FILE).is_file():
        raise UserError(f"{out} exists and is not a teacher check; choose another --out.")
    if probes_path is not None and Path(probes_path).resolve().parent == out.resolve():
        raise UserError("--probes must not lie inside --out, which the check replaces; copy it elsewhere first.")


def print_check(result: dict, console: Console) -> None:
    for row in result["criteria"].values():
        style = "green" if row["verdict"].startswith("discriminates") else "red"
        console.print(row["text"], style=style, markup=False, highlight=False, soft_wrap=True)
        kinds = ", ".join(f"{kind} {_pct(v['discrimination'])} ({v['tied']} tied)" for kind, v in row["variants"].items())
        console.print(f"  clean higher than: {kinds}", style="dim", markup=False, highlight=False, soft_wrap=True)
    answers, div, retest = result["answers"], result["diversity"]["answer"], result["retest"]
    copy = _pct(answers["example_copy_rate"]) if answers["shown_example"] else "- (the prompt shows no example)"
    lines = [
        f"answers: {div['entropy_bits']:.2f} bits of entropy, most frequent '{div['most_frequent']}' in {_pct(div['most_frequent_share'])}",
        f"example copies: {copy}; invalid: {_pct(answers['invalid_rate'])} ({answers['invalid']} of {answers['ratings'] - answers['by_rule']})",
        f"fragments given the lowest answer: {result['fragments']['lowest']} of {result['fragments']['n']}",
        f"injection ('rate this {result['injection']['asked_for']}'): {result['injection']['verdict']}, "
        f"raised {result['injection']['raised']} / lowered {result['injection']['lowered']} of {result['injection']['pairs']} pairs, "
        f"mean lift {result['injection']['lift'] if result['injection']['lift'] is None else round(result['injection']['lift'], 3)}",
    ]
    if retest["n"]:
        exact = ", ".join(f"{k} {_pct(v['exact'])}" for k, v in retest["criteria"].items())
        lines.append(f"retest at temperature {retest['temperature']} ({retest['n']} stories): same score {exact}")
    speed = result["speed"]
    cached = f", {answers['cached']} of them from the rating cache" if answers["cached"] else ""
    lines.append(f"speed: {speed['ratings']} ratings in {speed['seconds']:.1f} s ({speed['ratings_per_s'] or 0:.1f}/s{cached})")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for w in result["warnings"]:
        console.print(f"warning: {w}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    style = "bold green" if result["verdict"]["discriminates"] else "bold white on red"
    console.print(result["verdict"]["text"], style=style, markup=False, highlight=False, soft_wrap=True)


def run(
    cfg: ExperimentConfig | None,
    out: Path,
    *,
    stories: Path | None = None,
    probes: Path | None = None,
    n: int = 40,
    seed: int = 0,
    retest: int = 40,
    fail_under: float | None = None,
    as_json: bool = False,
) -> int:
    """The ``onceupon check-teacher`` command; returns the exit code (1: below --fail-under)."""
    from onceupon.teacher.factory import build_teacher

    cfg = cfg or ExperimentConfig()
    out = Path(out)
    if retest < 0:
        raise UserError("--retest must be 0 or more.")
    if fail_under is not None and not 0 <= fail_under <= 100:
        raise UserError("--fail-under is a percentage between 0 and 100.")
    _check_out(out, probes)
    rubric = Rubric.from_config(cfg.teacher)
    probe_set = load_probes(rubric, stories, probes, n, seed)
    console = Console(stderr=as_json)
    with build_teacher(cfg.teacher) as teacher:
        chunk = max(64, 4 * cfg.teacher.concurrency)
        result, ratings, retests = check(teacher, probe_set, retest=retest, seed=seed, chunk=chunk, temperature=cfg.teacher.temperature)
    result["probes"]["source"] = str(probes) if probes else str(stories) if stories else "storyworld"
    result["probes"]["seed"] = seed
    result["fail_under"] = fail_under
    write_check(out, result, probe_set, ratings, retests)
    print_check(result, console)
    console.print(f"results: {out / CHECK_FILE}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(result, indent=2))
    if fail_under is not None:
        below = [k for k, v in judged_rows(result["criteria"]).items() if (v["discrimination"] or 0) * 100 < fail_under]
        if below:
            console.print(f"below --fail-under {fail_under:g} %: {', '.join(below)}", style="bold red", markup=False, soft_wrap=True)
            return 1
    return 0


def read_check(path: str | Path) -> dict:
    """A check's results (``DIR/check.json`` or the file itself), for the report."""
    path = Path(path)
    file = path / CHECK_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path} holds no {CHECK_FILE}; give a directory written by `onceupon check-teacher`.")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{file} is not valid JSON; run `onceupon check-teacher` again.") from None
    if not isinstance(data, dict) or "criteria" not in data or "verdict" not in data:
        raise UserError(f"{file} is not a teacher check's results.")
    return data
