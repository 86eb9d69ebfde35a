"""Small deterministic teachers for the interaction tests (no tests in here).

They implement the :class:`onceupon.teacher.base.Teacher` protocol with rules a tiny student
can learn, so a learning test can tell a working RL update from a broken one.
"""

from __future__ import annotations

import re

from onceupon.teacher.base import Rating, Story

KEYWORDS = {"the", "fox", "box", "bear", "a"}


class KeywordTeacher:
    """Rates a story by the share of its words that are common story words ("the", "fox", ...).

    One criterion, ``keywords``, scored 0..3 (a float); the reply is always three words
    ("<score> 0 0"), like the paper's teacher. Every ``invalid_every``-th story (by position
    in the batch, from 1) gets an unparseable answer instead, to exercise invalid ratings.
    """

    identity = "test:keywords"

    def __init__(self, invalid_every: int | None = None, reply_words: int = 3):
        self.invalid_every = invalid_every
        self.reply_words = reply_words
        self.calls = 0

    def rate(self, stories: list[Story]) -> list[Rating]:
        self.calls += 1
        out = []
        for i, s in enumerate(stories, 1):
            if self.invalid_every and i % self.invalid_every == 0:
                out.append(Rating(valid=False, raw="cannot rate this", error="unparseable"))
                continue
            words = [re.sub(r"[^a-z]", "", w.lower()) for w in s.continuation.split()]
            share = sum(w in KEYWORDS for w in words) / len(words) if words else 0.0
            value = round(3 * share, 4)
            raw = " ".join([f"{value}"] + ["0"] * (self.reply_words - 1))
            out.append(Rating(valid=True, raw=raw, scores={"keywords": value}, score=value / 3))
        return out

    def close(self) -> None:
        pass


def make_pretrained_micro(directory, steps: int = 150, seed: int = 0):
    """A gpt2-micro student trained for a few seconds on the conftest sentences, so it tells
    word-like stories (an untrained one babbles bytes, which gives a learning test no signal)."""
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import TINY_TEXTS, make_tiny_checkpoint
    from onceupon.lifecycle.checkpoints import CheckpointMeta
    from onceupon.student.checkpoints import save_checkpoint

    directory = Path(directory)
    base = make_tiny_checkpoint(directory.parent / (directory.name + "_untrained"), seed=seed)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    story = " ".join(TINY_TEXTS)
    texts = [story[i:] for i in range(0, 200, 7)]
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    meta = CheckpointMeta(name=directory.name, stage="pretrain", pretrain_words=steps * sum(len(t.split()) for t in texts))
    return save_checkpoint(directory, model, tok, meta)
