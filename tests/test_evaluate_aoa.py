"""AoA surprisal per checkpoint on a small cdi_childes.json in the official layout.

Each (word, context) gets ``-sum ln P`` of the word's tokens after ``context.strip() + " "``,
as the official AoA code computes it; one-letter words are left out; a text longer than the
model reads is NaN (the official code fails on it and records NaN), never a cut text's score.
"""

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.evaluate import aoa
from onceupon.evaluate.evaluate import Target, evaluate_checkpoint

WORDS = {
    "dog": [{"context": "I saw a "}, {"context": "  The little fox ran to the"}],
    "a": [{"context": "there is"}],  # one letter: left out, as officially
    "ball": [{"context": "she threw the"}, {"context": " ".join(["the fox"] * 80)}],  # 160 words: too long for 128 positions
}


def official_surprisal(model, tok, context, word):
    text = context.strip() + " " + word.strip()
    enc = tok(text, return_offsets_mapping=True)
    ids, start = enc["input_ids"], len(text) - len(word.strip())
    if len(ids) > model.config.n_positions + 1:
        return math.nan
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0], dim=-1)
    return -sum(logp[i - 1, ids[i]].item() for i, (_, end) in enumerate(enc["offset_mapping"]) if i > 0 and end > start)


def test_aoa_surprisal_per_context_is_the_official_one(tiny_checkpoint, tmp_path):
    root = tmp_path / "full_eval"
    (root / "aoa").mkdir(parents=True)
    (root / "aoa" / "cdi_childes.json").write_text(json.dumps(WORDS), encoding="utf-8")
    cfg = ExperimentConfig()
    cfg.evaluate.tasks = ["aoa"]
    cfg.evaluate.stories = 0
    out = tmp_path / "out"
    row = evaluate_checkpoint(cfg, Target("c", tiny_checkpoint, "pretrain", 0, 0, out), root)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    want = [official_surprisal(model, tok, e["context"], w) for w in ("dog", "ball") for e in WORDS[w]]
    details = [json.loads(x) for x in (out / "tasks" / "aoa.scores.jsonl").read_text().splitlines()]
    assert [(d["word"], d["context"]) for d in details] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert math.isnan(want[3]) and details[3]["surprisal"] is None
    assert [d["surprisal"] for d in details[:3]] == pytest.approx(want[:3], abs=1e-4)
    result = row["tasks"]["aoa"]
    assert result["n"] == 4 and result["failed"] == 1
    assert result["mean_surprisal"] == pytest.approx(sum(want[:3]) / 3, abs=1e-4)


REVISIONS = [f"chck_{i}M" for i in range(1, 10)] + [f"chck_{10 * i}M" for i in range(1, 11)]
MONTHS = list(range(16, 31))


def logistic(x, a, b, c, d):
    return a / (1 + math.exp(-b * (x - c))) + d


def children(age, slope=0.8):
    """Share of children producing a word at each month: half of them at ``age``."""
    return [logistic(m, 1.0, slope, age, 0.0) for m in MONTHS]


def model_results(word, middle, offsets=(1.0, -1.0)):
    """surprisal.json results of one word: per context, -(8 / (1 + e^(-3 (x - middle))) - 14)
    + offset over x = log10(1 + words seen), so the surprisal falls from 14 to 6 nats."""
    return [{"step": r, "target_word": word, "context_id": k, "surprisal": -logistic(math.log10(int(r[5:-1]) * 1e6 + 1), 8.0, 3.0, middle, -14.0) + off}
            for r in REVISIONS for k, off in enumerate(offsets)]


def expected_model_age(middle, lowest):
    """Where the curve crosses halfway from the official chance level down to the lowest surprisal."""
    level = -(aoa.CHANCE - 0.5 * (aoa.CHANCE - lowest))
    return middle - math.log(8.0 / (level + 14.0) - 1) / 3.0


def write_cdi(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["word," + ",".join(map(str, MONTHS))] + [word + "," + ",".join("" if v is None else repr(v) for v in values) for word, values in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_words_ages_are_where_the_official_fits_put_them():
    assert aoa.child_aoa(MONTHS, children(22.0)) == pytest.approx(22.0, abs=1e-4)
    # Every context is a point of its own: the lowest context (1 nat below the mean curve) sets
    # the threshold, not the mean over contexts per checkpoint.
    results = model_results("dog", 7.2)
    lowest = min(r["surprisal"] for r in results)
    got = aoa.model_aoa([r["surprisal"] for r in results], [aoa.step_number(r["step"]) for r in results])
    assert got == pytest.approx(expected_model_age(7.2, lowest), abs=1e-4)
    assert got != pytest.approx(expected_model_age(7.2, lowest + 1.0), abs=1e-3)
    assert aoa.step_number("chck_10M") == 1e7 and aoa.step_number("chck_2.5k") == 2500 and aoa.step_number("main") is None


def test_what_the_official_code_leaves_undefined_is_none():
    assert aoa.child_aoa(MONTHS, [None if m > 17 else 0.6 for m in MONTHS]) is None  # two ages with data
    assert aoa.child_aoa(MONTHS, [0.02] * len(MONTHS)) is None  # never half of the children
    flat = [15.0] * len(REVISIONS)  # never learned: the fit never comes down to the threshold
    assert aoa.model_aoa(flat, [aoa.step_number(r) for r in REVISIONS]) is None
    assert aoa.model_aoa([9.0, 3.0], [1e6, 2e6]) is None  # fewer than 3 points
    assert aoa.model_aoa([math.nan] * 5, [1e6 * i for i in range(1, 6)]) is None


def test_curve_fitness_is_the_correlation_of_model_and_child_ages(tmp_path):
    path = tmp_path / "aoa" / "cdi_human.csv"
    words = {"dog": (18.0, 6.6), "cat": (20.5, 7.0), "ball": (23.0, 7.1), "milk": (26.0, 7.6)}
    write_cdi(path, [(w, children(age)) for w, (age, _) in words.items()] + [("sun", [None] * 14 + [0.9])])
    cdi = aoa.read_cdi(path)
    results = [r for w, (_, middle) in words.items() for r in model_results(w, middle)]
    results += model_results("sun", 7.0) + model_results("zebra", 7.0)  # no child age; not in the CDI file
    results.append({"step": "chck_5M", "target_word": "dog", "context_id": 2, "surprisal": math.nan})  # a failed context
    got = aoa.curve_fitness(results, cdi)
    model = [expected_model_age(m, min(r["surprisal"] for r in model_results("", m))) for _, m in words.values()]
    child = [a for a, _ in words.values()]
    assert got["n_words"] == 4
    assert [got["words"][w]["model"] for w in words] == pytest.approx(model, abs=1e-4)
    assert [got["words"][w]["child"] for w in words] == pytest.approx(child, abs=1e-4)
    assert got["curve_fitness"] == pytest.approx(float(np.corrcoef(model, child)[0, 1]), abs=1e-6)
    assert got["words"]["sun"]["child"] is None and got["words"]["sun"]["in_cdi"]
    zebra = expected_model_age(7.0, min(r["surprisal"] for r in model_results("", 7.0)))
    assert got["words"]["zebra"] == {"model": pytest.approx(zebra, abs=1e-4), "child": None, "in_cdi": False}
    few = [r for r in results if r["target_word"] in ("dog", "cat")]
    assert aoa.curve_fitness(few, cdi)["curve_fitness"] == 0.0  # fewer than 3 words, as officially


@pytest.mark.parametrize(("text", "words"), [
    ("word,16,17,18\ndog,0.1,x,0.3\n", ["row 2", "17-month", "'x'"]),
    ("word,16,17,18\ndog,0.1,50,0.3\n", ["row 2", "17-month", "0 ... 1"]),
    ("name,16,17\ndog,0.1,0.2\n", ["'word'"]),
    ("word,age\ndog,3\n", ["age column"]),
    ("word,16,17\ndog,0.1,0.2,0.3\n", ["row 2", "4 cells"]),
])
def test_a_malformed_cdi_file_is_one_sentence(tmp_path, text, words):
    path = tmp_path / "cdi_human.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as e:
        aoa.read_cdi(path)
    message = str(e.value)
    assert "\n" not in message and message.endswith(".") and str(path) in message
    assert all(w in message for w in words), message
