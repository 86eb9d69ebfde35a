"""Critic-free objectives: every prompt is told ``group_size`` times and the other stories of
the group serve as the baseline, so no value head is needed.

* ``rloo`` (REINFORCE leave-one-out, Ahmadian et al. 2024): advantage of story i = its reward
  minus the mean reward of the *other* stories of its group. With ``group_kl_coef`` > 0 the
  reward first loses ``group_kl_coef`` times the story's KL to the reference (summed over its
  tokens).
* ``grpo`` (group-relative, Shao et al. 2024): advantage = (reward - group mean) / (group
  std + 1e-4); with ``group_kl_coef`` > 0 the loss gains ``group_kl_coef`` times the per-token
  KL estimate ``exp(d) - d - 1`` with ``d = logp_ref - logp``.

Both optimise the same clipped surrogate as PPO (``cliprange``, ``epochs``, minibatches),
averaged over tokens. Only the valid stories of a group count: a group with fewer than two
valid stories has no baseline and is left out of the update.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from onceupon.config import InteractConfig
from onceupon.interact.update import Experience, UpdateResult, clipped_policy_loss, group_slices, masked_sum, optimise


def group_advantages(
    rewards: torch.Tensor, include: torch.Tensor, group_size: int, kind: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-story advantages [B] and ``include`` narrowed to the stories that keep a baseline
    (groups of >= 2 included stories)."""
    adv = torch.zeros_like(rewards)
    kept = torch.zeros_like(include)
    for sl in group_slices(len(rewards), group_size):
        valid = include[sl]
        k = int(valid.sum())
        if k < 2:
            continue
        r = rewards[sl][valid]
        if kind == "rloo":
            a = r - (r.sum() - r) / (k - 1)
        else:
            a = (r - r.mean()) / (r.std() + 1e-4)
        out = torch.zeros_like(rewards[sl])
        out[valid] = a
        adv[sl] = out
        kept[sl] = valid
    return adv, kept


class GroupObjective:
    """``rloo`` or ``grpo`` (``kind``): the group's other stories are the baseline."""

    needs_value_head = False
    kl_coef = None  # no adaptive KL penalty to record in checkpoint metadata

    def __init__(self, cfg: InteractConfig, kind: str):
        if kind not in ("rloo", "grpo"):
            raise ValueError(kind)
        self.cfg = cfg
        self.name = kind
        self.group_size = cfg.group_size

    def loss(self, part: Experience, logprobs, vpreds, n_tok):
        c = self.cfg
        pg_loss = clipped_policy_loss(part, logprobs, c.cliprange, n_tok)
        loss = pg_loss
        stats = {"loss/policy": (pg_loss * n_tok).item()}
        if self.name == "grpo" and c.group_kl_coef > 0:
            d = part.ref_logprobs - logprobs
            kl_term = masked_sum(torch.exp(d) - d - 1.0, part.mask) / n_tok
            loss = loss + c.group_kl_coef * kl_term
            stats["loss/kl"] = (kl_term * n_tok).item()
        return loss, stats

    def update(self, policy, optimizer, exp: Experience, accelerator=None) -> UpdateResult:
        c = self.cfg
        seq_kl = ((exp.old_logprobs - exp.ref_logprobs) * exp.response_mask).sum(1)
        rewards = exp.rewards
        if self.name == "rloo" and c.group_kl_coef > 0:
            rewards = rewards - c.group_kl_coef * seq_kl
        adv, include = group_advantages(rewards, exp.include, self.group_size, self.name)
        # Only stories with a baseline are learned from: they become the update's include mask.
        mask = exp.response_mask * include[:, None].float()
        train = replace(exp, include=include, advantages=adv[:, None].expand_as(mask).contiguous() * mask)
        stats = optimise(policy, optimizer, train, self.loss, c, accelerator=accelerator)
        n_kept = include.sum().clamp(min=1)
        metrics = {"kl/mean": ((seq_kl * include).sum() / n_kept).item(), "kl/coef": c.group_kl_coef, **stats}
        metrics["group/without_baseline"] = float((exp.include & ~include).sum())
        return UpdateResult(metrics, include)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
