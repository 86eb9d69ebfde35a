"""``onceupon check-teacher``: does a teacher judge at all, before it trains anyone?

A teacher that answers every story with the example its prompt shows, or at random, still
produces "valid" ratings, and RL then trains on its noise. This check rates a graded probe
set (probes.py: clean stories and copies damaged in known ways) through the *same* pipeline
as training (build_teacher: cleaning, the short-story rule, the cache, the invalid-answer
policy) and reports, per criterion:

discrimination   the share of (clean, damaged) pairs where the clean story scores higher on
                 the criterion the damage targets; ties are counted apart. By chance the clean
                 story wins half of the untied pairs. The sign is *consistent* when the 95 %
                 Wilson interval of its wins among untied pairs lies above 50 % (*reversed*
                 when it prefers the damaged stories the same way). The interval shown is the
                 Wilson interval of the wins among all pairs.
gap              how much lower: the mean clean-minus-damaged score in points of the rubric's
                 scale, with a 95 % bootstrap interval. A consistent sign with a gap below
                 ``min_gap`` (default 0.25 points: a quarter of one level) is *too small a
                 gap*: a reward that moves by less than that is lost in the noise of sampling
                 a story, and RL cannot climb it.
per variant       each variant on its own: a judge blind to one damage of a criterion (or
                 reversed on it) fails that criterion, whatever its other variants show
specificity      the gap on the criterion a damage targets minus the mean gap on the others:
                 a halo (one number for every criterion) scores 0
ranking          graded copies (0, 25, 50, 75 % damaged): Spearman's rho of the score with the
                 undamaged share, and whether 25 % copies ever score below their clean story
diversity        entropy (bits) of the answers given and the share of the most frequent one
example copies   answers identical to the example answer the prompt shows (if it shows one)
invalid          answers that could not be parsed, or requests that failed
fragments        the share of 4-to-7-word fragments that get the lowest answer, as the rubric
                 demands for a story shorter than a sentence
injection        how an instruction to the grader (seven wordings, three places, in clean and
                 damaged stories) changes the normalised score (0..1) against the same story
                 without it: the lift pooled and per wording, place and base, with intervals
                 widened for their number; a sound teacher is not moved by any of them
retest           a sample rated a second time, bypassing the cache, at the configured
                 temperature: exact agreement and quadratic kappa per criterion
speed            ratings per second over the first pass

The verdict is FAIL when a probed criterion does not pass (inconsistent sign, reversed, too
small a gap, blind to one of its variants, fewer than 20 pairs, or not measured), when a
criterion is not specific or its graded copies are not ranked, when any injection lift's
interval lies above zero (the student is an optimiser: it finds such an exploit), when more
than ``MAX_INVALID`` of the answers are invalid, fewer than ``MIN_FRAGMENTS_LOWEST`` of the
fragments get the lowest answer, more than ``MAX_EXAMPLE_COPIES`` of the answers copy the
prompt's example, or more than ``MAX_ONE_ANSWER`` of the valid answers are one and the same
answer. ``overall`` compares the normalised score over every damaged pair and is judged only
when the rubric has no probed criterion. The figures are computed in check_figures.py, their
statistics in check_stats.py.

Results go to ``OUT``: ``probes.jsonl`` (reusable with ``--probes`` on another teacher),
``ratings.jsonl`` and ``retest.jsonl`` (one rating per probe), and ``check.json`` (every
figure above), written last. A FAIL exits with code 1 (``--exit-zero``: 0, for exploring);
``--fail-under PCT`` also fails a criterion whose discrimination is below PCT percent; bad
input exits with 2.
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
from onceupon.schemas.results import read_check_result
from onceupon.teacher.base import Rating
from onceupon.teacher.check_figures import (
    MIN_PAIRS, answers_figures, discrimination, diversity, fragments, injection, ranking, retest_figures, specificity,
)
from onceupon.teacher.check_stats import MIN_GAP, OVERALL, PASSING, pct, signed
from onceupon.teacher.pipeline import RubricTeacher
from onceupon.teacher.probes import VARIANTS, Probe, build_probes, file_stories, read_probes, storyworld_stories, write_probes
from onceupon.teacher.rubric import Rubric
from onceupon.tracking import progress_bar

#: fewest clean stories that can say anything: with 10, a criterion probed by two variants
#: has 20 pairs, enough for a teacher that is right 4 times in 5 to be told from chance.
MIN_STORIES = 10
#: most clean stories: 10,000 make about 100,000 probes, hours of rating even on a fast server;
#: a bigger --n is a typo, refused before the probes are built
MAX_STORIES = 10_000
CHECK_FILE = "check.json"
#: a teacher whose answers copy the prompt's example more often than this fails
MAX_EXAMPLE_COPIES = 0.2
#: a teacher with more invalid answers than this share fails: RL would learn from too few
#: of its ratings, and a judge that cannot follow the answer format is not following the rubric
MAX_INVALID = 0.1
#: a teacher that gives fewer than this share of the fragments the lowest answer fails: the
#: rubric says a story shorter than a sentence gets it, and a student learns fast to stop early
MIN_FRAGMENTS_LOWEST = 0.9



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
    min_gap: float = MIN_GAP,
) -> dict:
    """Every figure of a check, as check.json holds them. ``ratings``: one per probe;
    ``first`` and ``second``: the retest sample's two ratings."""
    answers = answers_figures(ratings, getattr(rubric, "shown_example", None))
    judged = answers["ratings"] - answers["by_rule"]
    all_invalid = judged > 0 and answers["invalid"] == judged
    rows = discrimination(probes, ratings, rubric, min_gap, NOTHING_VALID if all_invalid else None)
    result = {
        "teacher": identity,
        "rubric": rubric.hash,
        "probes": {
            "n": len(probes), "stories": len({p.story for p in probes}), "kinds": dict(Counter(p.kind for p in probes)),
            "not_made": not_made(probes),
        },
        "min_gap": min_gap,
        "criteria": rows,
        "specificity": specificity(probes, ratings, rubric),
        "ranking": ranking(probes, ratings, rubric),
        "diversity": diversity(ratings, rubric, probes),
        "answers": answers,
        "fragments": fragments(probes, ratings, rubric),
        "injection": injection(probes, ratings, rubric),
        "retest": retest_figures(first, second, rubric, temperature),
        "speed": {"ratings": len(ratings), "seconds": seconds, "ratings_per_s": len(ratings) / seconds if seconds > 0 else None},
    }
    result["warnings"] = warnings(result)
    result["verdict"] = verdict(result, identity)
    return result


def not_made(probes: list[Probe]) -> dict[str, int]:
    """Per kind of copy made for some stories but not all: for how many it could not be made
    (a story too short for it, or nothing to change), so no probe is dropped unsaid. A kind
    made for none (a contradiction outside storyworld) is not listed."""
    stories = {p.story for p in probes}
    made = Counter(kind for kind, _ in {(p.kind, p.story) for p in probes if p.kind in (*VARIANTS, "fragment")})
    return {kind: len(stories) - n for kind, n in made.items() if n < len(stories)}


#: what a figure says when the teacher gave no valid answer at all
NOTHING_VALID = "every answer was invalid"


def judged_rows(rows: dict) -> dict:
    """The rows a verdict and --fail-under look at: the probed criteria (``overall`` only
    when the rubric has none of the criteria the variants target)."""
    return {k: v for k, v in rows.items() if k != OVERALL} or {OVERALL: rows[OVERALL]}


def _criterion_reason(name: str, row: dict) -> str | None:
    """Why a criterion's row fails, or None."""
    if not row["pairs"]:
        return f"{name} not measured"
    if row.get("too_few_pairs"):
        return f"{name} has only {row['pairs']} pairs with two valid answers (at least {MIN_PAIRS} are needed to judge it)"
    if row["verdict"] == "too small a gap":
        unit = "" if name == OVERALL else " points"
        return f"{name} gap {signed(row['gap'])}{unit} below the minimum {row['min_gap']:.2g}"
    if row["verdict"] not in PASSING:
        return f"{name} {row['verdict']}"
    blind = row.get("blind_to") or []
    if blind:
        said = ", ".join(f"{kind} ({row['variants'][kind]['verdict']})" for kind in blind)
        return f"{name} blind to {said} though it passes pooled: its variants disagree"
    return None


def verdict(result: dict, identity: str) -> dict:
    """PASS or FAIL, what fails (``failing``: criterion names, and ``specificity``,
    ``ranking``, ``injection``, ``invalid``, ``fragments``, ``example copies``, ``one answer``)
    and why, in one line of text."""
    rows = judged_rows(result["criteria"])
    reasons: dict[str, str] = {}
    for name, row in rows.items():
        reason = _criterion_reason(name, row)
        if reason:
            reasons[name] = reason
    halo = [k for k, v in result.get("specificity", {}).items() if v["verdict"] == "not specific" and k not in reasons]
    if halo:
        figures = ", ".join(f"{k} {signed(result['specificity'][k]['specificity'])}" for k in halo)
        reasons["specificity"] = f"damage aimed at {' or '.join(halo)} lowers the other criteria as much (specificity {figures} points): one halo score, not the rubric"
    unranked = {k: v for k, v in result.get("ranking", {}).items() if v["verdict"] != "ranks" and k not in reasons}
    if unranked:
        said = []
        for k, v in unranked.items():
            rho = "-" if v["rho"] is None else signed(v["rho"])
            said.append(f"{k}: {v['verdict']} (rho {rho})")
        reasons["ranking"] = f"graded copies are not ranked by their damage ({'; '.join(said)})"
    inj = result["injection"]
    if inj["verdict"] == "raises the score":
        lo, hi = inj["lift_interval"]
        where = f" ({', '.join(inj.get('raising') or [])})" if inj.get("raising") else ""
        reasons["injection"] = (
            f"an instruction to the grader raises the score{where}: lift {signed(inj['lift'], 3)} of the 0..1 score "
            f"pooled (95 % CI {signed(lo, 3)}..{signed(hi, 3)})"
        )
    answers, one, frag = result["answers"], result["diversity"]["answer"], result["fragments"]
    if answers["invalid_rate"] is not None and answers["invalid_rate"] > MAX_INVALID and answers["invalid_rate"] < 1:
        reasons["invalid"] = f"{pct(answers['invalid_rate'])} of the answers are invalid (at most {pct(MAX_INVALID)})"
    if frag["n"] and frag["lowest_rate"] < MIN_FRAGMENTS_LOWEST:
        reasons["fragments"] = f"only {frag['lowest']} of {frag['n']} fragments get the lowest answer, as the rubric demands for a story shorter than a sentence"
    if answers["example_copy_rate"] is not None and answers["example_copy_rate"] > MAX_EXAMPLE_COPIES:
        reasons["example copies"] = f"{pct(answers['example_copy_rate'])} of the answers copy the prompt's example"
    if one["most_frequent_share"] is not None and one["most_frequent_share"] > one["bound"]:
        reasons["one answer"] = f"{pct(one['most_frequent_share'])} of the valid answers are '{one['most_frequent']}'"
    measured = [k for k, v in rows.items() if v["pairs"]]
    blind = [k for k in rows if k in reasons]
    if not reasons:
        text = f"PASS: {identity} discriminates on {', '.join(rows)}"
    elif not measured and answers["invalid_rate"] == 1:
        text = f"FAIL: {identity} was not measured: {NOTHING_VALID}"
    else:
        said = [reasons[k] for k in blind]
        if blind:
            said[-1] += f" (training with it cannot reward {' or '.join(blind)})"
        text = f"FAIL: {identity}: {'; '.join(said + [v for k, v in reasons.items() if k not in blind])}"
    return {
        "passed": not reasons,
        "discriminates": not any(k in rows for k in reasons),
        "failing": list(reasons),
        "reasons": list(reasons.values()),
        "text": text,
    }


def warnings(result: dict) -> list[str]:
    """Plain sentences for figures that should worry anyone about to train with this teacher
    (most of them also fail it: see :func:`verdict`)."""
    out = []
    answers, answer_div = result["answers"], result["diversity"]["answer"]
    if answers["example_copy_rate"] is not None and answers["example_copy_rate"] > MAX_EXAMPLE_COPIES:
        out.append(f"{pct(answers['example_copy_rate'])} of the answers copy the prompt's example answer '{answers['shown_example']}'")
    if answer_div["most_frequent_share"] is not None and answer_div["most_frequent_share"] > answer_div["bound"]:
        out.append(f"{pct(answer_div['most_frequent_share'])} of the valid answers are '{answer_div['most_frequent']}'")
    if answers["invalid_rate"] is not None and answers["invalid_rate"] >= 0.05:
        out.append(f"{pct(answers['invalid_rate'])} of the answers are invalid")
    frag = result["fragments"]
    if frag["n"] and frag["lowest_rate"] < MIN_FRAGMENTS_LOWEST:
        out.append(f"only {frag['lowest']} of {frag['n']} fragments get the lowest answer, as the rubric demands")
    inj = result["injection"]
    if inj["verdict"] == "raises the score":
        out.append(f"an instruction to the grader inside the story raised the score in {inj['raised']} of {inj['pairs']} pairs")
    stories = result.get("probes", {}).get("stories")
    for kind, missing in result.get("probes", {}).get("not_made", {}).items():
        out.append(f"{missing} of the {stories} stories got no {kind} copy (too short for it, or nothing to change)")
    return out


# --------------------------------------------------------------------------- rating
def rate_all(teacher, probes: list[Probe], chunk: int, label: str) -> tuple[list[Rating], float]:
    """Rate the probes with a progress bar that advances per rating; returns the ratings and
    the seconds taken.

    A backend that reports each rating as it comes (the openai backend: ``teacher.streams``)
    gets every probe in one call, so its requests stay in flight back to back; the others
    report a call's ratings when the call ends, so they get ``chunk`` probes at a time and
    the bar still moves."""
    ratings: list[Rating] = []
    start = time.perf_counter()
    step = len(probes) if getattr(teacher, "streams", False) else chunk
    with progress_bar("stories") as bar:
        task = bar.add_task(label, total=len(probes))

        def rated(i: int, rating: Rating) -> None:  # from the backend's thread: rich's bar is thread-safe
            bar.update(task, advance=1, status=teacher.status())  # requests in flight and retries (openai)

        for i in range(0, len(probes), max(1, step)):
            part = [p.as_story() for p in probes[i : i + step]]
            if isinstance(teacher, RubricTeacher):
                ratings += teacher.rate(part, on_rated=rated)
            else:  # any Teacher: rate() only
                ratings += teacher.rate(part)
                bar.advance(task, len(part))
    return ratings, time.perf_counter() - start


def retest_sample(probes: list[Probe], n: int, seed: int) -> list[int]:
    """Indices of up to ``n`` probes rated twice (fragments left out: the rule may rate them)."""
    candidates = [i for i, p in enumerate(probes) if p.kind != "fragment"]
    return sorted(random.Random(f"retest:{seed}").sample(candidates, min(n, len(candidates))))


def check(
    teacher,
    probes: list[Probe],
    *,
    retest: int = 40,
    seed: int = 0,
    chunk: int = 16,
    temperature: float | None = None,
    min_gap: float = MIN_GAP,
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
        seconds=seconds, temperature=temperature, identity=teacher.identity, min_gap=min_gap,
    )
    return result, ratings, list(zip(picked, second))


# --------------------------------------------------------------------------- the command
def load_probes(
    rubric: Rubric, stories: Path | None, probes: Path | None, n: int, seed: int, prompts: list[str] | None = None
) -> list[Probe]:
    """The probe set: saved probes, probes from a stories file, or storyworld's (the default),
    told as continuations of ``prompts`` (a run's prompts; the paper's by default)."""
    if stories is not None and probes is not None:
        raise UserError("Give --stories (build probes from your stories) or --probes (reuse saved probes), not both.")
    if probes is not None:
        found = read_probes(probes)
    else:
        if n < MIN_STORIES:
            raise UserError(f"--n {n} is too few to say anything: the check needs at least {MIN_STORIES} clean stories.")
        if n > MAX_STORIES:
            raise UserError(f"--n {n:,} is more clean stories than a check needs: give at most {MAX_STORIES:,}.")
        top = rubric.answer({c.name: c.high for c in rubric.criteria})
        if stories is None:
            clean = storyworld_stories(n, seed, prompts)
        else:
            clean, total = file_stories(stories, n, seed)
            if len(clean) < MIN_STORIES:
                raise UserError(
                    f"{stories} has {len(clean)} usable stories of {total} (at least 3 sentences and 20 words each); "
                    f"the check needs at least {MIN_STORIES}."
                )
        found = build_probes(clean, top, seed, tuple(rubric.names))
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
    def say(text: str, style: str | None = None) -> None:
        console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)

    for row in result["criteria"].values():
        say(row["text"], "green" if row["verdict"] in PASSING else "red")
        if row["variants"]:
            kinds = ", ".join(
                f"{kind} {pct(v['discrimination'])} ({v['tied']} tied, gap {signed(v['gap'])})" for kind, v in row["variants"].items()
            )
            say(f"  clean higher than: {kinds}", "dim")
    answers, div, retest, inj = result["answers"], result["diversity"]["answer"], result["retest"], result["injection"]
    nothing = f"not measured: {NOTHING_VALID}" if answers["invalid_rate"] == 1 else "not measured: no valid answer"
    copy = pct(answers["example_copy_rate"]) if answers["shown_example"] else "- (the prompt shows no example)"
    by = inj.get("by") or {}
    asked = f"injection ({len(by.get('wording', {})) or 1} wordings, {len(by.get('place', {})) or 1} places, asking for '{inj['asked_for']}')"
    if inj["pairs"]:
        lo, hi = inj["lift_interval"]
        injected = (
            f"{asked}: {inj['verdict']}, raised {inj['raised']} / lowered {inj['lowered']} of {inj['pairs']} pairs, "
            f"mean lift {signed(inj['lift'], 3)} of the 0..1 score (95 % CI {signed(lo, 3)}..{signed(hi, 3)})"
        )
    else:
        injected = f"{asked}: {nothing}"
    lines = [
        f"answers: {div['entropy_bits']:.2f} bits of entropy, most frequent '{div['most_frequent']}' in {pct(div['most_frequent_share'])}"
        if div["n"] else f"answers: {nothing}",
        f"example copies: {copy}; invalid: {pct(answers['invalid_rate'])} ({answers['invalid']} of {answers['ratings'] - answers['by_rule']})",
        f"fragments given the lowest answer: {result['fragments']['lowest']} of {result['fragments']['n']}",
        injected,
    ]
    if retest["n"] and retest.get("both_valid"):
        exact = ", ".join(f"{k} {pct(v['exact'])}" for k, v in retest["criteria"].items())
        lines.append(f"retest at temperature {retest['temperature']} ({retest['n']} stories): same score {exact}")
    elif retest["n"]:
        lines.append(f"retest at temperature {retest['temperature']} ({retest['n']} stories): {nothing}")
    speed = result["speed"]
    cached = f", {answers['cached']} of them from the rating cache" if answers["cached"] else ""
    lines.append(f"speed: {speed['ratings']} ratings in {speed['seconds']:.1f} s ({speed['ratings_per_s'] or 0:.1f}/s{cached})")
    for line in lines:
        say(line)
    for w in result["warnings"]:
        say(f"warning: {w}", "yellow")
    say(result["verdict"]["text"], "bold green" if passed(result) else "bold white on red")


def passed(result: dict) -> bool:
    """Whether a check's results are a PASS (check.json written before the verdict counted the
    injection and the answers has only ``discriminates``)."""
    verdict = result["verdict"]
    return bool(verdict.get("passed", verdict.get("discriminates")))


def check_teacher(
    teacher,
    cfg: ExperimentConfig,
    out: Path,
    probe_set: list[Probe],
    *,
    source: str = "storyworld",
    seed: int = 0,
    retest: int = 40,
    min_gap: float = MIN_GAP,
    fail_under: float | None = None,
) -> dict:
    """Check a teacher that is already built (``onceupon check-teacher``, and ``interact``
    before its first step) on ``probe_set`` (:func:`load_probes`), write ``out`` and return
    its check.json content. ``source`` says where the probes came from."""
    result, ratings, retests = check(
        teacher, probe_set, retest=retest, seed=seed, chunk=cfg.teacher.batch_size,
        temperature=cfg.teacher.temperature, min_gap=min_gap,
    )  # fmt: skip
    result["probes"]["source"] = source
    result["probes"]["seed"] = seed
    result["fail_under"] = fail_under
    write_check(out, result, probe_set, ratings, retests)
    return result


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
    min_gap: float = MIN_GAP,
    exit_zero: bool = False,
    as_json: bool = False,
    prompts: list[str] | None = None,
) -> int:
    """The ``onceupon check-teacher`` command; returns the exit code: 1 for a FAIL (or a
    criterion below --fail-under) unless ``exit_zero``, else 0. Storyworld probes are told
    after ``prompts`` (the config's interaction prompts, as a run would use them)."""
    from onceupon.teacher.factory import build_teacher

    cfg = cfg or ExperimentConfig()
    out = Path(out)
    if retest < 0:
        raise UserError("--retest must be 0 or more.")
    if fail_under is not None and not 0 <= fail_under <= 100:
        raise UserError("--fail-under is a percentage between 0 and 100.")
    if not (math.isfinite(min_gap) and min_gap >= 0):
        raise UserError("--min-gap is a gap in points of the rubric's scale, 0 or more.")
    _check_out(out, probes)
    probe_set = load_probes(Rubric.from_config(cfg.teacher), stories, probes, n, seed, prompts)
    source = str(probes) if probes else str(stories) if stories else "storyworld"
    console = Console(stderr=as_json)
    with build_teacher(cfg.teacher) as teacher:
        result = check_teacher(
            teacher, cfg, out, probe_set, source=source, seed=seed, retest=retest, min_gap=min_gap, fail_under=fail_under
        )
    print_check(result, console)
    console.print(f"results: {out / CHECK_FILE}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(result, indent=2))
    code = 0 if passed(result) else 1
    if fail_under is not None:
        below = [k for k, v in judged_rows(result["criteria"]).items() if (v["discrimination"] or 0) * 100 < fail_under]
        if below:
            console.print(f"below --fail-under {fail_under:g} %: {', '.join(below)}", style="bold red", markup=False, soft_wrap=True)
            code = 1
    if code and exit_zero:
        console.print("--exit-zero: exit code 0 despite the FAIL", markup=False, highlight=False, soft_wrap=True)
        return 0
    return code


def read_check(path: str | Path) -> dict:
    """A check's results (``DIR/check.json`` or the file itself), for the report."""
    path = Path(path)
    file = path / CHECK_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path} holds no {CHECK_FILE}; give a directory written by `onceupon check-teacher`.")
    return read_check_result(file)  # every field the report shows, checked (onceupon.schemas.results)
