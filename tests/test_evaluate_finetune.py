"""GLUE fine-tuning machinery on a tiny task in the official file layout.

A made-up RTE (``glue_filtered/rte.train.jsonl`` / ``rte.valid.jsonl``) whose label is
readable from the last word of the second sentence: the fine-tuned tiny checkpoint must learn
it, write its predictions in the official format, give the same predictions for the same
seed, and, reading the first token as the official script's default does, see every input as
the same (one answer for all).
"""

import json
import random

import pytest

from onceupon.errors import UserError
from onceupon.evaluate.finetune import Hyper, cosine_with_warmup, finetune, metric

WORDS = ["fox", "bear", "box", "hat", "key", "river", "tree", "girl", "king", "cat"]


def write_rte(root, n_train=64, n_valid=24, seed=0):
    rng = random.Random(seed)
    folder = root / "glue_filtered"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows = []
        for _ in range(n):
            label = rng.randrange(2)
            s1 = "The " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + "."
            rows.append({"sentence1": s1, "sentence2": f"The {rng.choice(WORDS)} is {'there' if label else 'gone'}", "label": label, "idx": len(rows)})
        (folder / f"rte.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def test_finetune_learns_and_writes_official_predictions(tiny_checkpoint, tmp_path):
    root = write_rte(tmp_path / "full_eval")
    hyper = Hyper(learning_rate=1e-3, epochs=4)
    result = finetune(tiny_checkpoint, "rte", root, tmp_path / "a", hyper)
    preds = json.loads((tmp_path / "a" / "predictions.json").read_text())
    assert list(preds) == ["rte"] and [p["id"] for p in preds["rte"]["predictions"]] == [f"rte_{i}" for i in range(24)]
    labels = [json.loads(x)["label"] for x in (root / "glue_filtered" / "rte.valid.jsonl").read_text().splitlines()]
    assert result["accuracy"] == metric("accuracy", [p["pred"] for p in preds["rte"]["predictions"]], labels)
    assert result["accuracy"] >= 0.9 and result["best"] == max(result["per_epoch"]) and result["steps"] == 4 * 2

    short = Hyper(learning_rate=1e-3, epochs=1)
    once = [finetune(tiny_checkpoint, "rte", root, tmp_path / d, short) for d in ("b", "c")]
    assert (tmp_path / "b" / "predictions.json").read_bytes() == (tmp_path / "c" / "predictions.json").read_bytes()
    assert once[0]["per_epoch"] == once[1]["per_epoch"]  # the same seed, the same run

    first = finetune(tiny_checkpoint, "rte", root, tmp_path / "d", Hyper(learning_rate=1e-3, epochs=2, pooling="first"))
    answers = {p["pred"] for p in json.loads((tmp_path / "d" / "predictions.json").read_text())["rte"]["predictions"]}
    assert len(answers) == 1 and first["accuracy"] < 0.9  # the first token of a causal model sees no input


def test_schedule_and_metrics_are_the_official_ones():
    f = cosine_with_warmup(6, 100, 0.1)
    assert [f(0), f(3), f(6)] == [0.0, 0.5, 1.0]
    assert f(100) == pytest.approx(0.1) and f(53) == pytest.approx(0.1 + 0.9 * 0.5)
    assert metric("f1", [1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert metric("f1", [0, 0], [1, 0]) == 0.0


def test_missing_glue_files_are_one_sentence(tiny_checkpoint, tmp_path):
    with pytest.raises(UserError, match="rte.train.jsonl"):
        finetune(tiny_checkpoint, "rte", tmp_path, tmp_path / "out")
