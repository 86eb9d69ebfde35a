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
    # The context once; its last token runs with each candidate (its output scores the
    # candidate's first token), so the prefix pass stops just before it.
    assert widths[0] == (1, prefix_len - 1)
    assert len(widths) == 2 and widths[1][0] == 5 and widths[1][1] <= 8  # then five short rows
    widths.clear()
    # As one item's candidates, they also share " the" (the scorer is told the group).
    scorer.score([(context, o) for o in options], group_sizes=[5])
    assert widths[0] == (1, prefix_len)


def test_long_text_keeps_its_end(model_and_tokenizer):
    """Text longer than context + 1 tokens keeps its last context + 1 tokens: the model reads
    the first 16 of them and predicts the last 16, the completion among them."""
    model, tok = model_and_tokenizer
    scorer = Scorer(model, tok, max_length=16)
    long_context = "The fox went to the forest and met a kind bear. " * 4
    (score,) = scorer.score([(long_context, "The end.")], group_sizes=[1])
    assert scorer.truncated == 1 and scorer.truncated_groups == 1
    full = tok(long_context + "The end.")["input_ids"][-17:]
    n_completion = len(tok("The end.")["input_ids"]) - 1  # without its BOS
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([full[:-1]])).logits[0], dim=-1)
    expected = sum(logp[i - 1, full[i]].item() for i in range(17 - n_completion, 17))
    assert score == pytest.approx(expected, abs=1e-4)


def test_text_one_token_longer_than_the_context_is_scored_whole(tiny_checkpoint):
    """BOS + 16 tokens on a 16-position model: the last token is only predicted, so all 16
    positions the model has suffice, and the score is the whole sentence's (as the official
    pipeline, which never cuts, scores it), not a cut one's."""
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    sentence = "The fox went to the forest and met a kind bear and a red hat and a box."
    ids = tok(sentence)["input_ids"]
    context = len(ids) - 1
    torch.manual_seed(0)
    wide = AutoModelForCausalLM.from_pretrained(tiny_checkpoint).eval()  # more positions than needed
    assert wide.config.n_positions > len(ids)
    narrow_cfg = wide.config.__class__.from_dict({**wide.config.to_dict(), "n_positions": context})
    narrow = AutoModelForCausalLM.from_config(narrow_cfg).eval()
    state = wide.state_dict()
    state["transformer.wpe.weight"] = state["transformer.wpe.weight"][:context]
    narrow.load_state_dict(state)  # the same weights; only `context` positions

    with torch.no_grad():  # by hand: the whole sentence through the wide model, all tokens scored
        logp = torch.log_softmax(wide(torch.tensor([ids])).logits[0], dim=-1)
    by_hand = sum(logp[i - 1, ids[i]].item() for i in range(1, len(ids)))

    scorer = Scorer(narrow, tok)
    assert scorer.max_length == context
    one_longer, two_longer = scorer.score([("", sentence), ("", sentence + " The")], group_sizes=[1, 1])
    assert one_longer == pytest.approx(by_hand, abs=1e-4)
    assert scorer.truncated == 1 and scorer.truncated_groups == 1  # only the context + 2 text


def test_progress_counts_every_request(model_and_tokenizer):
    model, tok = model_and_tokenizer
    seen = []
    Scorer(model, tok, batch_size=2).score(REQUESTS, seen.append)
    assert sum(seen) == len(REQUESTS)


def test_memory_bounds_keep_every_score(model_and_tokenizer, monkeypatch):
    """Tokenizing a few requests at a time and capping the tokens of every forward pass (the
    cached prefix included) change no score, and duplicates in different windows still tie."""
    from onceupon.evaluate import scoring

    model, tok = model_and_tokenizer
    expected = Scorer(model, tok).score(REQUESTS, group_sizes=[2, 1, 2, 5, 1])
    monkeypatch.setattr(scoring, "WINDOW_REQUESTS", 3)
    scorer = Scorer(model, tok, batch_size=4)
    scorer.max_tokens = 60
    shapes = []
    original = model.base_model.forward

    def spy(*args, **kwargs):
        past = kwargs.get("cache")
        width = kwargs["input_ids"].shape[1] + (past.get_seq_length() if past is not None else 0)
        shapes.append((kwargs["input_ids"].shape[0], width))
        return original(*args, **kwargs)

    monkeypatch.setattr(model.base_model, "forward", spy)
    seen = []
    got = scorer.score(REQUESTS, seen.append, group_sizes=[2, 1, 2, 5, 1])
    assert got == pytest.approx(expected, abs=1e-4)
    assert got[0] == got[-1]  # the first and last windows: scored once, tie exactly
    assert sum(seen) == len(REQUESTS)
    longest = max(len(tok(c + x)["input_ids"]) for c, x in REQUESTS)
    assert len(shapes) > 4 and all(rows * width <= max(60, longest) for rows, width in shapes)
