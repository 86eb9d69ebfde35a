"""Interactive learning: rollouts, rewards from teacher ratings, PPO/RLOO/GRPO, word budgets."""
