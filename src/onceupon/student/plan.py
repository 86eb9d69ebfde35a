"""The pretraining plan: which packed sequences every optimizer step trains on, and exactly
how many words have been seen after each step.

The plan is a pure function of the packed data, the seed and the config, computed before the
first step. That is what makes word accounting exact without any communication between
processes, and what lets a resumed run continue at exactly the step where it stopped.

Data order: epoch ``e`` visits every sequence once, in a permutation drawn from
``seed + e`` (or in corpus order with ``shuffle: false``); epochs follow each other without a
gap, so a global batch may straddle two epochs. A global batch is
``batch_size x grad_accum x processes`` sequences.

Stopping: the target is ``epochs x corpus words`` (rounded down), lowered to ``max_words``
when that is smaller. Training stops after the first step whose words seen reach the target;
the last step may therefore overshoot a ``max_words`` target by less than one step's words,
and the exact count is recorded. With a whole number of epochs (and no lower ``max_words``)
the stream ends exactly at the target, the last step being a short one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from onceupon.errors import UserError


@dataclass
class Plan:
    order: np.ndarray  # sequence index for each position of the training stream
    global_batch: int  # sequences per optimizer step
    n_steps: int
    words_after: np.ndarray  # (n_steps,) exact words seen after each step (repeats counted)
    tokens_after: np.ndarray  # (n_steps,) real tokens seen after each step
    target_words: int

    def step_sequences(self, step: int) -> np.ndarray:
        """Sequence indices of optimizer step ``step`` (0-based); the last may be short."""
        return self.order[step * self.global_batch : (step + 1) * self.global_batch]

    def words_before(self, step: int) -> int:
        return int(self.words_after[step - 1]) if step > 0 else 0


def word_target(corpus_words: int, epochs: float, max_words: int | None) -> int:
    """Words to train on: ``epochs x corpus words`` rounded down, lowered to ``max_words``.
    Pretraining calls this as soon as the corpus is known, before any tokenizer is trained."""
    if corpus_words == 0:
        raise UserError("The corpus has no words to train on.")
    target = int(math.floor(epochs * corpus_words))
    if max_words is not None:
        target = min(target, max_words)
    if target <= 0:
        raise UserError(
            f"The word target is zero (pretrain.epochs={epochs:g} of {corpus_words:,} corpus words"
            + (f", pretrain.max_words={max_words}" if max_words is not None else "")
            + "): raise pretrain.epochs or pretrain.max_words."
        )
    return target


def make_plan(
    seq_words: np.ndarray,
    seq_tokens: np.ndarray,
    *,
    epochs: float,
    max_words: int | None,
    global_batch: int,
    seed: int,
    shuffle: bool = True,
) -> Plan:
    n_seq = len(seq_words)
    corpus_words = int(seq_words.sum())
    target = word_target(corpus_words, epochs, max_words)

    n_epochs = math.ceil(target / corpus_words)
    parts = []
    for epoch in range(n_epochs):
        if shuffle:
            parts.append(np.random.default_rng([seed, epoch]).permutation(n_seq))
        else:
            parts.append(np.arange(n_seq))
    order = np.concatenate(parts)

    words_cum = np.cumsum(seq_words[order])
    # The stream position after which the target is reached, then rounded up to a whole step.
    last_position = int(np.searchsorted(words_cum, target, side="left"))
    n_steps = last_position // global_batch + 1
    order = order[: min(len(order), n_steps * global_batch)]
    step_ends = np.minimum(np.arange(1, n_steps + 1) * global_batch, len(order)) - 1
    tokens_cum = np.cumsum(seq_tokens[order].astype(np.int64))
    return Plan(
        order=order,
        global_batch=global_batch,
        n_steps=n_steps,
        words_after=words_cum[step_ends],
        tokens_after=tokens_cum[step_ends],
        target_words=target,
    )
