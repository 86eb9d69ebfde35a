"""The student's tokenizer: what evaluation, generation and the checkpoints rely on."""

import json
import random

import pytest
from transformers import AutoTokenizer

from onceupon.errors import UserError
from onceupon.student.tokenizer import BOS, EOS, MASK, PAD, UNK, save_tokenizer, train_tokenizer

TEXTS = [
    "Once upon a time, in a faraway land, there lived a little fox.",
    "The fox had a red box. She put a shiny stone in the box.",
    "Mia found a key under the old tree.  She opened the door with it!",
    "\"Where is the ball?\" asked Tom.\nIt was in the basket.",
    "Zoë ate crème brûlée at the café; 小狐狸 smiled. 🦊",
] * 30


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=600, min_frequency=2)


@pytest.mark.parametrize(
    "text",
    [
        "Once upon a time, in a faraway land,",
        "  leading spaces, double  spaces and a tab\there\n\nand blank lines ",
        "Zoë ate crème brûlée; 小狐狸 smiled 🦊 at never-seen wørds like qxzv.",
        "",
    ],
)
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_bos_is_added_and_nothing_else(tokenizer):
    ids = tokenizer("Once upon a time")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.convert_ids_to_tokens(ids[0]) == BOS
    assert tokenizer.eos_token_id not in ids
    assert ids.count(tokenizer.bos_token_id) == 1


def test_special_tokens_are_set_and_distinct(tokenizer):
    assert (tokenizer.bos_token, tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.mask_token) == (
        BOS,
        PAD,
        EOS,
        UNK,
        MASK,
    )
    ids = {tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, tokenizer.mask_token_id}
    assert len(ids) == 5 and None not in ids


def test_left_padding_keeps_prompts_flush_right(tokenizer):
    batch = tokenizer(["hi", "Once upon a time, in a faraway land,"], padding=True)
    short, long = batch["input_ids"]
    mask = batch["attention_mask"][0]
    assert len(short) == len(long)
    n_pad = mask.count(0)
    assert n_pad > 0 and mask[:n_pad] == [0] * n_pad and all(mask[n_pad:])
    assert short[:n_pad] == [tokenizer.pad_token_id] * n_pad
    assert short[n_pad] == tokenizer.bos_token_id  # BOS right after the padding, the prompt at the end


def test_save_and_load_with_autotokenizer(tokenizer, tmp_path):
    save_tokenizer(tokenizer, tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS[:5]:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.padding_side == "left"
    assert (loaded.bos_token, loaded.pad_token, loaded.eos_token) == (BOS, PAD, EOS)
    assert loaded.is_fast
    # A class name transformers 4 understands too (the official BabyLM pipeline uses it).
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    # Offsets are what the BabyLM evaluation needs from a fast tokenizer.
    enc = loaded("Once upon", return_offsets_mapping=True)
    assert enc["offset_mapping"][-1][1] == len("Once upon")


def test_vocabulary_size_is_honoured():
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 8))) for _ in range(3000)]
    texts = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(400)]
    for size in (300, 1000, 2000):
        assert len(train_tokenizer(texts, vocab_size=size, min_frequency=2)) == size
    # A corpus too small to fill the vocabulary gives fewer tokens, never more.
    assert len(train_tokenizer(["a tiny corpus"] * 3, vocab_size=2000, min_frequency=2)) < 2000


def test_min_frequency_is_honoured():
    texts = ["common common common"] * 10 + ["rareword"]
    tok = train_tokenizer(texts, vocab_size=1000, min_frequency=2)
    vocab = tok.get_vocab()
    assert "Ġcommon" in vocab or "common" in vocab
    assert "rareword" not in vocab  # seen once: below min_frequency


def test_empty_corpus_is_a_user_error():
    with pytest.raises(UserError, match="empty corpus"):
        train_tokenizer(["", "   ", "\n"], vocab_size=500)
