"""Batched log-probability scoring of completions with a causal language model.

Every zero-shot task asks one question many times: how likely does the model find this
*completion* after this *context*? The answer, exactly as in the official BabyLM 2025
pipeline, is the sum of the log-probabilities of the completion's tokens, where

- context and completion are tokenized together as one text, and a token belongs to the
  completion when its character span ends inside the completion (so " the" after a prefix
  that ends in a space counts to the completion, as officially);
- the first token of the text is scored given the begin-of-sequence token the tokenizer
  adds; a tokenizer without one leaves the first token unscored (as officially).

Speed comes from four things, none of which changes a score:

- requests that tokenize identically are scored once (this also makes identical sentences
  tie *exactly*, whatever the batch they land in);
- requests are sorted by length, so a batch holds sequences of similar length;
- padding goes on the right and is masked, so a causal model's real tokens never see it;
- when several candidates share their context (entity tracking's five options, EWoK's two
  targets), the context runs once and every candidate reuses its key/value cache.

Memory stays bounded whatever the task's size: requests are tokenized and scored in windows
of about :data:`WINDOW_REQUESTS` (whole items at a time), and every forward pass, cached
prefix included, holds at most ``batch_size * TOKENS_PER_ROW`` tokens.

A text of ``context + 1`` tokens fits whole: its last token is only predicted, never read as
input, so the model sees ``context`` positions (as in the official pipeline). Only longer text
keeps its last ``context + 1`` tokens (the completion) and is counted in
:attr:`Scorer.truncated` (requests) and :attr:`Scorer.truncated_groups` (items).
"""

from __future__ import annotations

import hashlib
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from onceupon.errors import UserError
from onceupon.student.model import context_length

#: (context, completion): the completion's tokens are scored, conditioned on the context.
Request = tuple[str, str]

#: Rows of a batch shrink for long sequences so that one batch never holds more than
#: ``batch_size * TOKENS_PER_ROW`` tokens (bounds the logits tensor: tokens x vocabulary).
TOKENS_PER_ROW = 128

#: Requests tokenized and held at once (rounded up to whole items): bounds the memory of a
#: task of any size (full BLiMP has over 100,000 sentences, entity tracking long contexts).
WINDOW_REQUESTS = 2048


@dataclass
class Encoded:
    """One tokenized request: token ids and which tokens are scored (never token 0)."""

    ids: list[int]
    scored: list[bool]
    cut: bool = False  # lost its first tokens to fit the context

    def key(self) -> bytes:
        """Identity of the token sequence (and which tokens count), compact enough to keep
        for every request of a task."""
        raw = array("l", self.ids).tobytes() + bytes(self.scored)
        return hashlib.blake2b(raw, digest_size=16).digest()

    @property
    def first_scored(self) -> int | None:
        for i, s in enumerate(self.scored):
            if s:
                return i
        return None


class Scorer:
    """Scores ``(context, completion)`` requests in batches on the model's device.

    ``score(requests)`` returns one float per request: the sum of the completion tokens'
    natural-log probabilities. ``progress(n)`` is called as requests finish.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        batch_size: int = 64,
        share_prefix: bool = True,
        max_length: int | None = None,
    ):
        if not getattr(tokenizer, "is_fast", False):
            raise UserError("Scoring needs a fast tokenizer (character offsets locate the completion's tokens).")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self.max_length = max_length or context_length(model)
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        #: how many requests were longer than the context (+1) and lost their first tokens,
        #: and in how many groups (items, when ``score`` is given ``group_sizes``).
        self.truncated = 0
        self.truncated_groups = 0
        #: tokens one forward pass may hold (rows x width), cached prefix included.
        self.max_tokens = batch_size * TOKENS_PER_ROW
        self._head = self._separable_head()

    @torch.inference_mode()
    def _separable_head(self):
        """The output layer, if logits are just it applied to the base model's last hidden
        state (checked on a probe input; true for GPT-2 and Llama). Then only the positions
        that score a token go through it, instead of every position of every padded row: the
        vocabulary projection is most of a small model's work. Otherwise None (full logits)."""
        head = self.model.get_output_embeddings()
        base = getattr(self.model, "base_model", None)
        if head is None or base is None or base is self.model:
            return None
        probe = torch.arange(2, 10, device=self.device).remainder(self.model.config.vocab_size).unsqueeze(0)
        try:
            full = self.model(input_ids=probe).logits
            split = head(base(input_ids=probe).last_hidden_state)
        except Exception:  # an architecture that does not split this way: stay generic
            return None
        return head if full.shape == split.shape and torch.allclose(full, split, atol=1e-5, rtol=1e-5) else None

    # ------------------------------------------------------------------ tokenization
    def encode(self, requests: Sequence[Request]) -> list[Encoded]:
        texts = [context + completion for context, completion in requests]
        out = self.tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True, verbose=False)
        encoded = []
        for (context, completion), ids, offsets in zip(requests, out["input_ids"], out["offset_mapping"]):
            start = len(context)
            # A token is scored when its span ends inside the completion; token 0 never is
            # (nothing precedes it). Special tokens have empty spans (0, 0) and never count.
            scored = [i > 0 and end > start for i, (_, end) in enumerate(offsets)]
            # The last token is only predicted, never read: context + 1 tokens fit whole.
            fits = self.max_length + 1
            cut = len(ids) > fits
            if cut:
                self.truncated += 1
                ids, scored = ids[-fits:], scored[-fits:]
                scored[0] = False
            encoded.append(Encoded(list(ids), scored, cut))
        return encoded

    # ------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def score(
        self,
        requests: Sequence[Request],
        progress: Callable[[int], None] | None = None,
        group_sizes: Sequence[int] | None = None,
    ) -> list[float]:
        """Log-probability of each request's completion.

        ``group_sizes`` optionally splits ``requests`` into consecutive groups (the candidates
        of one item: a minimal pair, five entity-tracking options). The tokens a group's
        candidates share at the start then run once. Without it, only requests with the same
        context share it.
        """
        sizes = list(group_sizes) if group_sizes is not None else [1] * len(requests)
        if sum(sizes) != len(requests):
            raise ValueError("group_sizes must add up to the number of requests")
        # Scores by token sequence, across windows: identical sentences are scored once and
        # tie exactly, whatever window or batch they land in.
        memo: dict[bytes, float] = {}
        scores: list[float] = []
        start = 0
        for window in self._windows(sizes):
            n = sum(window)
            part = requests[start : start + n]
            scores += self._score_window(part, window if group_sizes is not None else None, memo, progress)
            start += n
        return scores

    @staticmethod
    def _windows(sizes: list[int]) -> Iterator[list[int]]:
        """Group sizes, cut into windows of at least WINDOW_REQUESTS requests (whole groups)."""
        window: list[int] = []
        held = 0
        for size in sizes:
            window.append(size)
            held += size
            if held >= WINDOW_REQUESTS:
                yield window
                window, held = [], 0
        if window:
            yield window

    def _score_window(
        self,
        requests: Sequence[Request],
        group_sizes: list[int] | None,
        memo: dict[bytes, float],
        progress: Callable[[int], None] | None,
    ) -> list[float]:
        encoded = self.encode(requests)
        self._count_cut_groups(encoded, group_sizes)
        # Identical token sequences are scored once.
        unique: dict[bytes, int] = {}
        owner: list[int] = []
        rows: list[Encoded] = []
        for enc in encoded:
            key = enc.key()
            if key not in unique:
                unique[key] = len(rows)
                rows.append(enc)
            owner.append(unique[key])
        keys = list(unique)
        copies = [0] * len(rows)
        for u in owner:
            copies[u] += 1

        def done(indices: list[int]) -> None:
            if progress is not None:
                progress(sum(copies[i] for i in indices))

        done([i for i, k in enumerate(keys) if k in memo])  # scored in an earlier window
        todo = [i for i, k in enumerate(keys) if k not in memo]
        plain, shared = self._plan(rows, owner, group_sizes, todo)
        for batch in self._batches(plain, lambda i: len(rows[i].ids)):
            values, _ = self._run([rows[i].ids for i in batch], [rows[i].scored for i in batch])
            for i, v in zip(batch, values):
                memo[keys[i]] = v
            done(batch)
        for chunk in self._prefix_chunks(shared):
            for i, v in self._run_shared(rows, chunk):
                memo[keys[i]] = v
            done([i for _, members in chunk for i in members])
        return [memo[keys[u]] for u in owner]

    def _count_cut_groups(self, encoded: list[Encoded], group_sizes: list[int] | None) -> None:
        start = 0
        for size in group_sizes or [1] * len(encoded):
            self.truncated_groups += any(e.cut for e in encoded[start : start + size])
            start += size

    def _plan(
        self, rows: list[Encoded], owner: list[int], group_sizes: list[int] | None, todo: list[int]
    ) -> tuple[list[int], list[tuple[tuple, list[int]]]]:
        """Rows to run on their own, and groups of rows that share a prefix run.

        Rows whose first ``p`` tokens (and which of them are scored) agree share one prefix
        run; the prefix's last token runs again with each candidate (masked out of the
        cache), because its logits score the candidate's first own token."""
        shared_len = self._shared_lengths(rows, owner, group_sizes)
        groups: dict[tuple, list[int]] = defaultdict(list)
        plain: list[int] = []
        for i in todo:
            enc, p = rows[i], shared_len[i]
            if self.share_prefix and p >= 2:
                groups[(tuple(enc.ids[:p]), tuple(enc.scored[:p]))].append(i)
            else:
                plain.append(i)
        shared = []
        for key, members in groups.items():
            if len(members) > 1:
                shared.append((key, members))
            else:
                plain.extend(members)
        return plain, shared

    def _prefix_chunks(self, shared: list[tuple[tuple, list[int]]]) -> Iterator[list[tuple[tuple, list[int]]]]:
        """Prefix groups, longest first, in chunks whose cached keys and values stay within
        the token budget."""
        shared = sorted(shared, key=lambda g: len(g[0][0]), reverse=True)
        i = 0
        while i < len(shared):
            width = len(shared[i][0][0])
            n = max(1, min(self.batch_size, self.max_tokens // max(1, width)))
            yield shared[i : i + n]
            i += n

    def _run_shared(self, rows: list[Encoded], chunk: list[tuple[tuple, list[int]]]) -> Iterator[tuple[int, float]]:
        """Run a chunk's prefixes once, then every candidate from the cached prefix."""
        prefix_sums, cache = self._run([list(k[0]) for k, _ in chunk], [list(k[1]) for k, _ in chunk], keep_cache=True)
        cut = {i: len(key[0]) - 1 for key, members in chunk for i in members}
        group_of = {i: g for g, (_, members) in enumerate(chunk) for i in members}
        width = max(len(key[0]) for key, _ in chunk)
        # Each candidate row holds a copy of its prefix's cache (the chunk's width).
        for batch in self._batches(list(cut), lambda i: width + len(rows[i].ids) - cut[i]):
            values, _ = self._run(
                [rows[i].ids[cut[i] :] for i in batch],
                [rows[i].scored[cut[i] :] for i in batch],
                cache=cache,
                cache_rows=[group_of[i] for i in batch],
            )
            for i, v in zip(batch, values):
                yield i, prefix_sums[group_of[i]] + v

    @staticmethod
    def _shared_lengths(rows: list[Encoded], owner: list[int], group_sizes: Sequence[int] | None) -> list[int]:
        """For each unique row, how many leading tokens it shares with its group.

        Without groups: its context, i.e. the tokens before its first scored one."""
        if group_sizes is None:
            return [enc.first_scored or 0 for enc in rows]
        shared = [0] * len(rows)
        start = 0
        for size in group_sizes:
            members = sorted(set(owner[start : start + size]))
            start += size
            if len(members) < 2:
                continue
            seqs = [list(zip(rows[m].ids, rows[m].scored)) for m in members]
            p = 0
            while all(p < len(s) for s in seqs) and all(s[p] == seqs[0][p] for s in seqs):
                p += 1
            for m in members:
                shared[m] = max(shared[m], p)
        return shared

    def _batches(self, indices: list[int], length: Callable[[int], int]) -> list[list[int]]:
        """Length-sorted batches (longest first, so memory trouble shows at once)."""
        order = sorted(indices, key=length, reverse=True)
        batches, i = [], 0
        while i < len(order):
            rows = max(1, min(self.batch_size, self.max_tokens // max(1, length(order[i]))))
            batches.append(order[i : i + rows])
            i += rows
        return batches

    def _pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    def _run(
        self,
        seqs: list[list[int]],
        scored: list[list[bool]],
        *,
        cache: dict | None = None,
        cache_rows: list[int] | None = None,
        keep_cache: bool = False,
    ) -> tuple[list[float], dict | None]:
        """One forward pass over right-padded ``seqs`` (after a cached prefix, if given).

        Returns each sequence's sum of scored-token log-probabilities (token 0 of a sequence
        is never scored here: nothing in this pass predicts it) and, with ``keep_cache``, the
        keys and values for candidates to continue from: each row's last token is left out,
        as every candidate runs that token again.

        The last column is never fed to the model: position t predicts token t+1, so nothing
        reads the last token's output. This is what lets ``context + 1`` tokens fit.
        """
        ids, mask = self._pad(seqs)
        target = torch.zeros_like(mask, dtype=torch.bool)
        for r, s in enumerate(scored):
            target[r, : len(s)] = torch.tensor(s, dtype=torch.bool)
        wanted = target[:, 1:]  # input position t predicts token t+1
        inputs_ids, input_mask = ids[:, :-1], mask[:, :-1]
        if inputs_ids.shape[1] == 0:  # one-token rows: nothing to predict, nothing to cache
            return [0.0] * len(seqs), None
        steps = torch.arange(inputs_ids.shape[1], device=self.device)
        lengths = mask.sum(1)
        if cache is None:
            # Right padding under causal attention: real tokens never see the padding, so an
            # all-ones mask is exact (and keeps the fast causal attention path). A kept cache
            # must mask padding and each row's last real token (run again by its candidates).
            # (The dropped last column held only padding or such a last token.)
            keep = mask.clone()
            keep[torch.arange(len(seqs), device=self.device), lengths - 1] = 0
            keep = keep[:, :-1]
            past, attention, positions = None, (keep if keep_cache else torch.ones_like(input_mask)), steps.expand_as(inputs_ids)
        else:
            # Each candidate continues its own prefix: cache rows picked per candidate, the
            # prefix's padding (and its re-run last token) masked, positions continuing it.
            pick = torch.tensor(cache_rows, device=self.device)
            past = DynamicCache(ddp_cache_data=[(k[pick], v[pick]) for k, v in cache["layers"]])
            attention = torch.cat([cache["mask"][pick], input_mask], dim=1)
            # Padding slots of a row with a long prefix could run past the last position;
            # they are masked, so any valid position will do.
            positions = (cache["lengths"][pick].unsqueeze(1) + steps).clamp(max=self.max_length - 1)
        inputs = dict(
            input_ids=inputs_ids,
            attention_mask=attention,
            position_ids=positions,
            cache=past,
            use_cache=keep_cache or past is not None,
        )
        any_scored = bool(wanted.any())
        if self._head is not None:
            out = self.model.base_model(**inputs)
            logits_of = lambda: self._head(out.last_hidden_state[wanted])  # noqa: E731
        else:
            # Logits only where needed: none but the last for unscored contexts.
            out = self.model(**inputs, logits_to_keep=0 if any_scored else 1)
            logits_of = lambda: out.logits[wanted]  # noqa: E731
        sums = torch.zeros(len(seqs), dtype=torch.float64, device=self.device)
        if any_scored:
            picked = logits_of().float()
            tokens = ids[:, 1:][wanted]
            logprobs = picked.gather(1, tokens.unsqueeze(1)).squeeze(1) - torch.logsumexp(picked, dim=1)
            sums.index_add_(0, wanted.nonzero()[:, 0], logprobs.double())
        kept = None
        if keep_cache:
            kept = {
                "layers": [(layer.keys, layer.values) for layer in out.cache.layers],
                "mask": keep,
                "lengths": lengths - 1,
            }
        return sums.tolist(), kept
