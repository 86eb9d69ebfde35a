"""Zero-shot tasks on small official-format files: every score equals the hand computation.

The tests write their own files in the BabyLM ``evaluation_data`` layout (EWoK and entity
tracking data must not be redistributed, so none is shipped), score them with the tiny
checkpoint through the real pipeline, and recompute every number by hand: one unpadded
forward pass per sentence, official aggregation written out explicitly.
"""

import json
import math

import pytest
import torch
from scipy.stats import spearmanr
from transformers import AutoModelForCausalLM, AutoTokenizer

from onceupon.config import ExperimentConfig
from onceupon.errors import UserError
from onceupon.evaluate import zero_shot
from onceupon.evaluate.evaluate import Target, evaluate_checkpoint

BLIMP = [  # (UID, good, bad)
    ("agreement", "The fox has a red box.", "The fox have a red box."),
    ("agreement", "The foxes have a box.", "The foxes has a box."),
    ("agreement", "The bear gave the fox a hat.", "The bear gave the fox a hat."),  # exact tie
    ("island", "Who did the bear meet?", "Who did the bear meet the fox?"),
]
SUPPLEMENT = {
    "hypernym": [("A fox is an animal.", "An animal is a fox."), ("A rose is a flower.", "A flower is a rose.")],
    "qa_congruence": [("What did Mia find? A key.", "What did Mia find? Yesterday.")],
}
EWOK = [  # Domain, Context1, Context2, Target1, Target2
    ("physical", "The box is on the table.", "The box is under the table.", "The box is above the table.", "The box is below the table."),
    ("physical", "The ice is hot.", "The ice is cold.", "It melts.", "It stays."),
    ("social", "Mia gave Tom a gift.", "Tom gave Mia a gift.", "Tom got a gift.", "Mia got a gift."),
]
ENTITY = {  # file -> [(numops, prefix, options)]
    "regular": [
        (0, "Box 1 contains the key. Box 2 contains the hat. Box 1 contains ", ["the key", "the hat", "nothing", "the key and the hat", "the stone"]),
        (0, "Box 1 contains the cup. Box 2 contains nothing. Box 2 contains ", ["nothing", "the cup", "the key", "the hat", "the cup and the key"]),
        (1, "Box 1 contains the key. Move the key into Box 2. Box 2 contains ", ["the key", "nothing", "the hat", "the stone", "the key and the hat"]),
    ],
    "ambiref": [
        (0, "Box 1 contains the key. Box 1 contains ", ["the key", "the key", "nothing", "the hat", "the stone"]),  # tie
        (2, "Box 1 contains the key. Move it to Box 2. Remove the key. Box 2 contains ", ["nothing", "the key", "the hat", "the stone", "the cup"]),
    ],
}
WUG = {
    "wug_adj_nominalization": [
        ("The man is blicky. He has blickiness.\tThe man is blicky. He has blickity.", 0.7),
        ("The cat is tarful. It has tarfulness.\tThe cat is tarful. It has tarfulity.", 0.9),
        ("The dog is sprable. It has sprableness.\tThe dog is sprable. It has sprability.", 0.2),
        ("The fox is glorpic. It has glorpicness.\tThe fox is glorpic. It has glorpicity.", 0.4),
    ],
    "wug_past_tense": [
        ("He blicked yesterday.\tHe black yesterday.", 0.8),
        ("He sprinked yesterday.\tHe sprank yesterday.", 0.3),
        ("He glorped yesterday.\tHe glorp yesterday.", 0.5),
    ],
}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_eval_data(root):
    """A fast_eval folder in the official layout; wug_past_tense as a folder, adj as a file."""
    fast = root / "evaluation_data" / "fast_eval"
    write_jsonl(
        fast / "blimp_fast" / "blimp.jsonl",
        [{"sentence_good": g, "sentence_bad": b, "UID": uid, "field": "syntax", "linguistics_term": "x"} for uid, g, b in BLIMP],
    )
    for stem, pairs in SUPPLEMENT.items():
        write_jsonl(fast / "supplement_fast" / f"{stem}.jsonl", [{"sentence_good": g, "sentence_bad": b} for g, b in pairs])
    write_jsonl(
        fast / "ewok_fast" / "ewok.jsonl",
        [
            {"Domain": d, "Context1": c1, "Context2": c2, "Target1": t1, "Target2": t2, "ContextType": "x", "ContextDiff": "x", "TargetDiff": "x"}
            for d, c1, c2, t1, t2 in EWOK
        ],
    )
    for stem, rows in ENTITY.items():
        write_jsonl(fast / "entity_tracking_fast" / f"{stem}.jsonl", [{"input_prefix": p, "options": o, "numops": n} for n, p, o in rows])
    write_jsonl(fast / "wug_adj_nominalization.jsonl", [{"sentences": s, "ratio": r} for s, r in WUG["wug_adj_nominalization"]])
    write_jsonl(fast / "wug_past_tense" / "wug_past_tense.jsonl", [{"sentences": s, "ratio": r} for s, r in WUG["wug_past_tense"]])
    return root / "evaluation_data"


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_checkpoint):
    return AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval(), AutoTokenizer.from_pretrained(tiny_checkpoint)


def hand(model, tok, context, completion):
    """log P(completion | context): one unpadded forward pass, BOS-conditioned first token,
    tokens whose span reaches into the completion (the official rule)."""
    enc = tok(context + completion, return_offsets_mapping=True)
    ids = enc["input_ids"]
    assert ids[0] == tok.bos_token_id
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
    return sum(logp[i - 1, ids[i]].item() for i, (_, end) in enumerate(enc["offset_mapping"]) if i > 0 and end > len(context))


def verdict(scores):
    """(official correct, tie) for candidate scores with the right answer first; asserts
    that a non-tie is not a near-tie, so float noise cannot flip the comparison."""
    best_wrong = max(scores[1:])
    tie = scores[0] == best_wrong
    assert tie or abs(scores[0] - best_wrong) > 1e-3
    return scores[0] >= best_wrong, tie


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def expect_from_groups(groups):
    """groups: list of lists of (correct, tie) -> macro-averaged expected numbers."""
    acc = mean(100 * mean(c for c, _ in g) for g in groups)
    strict = mean(100 * mean(c and not t for c, t in g) for g in groups)
    ties = mean(mean(t for _, t in g) for g in groups)
    return acc, strict, ties


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint, tmp_path_factory):
    root = write_eval_data(tmp_path_factory.mktemp("data"))
    cfg = ExperimentConfig()
    cfg.evaluate.data_dir = str(root)
    cfg.evaluate.stories = 0
    cfg.evaluate.probe_items = 12
    cfg.evaluate.batch_size = 4  # several batches, mixed lengths
    out = tmp_path_factory.mktemp("out")
    row = evaluate_checkpoint(cfg, Target("chck_0W", tiny_checkpoint, "pretrain", 0, 0, out), zero_shot.resolve_data_dir(root))
    return row, out


def check(result, expected):
    acc, strict, ties = expected
    assert result["accuracy"] == pytest.approx(acc, abs=1e-9)
    assert result["accuracy_ties_wrong"] == pytest.approx(strict, abs=1e-9)
    assert result["tie_rate"] == pytest.approx(ties, abs=1e-9)
    assert result["accuracy"] - result["accuracy_ties_wrong"] == pytest.approx(100 * result["tie_rate"])


def test_blimp_macro_average_over_uids(evaluated, model_and_tokenizer):
    model, tok = model_and_tokenizer
    by_uid = {}
    for uid, good, bad in BLIMP:
        by_uid.setdefault(uid, []).append(verdict([hand(model, tok, "", good), hand(model, tok, "", bad)]))
    result = evaluated[0]["tasks"]["blimp"]
    check(result, expect_from_groups(list(by_uid.values())))
    assert result["n"] == 4
    assert result["tie_rate"] > 0  # the identical pair is a tie, counted both ways


def test_supplement_groups_by_file(evaluated, model_and_tokenizer):
    model, tok = model_and_tokenizer
    groups = [[verdict([hand(model, tok, "", g), hand(model, tok, "", b)]) for g, b in pairs] for pairs in SUPPLEMENT.values()]
    check(evaluated[0]["tasks"]["blimp_supplement"], expect_from_groups(groups))


def test_ewok_scores_target_after_context1(evaluated, model_and_tokenizer):
    model, tok = model_and_tokenizer
    by_domain = {}
    for d, c1, _c2, t1, t2 in EWOK:
        by_domain.setdefault(d, []).append(verdict([hand(model, tok, c1, " " + t1), hand(model, tok, c1, " " + t2)]))
    check(evaluated[0]["tasks"]["ewok"], expect_from_groups(list(by_domain.values())))


def test_entity_tracking_numops_then_files(evaluated, model_and_tokenizer):
    model, tok = model_and_tokenizer
    per_file = []
    for rows in ENTITY.values():
        by_numops = {}
        for n, prefix, options in rows:
            by_numops.setdefault(n, []).append(verdict([hand(model, tok, prefix, o) for o in options]))
        per_file.append(expect_from_groups(list(by_numops.values())))
    expected = tuple(mean(f[k] for f in per_file) for k in range(3))
    result = evaluated[0]["tasks"]["entity_tracking"]
    check(result, expected)
    assert result["tie_rate"] > 0  # ambiref's duplicated option


def test_wug_spearman_of_softmax(evaluated, model_and_tokenizer):
    model, tok = model_and_tokenizer
    for task, rows in WUG.items():
        probs = []
        for sentences, _ in rows:
            s = [hand(model, tok, "", x) for x in sentences.split("\t")]
            z = [math.exp(v) for v in s]
            probs.append(z[0] / sum(z))
        rho = spearmanr(probs, [r for _, r in rows])[0]
        result = evaluated[0]["tasks"][task]
        assert result["n"] == len(rows)
        assert result["spearman"] == pytest.approx(rho, abs=1e-9)


def item_scores(out, task):
    return [json.loads(line)["scores"] for line in (out / "tasks" / f"{task}.scores.jsonl").read_text().splitlines()]


def test_every_candidate_score_equals_hand_computation(evaluated, model_and_tokenizer):
    model, tok = model_and_tokenizer
    _, out = evaluated
    expected = {
        "blimp": [["", g, "", b] for _, g, b in BLIMP],
        "blimp_supplement": [["", g, "", b] for pairs in SUPPLEMENT.values() for g, b in pairs],
        "ewok": [[c1, " " + t1, c1, " " + t2] for _, c1, _, t1, t2 in EWOK],
        "entity_tracking": [[x for o in options for x in (p, o)] for stem in sorted(ENTITY) for _, p, options in ENTITY[stem]],
        "wug_adj_nominalization": [[x for c in s.split("\t") for x in ("", c)] for s, _ in WUG["wug_adj_nominalization"]],
        "wug_past_tense": [[x for c in s.split("\t") for x in ("", c)] for s, _ in WUG["wug_past_tense"]],
    }
    for task, rows in expected.items():
        want = [[hand(model, tok, r[i], r[i + 1]) for i in range(0, len(r), 2)] for r in rows]
        got = item_scores(out, task)
        assert len(got) == len(want), task
        for g, w in zip(got, want):
            assert g == pytest.approx(w, abs=1e-4), task


def test_details_written_without_text(evaluated):
    row, out = evaluated
    details = json.loads((out / "tasks" / "ewok.json").read_text())
    assert set(details["breakdown"]) == {"physical", "social"}
    lines = (out / "tasks" / "ewok.scores.jsonl").read_text().splitlines()
    assert len(lines) == len(EWOK)
    assert "table" not in "".join(lines)  # no sentences copied out of licensed data


def test_absent_tasks_are_absent_not_zero(tiny_checkpoint, tmp_path):
    write_jsonl(tmp_path / "data" / "blimp_filtered" / "x.jsonl", [{"sentence_good": "A fox.", "sentence_bad": "Fox a.", "UID": "x"}])
    cfg = ExperimentConfig()
    cfg.evaluate.stories = 0
    cfg.evaluate.probe_items = 0
    row = evaluate_checkpoint(cfg, Target("c", tiny_checkpoint, "pretrain", 0, 0, tmp_path / "out"), tmp_path / "data")
    assert row["tasks"]["blimp"]["n"] == 1
    for task in ("blimp_supplement", "ewok", "entity_tracking", "wug_adj_nominalization", "wug_past_tense", "storyworld_entity_tracking"):
        assert row["tasks"][task]["absent"] is True
        assert "accuracy" not in row["tasks"][task]
    row = evaluate_checkpoint(cfg, Target("c", tiny_checkpoint, "pretrain", 0, 0, tmp_path / "out2"), None)
    assert all(v.get("absent") for v in row["tasks"].values())


def test_data_dir_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        zero_shot.resolve_data_dir(tmp_path / "missing")
    bad = tmp_path / "bad" / "blimp_filtered"
    bad.mkdir(parents=True)
    (bad / "x.jsonl").write_text('{"sentence_good": "A fox."}\n')
    with pytest.raises(UserError, match="sentence_bad"):
        zero_shot.read_items("blimp", sorted(bad.glob("*.jsonl")))


def test_suite_choice(tmp_path):
    for suite in ("fast", "full"):
        write_jsonl(tmp_path / "evaluation_data" / f"{suite}_eval" / "ewok_x" / "a.jsonl", [])
    assert zero_shot.resolve_data_dir(tmp_path).name == "fast_eval"
    assert zero_shot.resolve_data_dir(tmp_path, "full").name == "full_eval"
    assert zero_shot.resolve_data_dir(tmp_path / "evaluation_data" / "full_eval").name == "full_eval"


# --------------------------------------------------------------------------- ties and the probe
def constant_scorer(requests, progress=None, group_sizes=None):
    return [-1.0] * len(requests)


@pytest.mark.parametrize("task", ["blimp", "storyworld_entity_tracking"])
def test_constant_scorer_gets_no_credit_from_ties(task):
    if task == "blimp":
        items = [zero_shot.Item(["", ""], [g, b], uid, "f", i) for i, (uid, g, b) in enumerate(BLIMP)]
    else:
        items = zero_shot.probe_items(24, seed=10_000)
    result = zero_shot.evaluate_items(task, items, constant_scorer).summary
    assert result["accuracy"] == 100.0  # the official convention: the tie goes to index 0
    assert result["accuracy_ties_wrong"] == 0.0
    assert result["tie_rate"] == 1.0


def test_probe_answers_match_generator_states():
    from onceupon.corpus.storyworld import apply_event, generate_story
    from onceupon.corpus.storyworld_probe import PROBE_MAX_EVENTS, PROBE_MIN_EVENTS, entity_tracking_probe

    raw = entity_tracking_probe(36, seed=123)
    items = zero_shot.probe_items(36, seed=123)
    assert {r["numops"] for r in raw} == set(range(6))
    for r, item in zip(raw, items):
        story = generate_story(r["story_seed"], PROBE_MIN_EVENTS, PROBE_MAX_EVENTS)
        state = story.initial
        for event in story.events[: r["n_events"]]:
            state = apply_event(state, event)  # replay the world, independently of the probe
        truth = story.contents_phrase(state.holders[r["container"]])
        assert item.completions[0] == truth
        assert truth not in item.completions[1:] and len(set(item.completions)) == 5
        assert item.contexts[0] == r["input_prefix"] and item.uid == f"storyworld_{r['numops']}_ops"
        changes = sum(1 for e in story.events[: r["n_events"]] if r["container"] in (e.source, e.target) and e.obj)
        assert changes == r["numops"]


def test_probe_task_in_results(evaluated):
    result = evaluated[0]["tasks"]["storyworld_entity_tracking"]
    assert result["n"] == 12 and 0 <= result["accuracy_ties_wrong"] <= result["accuracy"] <= 100
