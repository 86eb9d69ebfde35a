"""What every RL objective shares: the experience of one batch and the result of its update,
masked statistics, and the epoch/minibatch/micro-batch optimisation loop.

An excluded story has one shape everywhere: False in :attr:`Experience.include` (no score from
the teacher, not admitted by the budget, or, narrowed by the objective, a group without a
baseline). It stays in the batch with an all-zero mask: it then contributes nothing to any loss
or statistic, and every data-parallel process still runs the same number of forward/backward
passes. The anthology records it with a null reward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch

from onceupon.config import InteractConfig
from onceupon.interact.rollout import logprobs_of
from onceupon.lifecycle.divergence import all_finite, grad_norm

#: the metric that counts an update's gradient steps not applied for a non-finite loss or
#: gradient; the loop adds them up against ``interact.skip_nonfinite``
NONFINITE_STEPS = "update/skipped_nonfinite"


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries (unbiased variance, as TRL 0.9.4)."""
    n = mask.sum()
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if n > 1:
        var = var * n / (n - 1)
    return (x - mean) * torch.rsqrt(var + eps) * mask


@dataclass
class Experience:
    """One batch from rollout to update: the sampled stories, their scores under the policy and
    the reference, their rewards, and which of them may be learned from.

    ``include`` is the one exclusion mask: a story without a reward (invalid rating, failed
    request) or not admitted by the budget is False there, and its ``reward`` is 0. Objectives
    narrow it (a group without a baseline) and add ``advantages`` (and PPO's ``returns``) with
    :func:`dataclasses.replace` before :func:`optimise`. All tensors are on the training device.
    """

    sequences: torch.Tensor  # [B, P+T] left-padded prompt | response
    attention_mask: torch.Tensor  # [B, P+T]
    prompt_width: int  # P
    response_mask: torch.Tensor  # [B, T] response tokens, up to and including the first EOS
    old_logprobs: torch.Tensor  # [B, T] under the policy that sampled them
    ref_logprobs: torch.Tensor  # [B, T] under the frozen reference
    values: torch.Tensor | None  # [B, T] value head's estimates (objectives with a value head)
    rewards: torch.Tensor  # [B] the story rewards (0 where not included)
    include: torch.Tensor  # [B] bool: stories the update may learn from
    advantages: torch.Tensor | None = None  # [B, T] set by the objective
    returns: torch.Tensor | None = None  # [B, T] set by an objective with a value head

    @property
    def mask(self) -> torch.Tensor:
        """[B, T] the tokens losses are taken over: response tokens of included stories."""
        return self.response_mask * self.include[:, None].float()

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_width :]

    def select(self, idx: torch.Tensor) -> "Experience":
        """The stories at ``idx`` (a minibatch or micro-batch)."""
        rows = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v[idx] for k, v in rows.items() if isinstance(v, torch.Tensor)})


@dataclass
class UpdateResult:
    """What one update reports back to the loop."""

    metrics: dict[str, float]  # logged as they are: "loss/policy", "kl/mean", ...
    include: torch.Tensor  # [B] bool: Experience.include as the update used it (an objective may narrow it)


def clipped_policy_loss(part: Experience, logprobs: torch.Tensor, cliprange: float, n_tok: torch.Tensor) -> torch.Tensor:
    """The clipped surrogate (PPO's, shared by rloo/grpo), summed over tokens / ``n_tok``."""
    ratio = torch.exp(logprobs - part.old_logprobs)
    pg1 = -part.advantages * ratio
    pg2 = -part.advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    return masked_sum(torch.max(pg1, pg2), part.mask) / n_tok


#: loss(micro-batch experience, new log-probs, new values, tokens in the minibatch)
#:   -> (loss to backpropagate, {stat name: sum over the micro-batch's tokens})
LossFn = Callable[[Experience, torch.Tensor, torch.Tensor | None, torch.Tensor], tuple[torch.Tensor, dict]]


def optimise(
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    exp: Experience,
    loss_fn: LossFn,
    cfg: InteractConfig,
    accelerator=None,
) -> dict[str, float]:
    """``cfg.epochs`` passes over the batch in shuffled minibatches; one optimizer step per
    minibatch. A minibatch is processed in micro-batches whose losses are divided by the
    minibatch's token count, so the gradient equals that of the whole minibatch at once.

    A minibatch whose loss or gradient is not finite is not applied (no optimizer step) and
    left out of the statistics; :data:`NONFINITE_STEPS` counts them (lifecycle/divergence.py).

    Returns token-weighted means over all minibatches of the loss functions' statistics, plus
    the clip fraction, the mean ratio and the number of micro-batches skipped for an extreme
    ratio, all under the names they are logged with.
    """
    n, mini_batch_size = exp.sequences.shape[0], cfg.mini_batch_size
    micro = cfg.micro_batch_size or mini_batch_size
    totals: dict[str, float] = {}
    tokens_total = 0.0
    skipped = nonfinite = 0
    params = [p for p in policy.parameters() if p.requires_grad]
    for _ in range(cfg.epochs):
        order = torch.randperm(n).to(exp.sequences.device)
        for mb_start in range(0, n, mini_batch_size):
            mb_idx = order[mb_start : mb_start + mini_batch_size]
            n_tok = exp.mask[mb_idx].sum()
            optimizer.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            losses, mb_skipped = [], 0
            for mc_start in range(0, len(mb_idx), micro):
                part = exp.select(mb_idx[mc_start : mc_start + micro])
                stats, skip, loss = _micro_batch(policy, part, loss_fn, cfg, n_tok, accelerator)
                mb_skipped += skip
                losses.append(loss)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
            if cfg.max_grad_norm is None:
                norm = grad_norm(params)
            elif accelerator is not None:
                norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            else:
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            # Gradients are all-reduced, losses are not: every process must take the same decision.
            if gathered_sum(float(not all_finite(norm, *losses)), accelerator):
                optimizer.zero_grad(set_to_none=True)
                nonfinite += 1
                continue
            optimizer.step()
            skipped += mb_skipped
            tokens_total += float(n_tok)
            for k, v in sums.items():
                totals[k] = totals.get(k, 0.0) + v
    out = {k: v / max(tokens_total, 1.0) for k, v in totals.items()}
    out["policy/skipped_chunks"] = float(skipped)
    out[NONFINITE_STEPS] = float(nonfinite)
    return out


def _micro_batch(policy, part: Experience, loss_fn: LossFn, cfg: InteractConfig, n_tok: torch.Tensor, accelerator):
    """Forward and backward one micro-batch of a minibatch of ``n_tok`` tokens; returns its
    statistics (sums over its tokens), whether it was skipped for an extreme ratio, and its
    loss (detached)."""
    logits, vpreds = policy(part.sequences, part.attention_mask, part.prompt_width, cfg.temperature)
    logprobs = logprobs_of(logits, part.responses)
    ratio = torch.exp(logprobs - part.old_logprobs)
    # A wildly off-policy chunk would blow up the update: skip it (as TRL 0.9.4 does
    # per minibatch; here per micro-batch, the same thing by default).
    skip = bool(part.mask.sum() > 0 and masked_mean(ratio.detach(), part.mask) > cfg.ratio_threshold)
    loss, stats = loss_fn(part, logprobs, vpreds, n_tok.clamp(min=1))
    clipped = ((ratio < 1 - cfg.cliprange) | (ratio > 1 + cfg.cliprange)).float()
    stats["policy/clipfrac"] = masked_sum(clipped, part.mask).item()
    stats["policy/ratio"] = masked_sum(ratio.detach(), part.mask).item()
    if skip:
        loss = loss * 0.0
    if accelerator is not None:
        accelerator.backward(loss)
    else:
        loss.backward()
    return stats, skip, loss.detach()


def gathered_sum(value: float, accelerator=None) -> float:
    """``value`` summed over the data-parallel processes (``value`` itself without accelerate)."""
    if accelerator is None:
        return value
    from accelerate.utils import gather_object

    return sum(gather_object([value]))


def group_slices(n: int, group_size: int) -> list[slice]:
    return [slice(s, min(s + group_size, n)) for s in range(0, n, group_size)]
