"""AoA surprisal per checkpoint on a small cdi_childes.json in the official layout.

Each (word, context) gets ``-sum ln P`` of the word's tokens after ``context.strip() + " "``,
as the official AoA code computes it; one-letter words are left out; a text longer than the
model reads is NaN (the official code fails on it and records NaN), never a cut text's score.
"""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from onceupon.config import ExperimentConfig
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


def test_acquisition_is_where_the_fitted_curve_is_halfway_from_chance():
    import numpy as np

    from onceupon.evaluate import aoa

    words = [i * 10**6 for i in range(1, 10)] + [10 * i * 10**6 for i in range(1, 11)]
    x = np.log10(words)
    curve = list(aoa._sigmoid(x, 3.0, 9.0, math.log10(20e6), 4.0))
    # halfway between chance (9.7) and the curve's lowest point at 100M words, solved by hand
    lowest = 3.0 + 6.0 / (1.0 + math.exp(4.0 * (8.0 - math.log10(20e6))))
    target = (9.7 + lowest) / 2
    expected = 10 ** (math.log10(20e6) + math.log(6.0 / (target - 3.0) - 1.0) / 4.0)
    assert aoa.acquisition(words, curve, chance=9.7) == pytest.approx(expected, rel=0.01)
    assert aoa.acquisition(words, [12.0] * len(words), chance=9.7) is None  # never below halfway: not acquired
    results = [{"step": f"chck_{w // 10**6}M", "target_word": "dog", "surprisal": s} for w, s in zip(words, curve)]
    results.append({"step": "chck_1M", "target_word": "dog", "surprisal": float("nan")})  # a failed context is left out
    ages = aoa.ages(results, {f"chck_{w // 10**6}M": w for w in words}, 9.7)
    assert ages["dog"] == pytest.approx(expected, rel=0.01)
