"""The batched scorer gives exactly the log-probabilities of a plain one-sentence forward pass."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from onceupon.evaluate.scoring import Scorer


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_checkpoint):
    return AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval(), AutoTokenizer.from_pretrained(tiny_checkpoint)


def hand_logprob(model, tok, context: str, completion: str) -> float:
    """One unpadded forward pass; sum of log-softmax gathered at the completion's tokens.

    As officially, the completion's tokens are the tokens of ``context + completion`` whose
    character span reaches into the completion (" the" after "contains " counts; a lone
    space token before it would not)."""
    enc = tok(context + completion, return_offsets_mapping=True)
    full = enc["input_ids"]
    assert full[0] == tok.bos_token_id  # the first real token is conditioned on BOS
    scored = [i for i, (_, end) in enumerate(enc["offset_mapping"]) if i > 0 and end > len(context)]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([full])).logits[0], dim=-1)
    return sum(logp[i - 1, full[i]].item() for i in scored)


REQUESTS = [
    ("", "The fox had a red box."),
    ("", "The fox have a red box."),
    ("", "Mia found a key under the old tree. She opened the door with it."),
    ("The bear gave the fox a blue hat.", " They became friends."),
    ("The bear gave the fox a blue hat.", " They became enemies."),
    ("Box 1 contains the key. Box 2 contains the hat. Box 1 contains ", "the key"),
    ("Box 1 contains the key. Box 2 contains the hat. Box 1 contains ", "the hat"),
    ("Box 1 contains the key. Box 2 contains the hat. Box 1 contains ", "nothing"),
    ("Box 1 contains the key. Box 2 contains the hat. Box 1 contains ", "the key and the hat"),
    ("Box 1 contains the key. Box 2 contains the hat. Box 1 contains ", "the stone"),
    ("", "The fox had a red box."),  # a duplicate: must tie exactly with the first
]


@pytest.mark.parametrize("share_prefix, batch_size", [(True, 1), (True, 3), (False, 3), (True, 64), (False, 64)])
def test_scores_equal_hand_computation(model_and_tokenizer, share_prefix, batch_size):
    model, tok = model_and_tokenizer
    expected = [hand_logprob(model, tok, c, x) for c, x in REQUESTS]
    scorer = Scorer(model, tok, batch_size=batch_size, share_prefix=share_prefix)
    got = scorer.score(REQUESTS)
    assert got == pytest.approx(expected, abs=1e-4)
    assert got[0] == got[-1]  # identical sentences tie exactly
    # Told which requests are one item's candidates, it shares their common start too.
    grouped = scorer.score(REQUESTS, group_sizes=[2, 1, 2, 5, 1])
    assert grouped == pytest.approx(expected, abs=1e-4)
    assert grouped[0] == grouped[-1]


def test_first_token_is_scored_given_bos(model_and_tokenizer):
    model, tok = model_and_tokenizer
    sentence = "The fox had a red box."
    ids = tok(sentence)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
    first = logp[0, ids[1]].item()  # P(first word | BOS)
    rest = sum(logp[i - 1, ids[i]].item() for i in range(2, len(ids)))
    (score,) = Scorer(model, tok).score([("", sentence)])
    assert score == pytest.approx(first + rest, abs=1e-4)
    assert abs(first) > 1e-2 and score != pytest.approx(rest, abs=1e-3)


def test_shared_context_runs_once(model_and_tokenizer, monkeypatch):
    """Five options after one long prefix: the prefix is one cached row, not five."""
    model, tok = model_and_tokenizer
    scorer = Scorer(model, tok, batch_size=64, share_prefix=True)
    widths = []

    def spy(*args, **kwargs):
        widths.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    # The scorer runs the base model and projects only scored positions itself.
    assert scorer._head is not None
    original = model.base_model.forward
    monkeypatch.setattr(model.base_model, "forward", spy)
    context = "Box 1 contains the key. Box 2 contains the hat. Box 1 contains "
    options = ["the key", "the hat", "the key and the hat", "the stone", "the hat and the stone"]
    scorer.score([(context, o) for o in options])
    prefix_len = len(tok(context.rstrip(" "))["input_ids"])
    assert widths[0] == (1, prefix_len)  # the context once
    assert len(widths) == 2 and widths[1][0] == 5 and widths[1][1] <= 8  # then five short rows
    widths.clear()
    # As one item's candidates, they also share " the" (the scorer is told the group).
    scorer.score([(context, o) for o in options], group_sizes=[5])
    assert widths[0] == (1, prefix_len + 1)


def test_long_text_keeps_its_end(model_and_tokenizer):
    model, tok = model_and_tokenizer
    scorer = Scorer(model, tok, max_length=16)
    long_context = "The fox went to the forest and met a kind bear. " * 4
    (score,) = scorer.score([(long_context, "The end.")])
    assert scorer.truncated == 1
    full = tok(long_context + "The end.")["input_ids"][-16:]
    n_completion = len(tok("The end.")["input_ids"]) - 1  # without its BOS
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([full])).logits[0], dim=-1)
    expected = sum(logp[i - 1, full[i]].item() for i in range(16 - n_completion, 16))
    assert score == pytest.approx(expected, abs=1e-4)


def test_progress_counts_every_request(model_and_tokenizer):
    model, tok = model_and_tokenizer
    seen = []
    Scorer(model, tok, batch_size=2).score(REQUESTS, seen.append)
    assert sum(seen) == len(REQUESTS)
