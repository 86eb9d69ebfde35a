"""PPO for language models, as the classic TRL 0.9.4 ``PPOTrainer`` does it (the paper's setup).

Read top to bottom, one batch of stories:

1. Score the sampled tokens under the policy (old log-probs, values from the value head on
   the last hidden state) and under the frozen reference (the start checkpoint).
2. Per-token reward: ``-kl_coef * (logp_old - logp_ref)`` on every response token, plus the
   story's reward on its last token (the EOS, or the last token when the story was cut).
3. Advantages by GAE (``gamma``, ``lam``) over the response tokens, returns = advantages +
   values; advantages whitened over the batch's tokens.
4. ``epochs`` passes of shuffled minibatches: clipped policy loss (``cliprange``) plus
   ``vf_coef`` times the clipped value loss (``cliprange_value``), one Adam step each.
5. The adaptive controller moves ``kl_coef`` toward the KL ``target``, with the batch's mean
   KL (summed over each story's tokens).

Every hyperparameter lives in :class:`onceupon.config.InteractConfig` with the paper's default.
Differences from TRL 0.9.4, all deliberate: the student's dropout is off during RL (TRL leaves
a loaded model in eval mode too, but keeps dropout in its value head; here the value head is a
plain linear layer), log-probabilities use explicit position ids so a left-padded story is
scored as it was sampled, and logits are divided by the sampling temperature.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from onceupon.config import InteractConfig
from onceupon.interact.kl import KLController
from onceupon.interact.update import (
    Experience,
    UpdateResult,
    clipped_policy_loss,
    gathered_sum,
    masked_mean,
    masked_sum,
    masked_whiten,
    optimise,
)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over response tokens -> (advantages, returns)."""
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    last = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    return advantages, advantages + values


class PPO:
    name = "ppo"
    group_size = 1  # one story per prompt: the value head is the baseline
    needs_value_head = True

    def __init__(self, cfg: InteractConfig):
        self.cfg = cfg
        self.kl = KLController(cfg.init_kl_coef, cfg.adaptive_kl, cfg.target_kl, cfg.kl_horizon)

    @property
    def kl_coef(self) -> float:
        return self.kl.value

    def token_rewards(self, scores, old_logprobs, ref_logprobs, mask):
        """KL penalty on every token, the story's reward added on its last response token."""
        kl = (old_logprobs - ref_logprobs) * mask
        rewards = -self.kl.value * kl
        last = (mask.cumsum(1) * mask).argmax(1)  # index of the last response token
        rows = torch.arange(mask.shape[0], device=mask.device)
        rewards[rows, last] += scores * (mask.sum(1) > 0)
        return rewards, kl

    def loss(self, part: Experience, logprobs, vpreds, n_tok):
        c = self.cfg
        pg_loss = clipped_policy_loss(part, logprobs, c.cliprange, n_tok)
        v_clipped = part.values + torch.clamp(vpreds - part.values, -c.cliprange_value, c.cliprange_value)
        vf1 = (vpreds - part.returns) ** 2
        vf2 = (v_clipped - part.returns) ** 2
        vf_loss = 0.5 * masked_sum(torch.max(vf1, vf2), part.mask) / n_tok
        stats = {
            "loss/policy": (pg_loss * n_tok).item(),
            "loss/value": (vf_loss * n_tok).item(),
            "value/clipfrac": masked_sum((vf2 > vf1).float(), part.mask).item(),
            "policy/approx_kl": masked_sum(0.5 * (logprobs - part.old_logprobs).detach() ** 2, part.mask).item(),
        }
        return pg_loss + c.vf_coef * vf_loss, stats

    def update(self, policy, optimizer, exp: Experience, accelerator=None) -> UpdateResult:
        """One PPO update (steps 2-5 above) on a scored batch."""
        c = self.cfg
        mask = exp.mask
        rewards, kl = self.token_rewards(exp.rewards, exp.old_logprobs, exp.ref_logprobs, mask)
        advantages, returns = gae(rewards, exp.values, mask, c.gamma, c.lam)
        advantages = masked_whiten(advantages, mask).detach()
        train = replace(exp, advantages=advantages, values=exp.values * mask, returns=returns.detach())
        stats = optimise(policy, optimizer, train, self.loss, c, accelerator=accelerator)
        n_local = float(exp.include.sum())
        kl_per_story = (kl.sum() / exp.include.sum().clamp(min=1)).item()  # summed over each story's tokens
        metrics = {"kl/mean": kl_per_story, "kl/coef": self.kl.value, **stats}
        metrics["value/returns"] = masked_mean(returns, mask).item()
        metrics["value/mean"] = masked_mean(exp.values, mask).item()
        # The controller adapts to the whole batch's mean KL (every process's stories).
        n_all = gathered_sum(n_local, accelerator)
        self.kl.update(gathered_sum(kl_per_story * n_local, accelerator) / n_all, int(n_all))
        return UpdateResult(metrics, exp.include)

    def state_dict(self) -> dict:
        return {"kl": self.kl.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.kl.load_state_dict(state["kl"])
