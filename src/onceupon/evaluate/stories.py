"""Story quality: let a checkpoint tell N stories, have a teacher rate them, describe them.

Sampling is the paper's: the fixed prompt, pure sampling (temperature 1, no top-k, no top-p),
at most 90 new tokens, stopping at the end-of-sequence token. The teacher is whatever
``cfg.teacher`` builds (the offline heuristic by default; an LLM through the openai backend
for real experiments). Besides the teacher's verdict we report text statistics that need no
teacher, so a teacher that drifts (or is gamed) shows up against them:

================  ==========================================================================
words             mean continuation length in words (whitespace split, ``count_words``)
distinct_1/2      distinct word uni-/bigrams over all uni-/bigrams, pooled over the stories
                  (lower-cased whitespace words; Li et al. 2016's diversity measure)
repetition        mean share of a story's word trigrams that repeat an earlier trigram of the
                  same story (0: no loops; near 1: the story repeats itself)
readability       mean automated readability index (textstat; a school grade, lower is
                  easier; it needs no syllable dictionary, so it runs offline)
entropy_per_word  the model's predictive entropy summed over the generated tokens, divided
                  by the generated words, in bits, pooled over stories (how unsure the
                  student was per word it wrote)
================  ==========================================================================

The stories and their ratings are written to ``stories.jsonl`` beside the results;
``onceupon evaluate RUN --judge`` has another teacher rate those very stories and keeps its
ratings beside them (:func:`judge_run`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from onceupon.errors import UserError
from onceupon.files import atomic_write_json, atomic_write_text, json_object, read_jsonl, read_text_file
from onceupon.readability import automated_readability_index
from onceupon.schemas.results import read_evaluation_results
from onceupon.schemas.stories import read_prompts_file
from onceupon.teacher.base import Rating, Story
from onceupon.teacher.judges import fingerprint, labels
from onceupon.words import count_words

LN2 = math.log(2.0)


@dataclass
class Sample:
    prompt: str
    continuation: str
    n_tokens: int  # generated tokens, the closing EOS included
    entropy_bits: float  # predictive entropy summed over the generated tokens


@torch.no_grad()
def sample_stories(
    model,
    tokenizer,
    prompt: str,
    n: int,
    *,
    max_new_tokens: int = 90,
    batch_size: int = 64,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[Sample]:
    """``n`` continuations of ``prompt`` by pure sampling, with their predictive entropy.

    Stories are told exactly as during interaction (the same rollout code: whole batches with
    the KV cache, stop at the first EOS), then scored once more for the entropy of every
    generated token's distribution (the EOS included). Seeded without touching the caller's
    random state.
    """
    from onceupon.interact.rollout import PolicyWithValue, generate_rollout, score_rollout
    from onceupon.student.model import context_length

    device = next(model.parameters()).device
    limit = context_length(model)
    prompt_tokens = len(tokenizer(prompt)["input_ids"])
    new_tokens = min(max_new_tokens, limit - prompt_tokens)
    if new_tokens < 1:
        raise UserError(f"The story prompt has {prompt_tokens} tokens, leaving no room in the model's {limit}-token context.")
    policy = PolicyWithValue(model, with_value_head=False)
    samples: list[Sample] = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            rollout = generate_rollout(model, tokenizer, [prompt] * b, max_new_tokens=new_tokens)
            _, _, entropy = score_rollout(policy, rollout, temperature=1.0)
            bits = (entropy * rollout.response_mask).sum(dim=1).double() / LN2
            lengths = rollout.response_mask.sum(dim=1).long().tolist()
            for text, n_tokens, h in zip(rollout.continuations, lengths, bits.tolist()):
                samples.append(Sample(prompt, text, n_tokens, h))
            if progress is not None:
                progress(b)
    return samples


# --------------------------------------------------------------------------- text statistics
def _words(text: str) -> list[str]:
    return text.lower().split()


def distinct_n(texts: list[str], n: int) -> float | None:
    """Distinct word n-grams over all word n-grams, pooled over ``texts``."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        w = _words(text)
        grams.extend(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    return len(set(grams)) / len(grams) if grams else None


def repetition(text: str, n: int = 3) -> float | None:
    """Share of the text's word n-grams that already occurred earlier in it."""
    w = _words(text)
    grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
    if not grams:
        return None
    return sum(c - 1 for c in Counter(grams).values()) / len(grams)


def readability(text: str) -> float | None:
    return automated_readability_index(text) if text.strip() else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(samples: list[Sample], ratings: list[Rating], criteria: list[str]) -> dict:
    """The results.json ``stories`` entry for rated samples."""
    valid = [r for r in ratings if r.valid and r.scores is not None]
    texts = [s.continuation for s in samples]
    words = [count_words(t) for t in texts]
    total_bits = sum(s.entropy_bits for s in samples)
    distributions = {
        name: {str(k): v for k, v in sorted(Counter(r.scores[name] for r in valid if name in r.scores).items())}
        for name in criteria
    }
    return {
        "n": len(samples),
        "invalid_rate": (len(ratings) - len(valid)) / len(ratings) if ratings else 0.0,
        "mean_total": _mean(r.total for r in valid),
        "mean_score": _mean(r.score for r in valid),
        "criteria": {name: _mean(r.scores.get(name) for r in valid) for name in criteria},
        "distributions": distributions,
        "words": _mean(words),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "repetition": _mean(repetition(t) for t in texts),
        "readability": _mean(readability(t) for t in texts),
        "entropy_per_word": total_bits / sum(words) if sum(words) else None,
    }


def story_records(samples: list[Sample], ratings: list[Rating]) -> list[dict]:
    """One stories.jsonl line per story: the text, its rating and its statistics."""
    return [
        {
            "index": i,
            "prompt": s.prompt,
            "continuation": s.continuation,
            "n_words": count_words(s.continuation),
            "n_tokens": s.n_tokens,
            "entropy_bits": s.entropy_bits,
            "valid": r.valid,
            "scores": r.scores,
            "score": r.score,
            "total": r.total,
            "raw": r.raw,
            "error": r.error,
        }
        for i, (s, r) in enumerate(zip(samples, ratings))
    ]


def read_prompts(prompt: str, prompts_file: str | None) -> list[str]:
    if not prompts_file:
        return [prompt]
    return read_prompts_file(prompts_file, "The story prompts file")


def evaluate_stories(
    model,
    tokenizer,
    evaluate_cfg,
    teacher,
    progress: Callable[[int], None] | None = None,
    on_rated: Callable[[int, Rating], None] | None = None,
) -> tuple[dict, list[dict]]:
    """Sample ``evaluate_cfg.stories`` stories per prompt, rate them with ``teacher``
    (``progress(n)`` as stories are sampled; ``on_rated(i, rating)`` as each rating arrives,
    passed on to the teacher, which must then accept it, as :func:`build_teacher`'s does).

    Returns the summary (results.json ``stories``) and the stories.jsonl records.
    """
    prompts = read_prompts(evaluate_cfg.story_prompt, evaluate_cfg.story_prompts_file)
    samples: list[Sample] = []
    for k, prompt in enumerate(prompts):
        samples += sample_stories(
            model,
            tokenizer,
            prompt,
            evaluate_cfg.stories,
            max_new_tokens=evaluate_cfg.story_max_new_tokens,
            batch_size=evaluate_cfg.story_batch_size,
            seed=evaluate_cfg.seed + k,
            progress=progress,
        )
    stories = [Story(s.prompt, s.continuation, str(i)) for i, s in enumerate(samples)]
    ratings = teacher.rate(stories) if on_rated is None else teacher.rate(stories, on_rated=on_rated)
    criteria = list(getattr(getattr(teacher, "rubric", None), "names", None) or [])
    if not criteria:
        criteria = sorted({name for r in ratings if r.scores for name in r.scores})
    return summarize(samples, ratings, criteria), story_records(samples, ratings)


# --------------------------------------------------------------------------- more judges
# A second judge rates the very stories a checkpoint already told (stories.jsonl), so two
# judges' scores of one checkpoint differ only by the judge. Each judge's ratings live in
# ``evaluation/<checkpoint>/judges/<judge>/`` (stories.jsonl + summary.json) and its summary
# appears in the checkpoint's results row under ``judges``, keyed by that directory's name
# (the summary names the teacher), beside (never instead of) the main ``stories`` summary.
JUDGES_DIR = "judges"


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:20]


def judge_slug(judge: dict) -> str:
    """A directory name for a judge (a teacher's fingerprint): readable, and distinct for
    distinct teachers and prompts."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", judge["teacher"])[:60].strip("_") + "-" + judge["rubric"][:8]


def judged_by(saved: dict) -> dict | None:
    """The fingerprint of the judge whose ``summary.json`` this is. A summary written before
    it kept its fingerprint names the same things (teacher, rubric, the teacher config), so its
    judge is still recognised and not asked again; None when it names none of them."""
    summary = saved.get("summary") or {}
    if "fingerprint" in saved:
        return saved["fingerprint"]
    try:
        return fingerprint(summary["teacher"], summary["rubric"], summary["teacher_config"])
    except (KeyError, TypeError):
        return None


def judges_for(out_dir: Path) -> dict[str, dict]:
    """The summaries of the judges that rated the stories now in ``out_dir/stories.jsonl``
    (a judge of stories sampled before, by an older evaluation, is left out)."""
    stories = Path(out_dir) / "stories.jsonl"
    root = Path(out_dir) / JUDGES_DIR
    if not stories.is_file() or not root.is_dir():
        return {}
    digest = _file_digest(stories)
    found = {}
    for path in sorted(root.glob("*/summary.json")):
        data = _read_summary(path)
        if data.get("stories_digest") == digest and "summary" in data:
            found[path.parent.name] = data["summary"]
    return found


def _read_summary(path: Path) -> dict:
    """A judge's ``summary.json``; {} when it is missing or unreadable (torn, not an object),
    which leaves that judge's stories to be rated again."""
    try:  # json_object: not an object, or beyond the bounds every file keeps, is a UserError
        return json_object(read_text_file(path), str(path))
    except (OSError, UserError):
        return {}


def _samples(records: list[dict]) -> list[Sample]:
    return [Sample(r["prompt"], r["continuation"], int(r.get("n_tokens") or 0), float(r.get("entropy_bits") or 0.0)) for r in records]


def _rated_rows(run_dir: Path) -> tuple[dict, list[tuple[dict, Path]]]:
    """results.json and the rows whose checkpoint told stories, with their evaluation dirs."""
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise UserError(f"{run_dir} has no results.json; run `onceupon evaluate {run_dir}` first, then add judges.")
    try:
        results = read_evaluation_results(results_path)
    except UserError:
        raise UserError(f"{results_path} is not an evaluation's results; run `onceupon evaluate {run_dir}` again.") from None
    rated = [(row, run_dir / "evaluation" / str(row.get("checkpoint"))) for row in results["rows"]]
    rated = [(row, d) for row, d in rated if (d / "stories.jsonl").is_file()]
    if not rated:
        raise UserError(f"No checkpoint of {run_dir} has sampled stories (evaluate.stories was 0?); nothing to judge.")
    return results, rated


def judge_run(cfg, run_dir: str | Path) -> dict:
    """``onceupon evaluate RUN --judge``: rate every evaluated checkpoint's stories with
    ``cfg.teacher`` as one more judge, keep the results beside the others, update results.json."""
    from onceupon.lifecycle.lock import run_lock
    from onceupon.teacher.factory import build_teacher
    from onceupon.tracking import RUN_LOG, run_log

    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise UserError(f"--judge rates the stories of a run's evaluated checkpoints; {run_dir} is not a run directory.")
    _rated_rows(run_dir)  # bad input fails before the teacher starts
    # The lock `onceupon evaluate` takes: a judge and an evaluation never interleave writes.
    # ... and its progress lines go to RUN/log.txt, as an evaluation's do.
    with build_teacher(cfg.teacher) as teacher, run_lock(run_dir / "evaluation"), run_log(run_dir / RUN_LOG):
        results, rated = _rated_rows(run_dir)  # read again under the lock
        _judge_rows(teacher, cfg.teacher.model_dump(mode="json"), rated)
        for row, out_dir in rated:
            row["judges"] = judges_for(out_dir)
        atomic_write_json(run_dir / "results.json", results)
    return results


def _judge_rows(teacher, teacher_cfg: dict, rated: list[tuple[dict, Path]]) -> None:
    """Rate the stories of each row not yet rated by this judge; write its files per row."""
    from onceupon.tracking import progress_bar

    judge = teacher.fingerprint
    slug = judge_slug(judge)
    todo = []
    for _row, out_dir in rated:
        digest = _file_digest(out_dir / "stories.jsonl")
        saved = _read_summary(out_dir / JUDGES_DIR / slug / "summary.json")
        if saved.get("stories_digest") == digest and judged_by(saved) == judge:
            continue  # these very stories, rated by this very judge: nothing to do
        todo.append((out_dir, digest, list(read_jsonl(out_dir / "stories.jsonl"))))
    with progress_bar("stories") as bar:
        task = bar.add_task("judge", total=sum(len(t[2]) for t in todo))
        for out_dir, digest, records in todo:
            # advanced story by story as ratings arrive: a slow remote judge never sits at 0 for minutes
            ratings = teacher.rate(
                [Story(r["prompt"], r["continuation"], str(i)) for i, r in enumerate(records)],
                on_rated=lambda i, rating: bar.advance(task, 1),
            )
            samples = _samples(records)
            summary = summarize(samples, ratings, teacher.rubric.names)
            summary.update(teacher=teacher.identity, rubric=teacher.rubric.hash, teacher_config=teacher_cfg)
            lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in story_records(samples, ratings)]
            atomic_write_text(out_dir / JUDGES_DIR / slug / "stories.jsonl", "".join(lines))
            saved = {"fingerprint": judge, "stories_digest": digest, "summary": summary}
            atomic_write_json(out_dir / JUDGES_DIR / slug / "summary.json", saved)


def judges_table(results: dict):
    """Mean total per checkpoint, one column per judge (the main teacher first)."""
    from rich.table import Table

    rows = results["rows"]
    judges = {"": {"teacher": "main", **(rows[0].get("stories") or {})}} if rows else {}
    for row in rows:
        for slug, summary in (row.get("judges") or {}).items():
            judges.setdefault(slug, summary)
    table = Table(title="story scores by judge (mean total; invalid ratings excluded)")
    table.add_column("checkpoint")
    for label in labels(list(judges.values())):  # distinct headers, also for judges of one model
        table.add_column(label, justify="right")
    for row in rows:
        cells = [str(row.get("checkpoint"))]
        for slug in judges:
            summary = row.get("stories") if slug == "" else (row.get("judges") or {}).get(slug)
            value = (summary or {}).get("mean_total")
            cells.append("—" if value is None else f"{value:.2f}")
        table.add_row(*cells)
    return table
