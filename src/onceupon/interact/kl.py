"""KL coefficient controllers for the per-token KL penalty (Ziegler et al. 2019, as in TRL 0.9.4).

The adaptive controller nudges the coefficient so the measured KL between the policy and the
reference (summed over a story's tokens, averaged over the batch) drifts toward ``target``:
the relative error is clipped to +-20 % and applied in proportion to the number of stories
seen, over ``horizon`` stories.
"""

from __future__ import annotations

import math


class KLController:
    def __init__(self, init_coef: float, adaptive: bool = True, target: float = 6.0, horizon: int = 10_000):
        self.value = float(init_coef)
        self.adaptive = adaptive
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_stories: int) -> None:
        """Adapt after a batch of ``n_stories`` whose mean KL was ``current_kl``."""
        if not self.adaptive or not math.isfinite(current_kl):
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_stories / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
