"""Rollouts: the student tells a whole batch of stories at once, and we score its tokens.

Generation samples the whole batch in one ``generate`` call with the KV cache (the reference
code sampled 360 stories in chunks of 4). Prompts are left padded so every story continues
right where its prompt ends; a story ends at its first end-of-sequence token or after
``max_new_tokens``.

Layout of a batch (B stories, prompt width P, response width T)::

    sequences       [B, P+T]  <pad>..<s> prompt | response tokens (first EOS kept) <pad>..
    attention_mask  [B, P+T]  0 on the left padding, 1 everywhere else
    response_mask   [B, T]    1 on the response tokens up to and including the first EOS

The response mask is where losses live. ``response_forward`` recomputes log-probabilities of
the response tokens with explicit position ids, so a left-padded story is scored exactly as it
was sampled (and exactly as it would be alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList

from onceupon.errors import UserError
from onceupon.words import count_words


@dataclass
class Rollout:
    prompts: list[str]
    sequences: torch.Tensor
    attention_mask: torch.Tensor
    prompt_width: int
    response_mask: torch.Tensor
    continuations: list[str]  # cleaned text: no special tokens, nothing after the first EOS
    n_words: list[int]  # words of each continuation (the project's word counter)
    ended: list[bool]  # True when the story stopped at an EOS token
    finite: bool = True  # False when the model's logits were NaN or +inf at some token (divergence)

    def __len__(self) -> int:
        return len(self.prompts)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token (left padding skipped)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def generate_rollout(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    chunk: int | None = None,
    context_length: int | None = None,
) -> Rollout:
    """Sample one continuation per prompt (in one call, or in chunks of ``chunk`` stories)."""
    device = next(model.parameters()).device
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    prompt_ids = enc["input_ids"].to(device)
    prompt_mask = enc["attention_mask"].to(device)
    width = prompt_ids.shape[1]
    if context_length is not None and width + max_new_tokens > context_length:
        raise UserError(
            f"A prompt of {width} tokens plus {max_new_tokens} new tokens exceeds the student's context "
            f"of {context_length} tokens; shorten the prompts or interact.max_new_tokens."
        )
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad is None:
        pad = eos
    sampling = dict(
        do_sample=True,
        temperature=temperature,
        # 0 switches each filter off (pure sampling); transformers reads None as "use the default".
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    guard = FiniteLogits()
    sampling["logits_processor"] = LogitsProcessorList([guard])
    responses = _sample(model, prompt_ids, prompt_mask, sampling, chunk or len(prompts))
    responses, response_mask, first_eos, has_eos = _cut_at_first_eos(responses, eos, pad)
    t_max = responses.shape[1]
    continuations = []
    for i in range(len(prompts)):
        text_len = int(first_eos[i]) if has_eos[i] else t_max
        continuations.append(tokenizer.decode(responses[i, :text_len].tolist(), skip_special_tokens=True))
    sequences = torch.cat([prompt_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(responses)], dim=1)
    return Rollout(
        prompts=list(prompts),
        sequences=sequences,
        attention_mask=attention_mask,
        prompt_width=width,
        response_mask=response_mask,
        continuations=continuations,
        n_words=[count_words(c) for c in continuations],
        ended=[bool(x) for x in has_eos.tolist()],
        finite=guard.finite,
    )


class FiniteLogits(LogitsProcessor):
    """Notes logits that are NaN or +inf (a diverged model) and samples such a row uniformly
    instead, so sampling does not fail (``torch.multinomial`` raises on CPU, and on a GPU a
    device-side assert ruins the process); the caller reads :attr:`finite` once at the end.
    ``-inf`` is an ordinary masked token, not a fault, unless a whole row is ``-inf``."""

    def __init__(self):
        self._bad: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows = (torch.isnan(scores) | (scores == float("inf"))).any(-1) | (scores == float("-inf")).all(-1)
        self._bad = rows.any() if self._bad is None else self._bad | rows.any()
        return torch.where(rows[:, None], torch.zeros_like(scores), scores)

    @property
    def finite(self) -> bool:
        return self._bad is None or not bool(self._bad)


def _sample(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, sampling: dict, step: int) -> torch.Tensor:
    """The sampled tokens after each prompt, ``step`` stories per ``generate`` call, padded to
    the longest with ``sampling["pad_token_id"]`` -> [B, T]."""
    width, pad = prompt_ids.shape[1], sampling["pad_token_id"]
    was_training = model.training
    model.eval()
    pieces = []
    for start in range(0, prompt_ids.shape[0], step):
        out = model.generate(
            input_ids=prompt_ids[start : start + step],
            attention_mask=prompt_mask[start : start + step],
            **sampling,
        )
        pieces.append(out[:, width:])
    model.train(was_training)
    t_max = max(p.shape[1] for p in pieces)
    responses = torch.full((prompt_ids.shape[0], t_max), pad, dtype=torch.long, device=prompt_ids.device)
    row = 0
    for p in pieces:
        responses[row : row + p.shape[0], : p.shape[1]] = p
        row += p.shape[0]
    return responses


def _cut_at_first_eos(responses: torch.Tensor, eos: int, pad: int):
    """A response runs up to and including its first EOS; later tokens are generate's padding,
    set to pad so the stored sequences are unambiguous. Returns (responses, response mask,
    index of the first EOS (T where none), whether there is one)."""
    t_max = responses.shape[1]
    is_eos = responses == eos
    has_eos = is_eos.any(dim=1)
    first_eos = torch.where(has_eos, is_eos.float().argmax(dim=1), torch.full_like(has_eos, t_max, dtype=torch.long))
    lengths = torch.where(has_eos, first_eos + 1, first_eos)
    response_mask = (torch.arange(t_max, device=responses.device)[None, :] < lengths[:, None]).float()
    responses = torch.where(response_mask.bool(), responses, torch.full_like(responses, pad))
    return responses, response_mask, first_eos, has_eos


class PolicyWithValue(nn.Module):
    """The student's causal LM plus, for PPO, a scalar value head on its last hidden state.

    One module so that ``accelerate`` wraps both for data-parallel updates. ``forward``
    returns the response positions only: logits ``[B, T, V]`` (divided by the sampling
    temperature, so log-probabilities are those of the distribution actually sampled) and
    values ``[B, T]`` (the value of the state *before* each response token), or None.
    """

    def __init__(self, lm: nn.Module, with_value_head: bool):
        super().__init__()
        self.lm = lm
        hidden = lm.config.hidden_size if hasattr(lm.config, "hidden_size") else lm.config.n_embd
        self.value_head = nn.Linear(hidden, 1) if with_value_head else None

    def forward(self, sequences, attention_mask, prompt_width: int, temperature: float = 1.0):
        base = self.lm.base_model(
            input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids(attention_mask)
        )
        # The hidden state at position t predicts token t+1: responses start at prompt_width.
        hidden = base.last_hidden_state[:, prompt_width - 1 : -1]
        logits = self.lm.get_output_embeddings()(hidden).float()
        if temperature != 1.0:
            logits = logits / temperature
        values = None if self.value_head is None else self.value_head(hidden).squeeze(-1).float()
        return logits, values


def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) for each position: ``[B, T, V], [B, T] -> [B, T]``.

    ``logit - logsumexp`` needs no second ``[B, T, V]`` tensor, unlike a full log-softmax."""
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each position's next-token distribution: ``[B, T, V] -> [B, T]``."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def score_rollout(
    policy: nn.Module,
    rollout: Rollout,
    temperature: float,
    micro_batch_size: int | None = None,
    entropy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Log-probabilities, values (or None) and entropies (or None) of the response tokens."""
    n = len(rollout)
    step = micro_batch_size or n
    responses = rollout.sequences[:, rollout.prompt_width :]
    logps, values, ents = [], [], []
    for s in range(0, n, step):
        logits, v = policy(
            rollout.sequences[s : s + step], rollout.attention_mask[s : s + step], rollout.prompt_width, temperature
        )
        logps.append(logprobs_of(logits, responses[s : s + step]))
        if entropy:
            ents.append(entropy_of(logits))
        if v is not None:
            values.append(v)
    return torch.cat(logps), (torch.cat(values) if values else None), (torch.cat(ents) if ents else None)
