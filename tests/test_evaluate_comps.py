"""COMPS (minimal pairs of property knowledge) on small files in the official layout.

Each COMPS item is two sentences ending in the same property phrase, one after an acceptable
concept and one after an unacceptable one. The official reader joins prefix and phrase with
one space and scores only the phrase's tokens; the subset an item counts to comes from its
file's name, and the task's figure is the mean of the subsets' accuracies. The tests
recompute every number by hand from that definition, one unpadded forward pass per sentence.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.evaluate import zero_shot
from onceupon.evaluate.evaluate import Target, evaluate_checkpoint

COMPS = {  # file stem -> [(prefix_acceptable, prefix_unacceptable, property_phrase)]
    "comps_base": [
        ("A dog", "A table", "can bark."),
        ("A bird", "A stone", "has wings."),
        ("A fox", "A fox", "has a tail."),  # the same sentence twice: an exact tie
    ],
    "comps_wugs": [("A wug is a bird. Therefore, a wug", "A dax is a chair. Therefore, a wug", "can fly.")],
    "comps_wugs_dist-before": [("A wug is a cat. A dax is a box. Therefore, a wug", "A wug is a cat. A dax is a box. Therefore, a dax", "can purr.")],
    "comps_wugs_dist-in-between": [("A wug is a dog. A dax is a cup. Therefore, a wug", "A wug is a dog. A dax is a cup. Therefore, a dax", "can run.")],
}
SUBSET = {"comps_base": "base", "comps_wugs": "wugs", "comps_wugs_dist-before": "wugs_dist_before", "comps_wugs_dist-in-between": "wugs_dist_in_between"}


def write_comps(root):
    folder = root / "evaluation_data" / "full_eval" / "comps"
    folder.mkdir(parents=True)
    for stem, rows in COMPS.items():
        lines = [
            json.dumps({"prefix_acceptable": a, "prefix_unacceptable": u, "property_phrase": p, "negative_sample_type": "x"})
            for a, u, p in rows
        ]
        (folder / f"{stem}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "evaluation_data"


def official_score(model, tok, sentence, completion):
    """The official definition: the sentence tokenized whole, the completion's tokens are
    those whose character span ends after ``len(sentence) - len(completion)``; summed
    log-probabilities, the first token conditioned on BOS."""
    enc = tok(sentence, return_offsets_mapping=True)
    ids = enc["input_ids"]
    start = len(sentence) - len(completion)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
    return sum(logp[i - 1, ids[i]].item() for i, (_, end) in enumerate(enc["offset_mapping"]) if i > 0 and end > start)


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint, tmp_path_factory):
    root = write_comps(tmp_path_factory.mktemp("data"))
    cfg = ExperimentConfig()
    cfg.evaluate.data_dir = str(root)
    cfg.evaluate.suite = "full"
    cfg.evaluate.tasks = ["comps"]
    cfg.evaluate.stories = 0
    cfg.evaluate.batch_size = 2
    out = tmp_path_factory.mktemp("out")
    row = evaluate_checkpoint(cfg, Target("chck_0W", tiny_checkpoint, "pretrain", 0, 0, out), zero_shot.resolve_data_dir(root, "full"))
    return row, out


def test_comps_scores_and_subset_means_are_the_official_ones(evaluated, tiny_checkpoint):
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    row, out = evaluated
    details = [json.loads(x) for x in (out / "tasks" / "comps.scores.jsonl").read_text().splitlines()]
    by_subset, k = {}, 0
    for stem in sorted(COMPS):
        for a, u, p in COMPS[stem]:
            want = [official_score(model, tok, " ".join([a, p]), p), official_score(model, tok, " ".join([u, p]), p)]
            assert details[k]["scores"] == pytest.approx(want, abs=1e-4)
            assert (details[k]["file"], details[k]["uid"]) == (stem, SUBSET[stem])
            tie = want[0] == want[1]
            assert tie or abs(want[0] - want[1]) > 1e-3  # float noise cannot flip a verdict
            by_subset.setdefault(SUBSET[stem], []).append((want[0] >= want[1], tie))
            k += 1
    result = row["tasks"]["comps"]
    accs = [100 * sum(c for c, _ in v) / len(v) for v in by_subset.values()]
    assert result["n"] == 6
    assert result["accuracy"] == pytest.approx(sum(accs) / len(accs), abs=1e-9)
    assert result["tie_rate"] > 0  # the identical pair
    breakdown = json.loads((out / "tasks" / "comps.json").read_text())["breakdown"]
    assert set(breakdown) == set(SUBSET.values())


def test_comps_is_full_eval_only_and_absent_from_fast(tiny_checkpoint, tmp_path):
    root = write_comps(tmp_path)
    (root / "fast_eval" / "blimp_fast").mkdir(parents=True)
    (root / "fast_eval" / "blimp_fast" / "a.jsonl").write_text('{"sentence_good": "A fox.", "sentence_bad": "Fox a."}\n')
    cfg = ExperimentConfig()
    cfg.evaluate.tasks = ["comps"]
    cfg.evaluate.stories = 0
    row = evaluate_checkpoint(cfg, Target("c", tiny_checkpoint, "pretrain", 0, 0, tmp_path / "out"), zero_shot.resolve_data_dir(root, "fast"))
    assert row["tasks"]["comps"]["absent"] is True


def test_comps_item_without_its_phrase_is_one_sentence(tmp_path):
    path = tmp_path / "comps_base.jsonl"
    path.write_text('{"prefix_acceptable": "A dog", "prefix_unacceptable": "A cup"}\n')
    with pytest.raises(UserError, match="property_phrase"):
        zero_shot.read_items("comps", [path])
