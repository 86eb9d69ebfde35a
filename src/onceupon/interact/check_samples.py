"""Stories the start checkpoint tells before the run, for the teacher check's second probe set.

Storyworld probes say whether a teacher judges storyworld's stories; RL aims at the stories
the student tells. So before the first step the student tells :data:`STORIES` stories from
the run's own prompts, with the run's own sampling settings (the same rollout code as every
step), and the teacher check builds probes from those as well (teacher/before_run.py). The
sampling is seeded by ``interact.seed`` and leaves the run's random state as it was.
"""

from __future__ import annotations

from onceupon.config import InteractConfig
from onceupon.tracking import progress_bar

#: stories told for the check: about 40 of a trained student's are long enough to probe
STORIES = 64


def sample_for_check(model, tokenizer, prompts: list[str], c: InteractConfig, context_length: int | None = None) -> list[tuple[str, str]]:
    """(prompt, continuation) for :data:`STORIES` stories of the student, prompts dealt in turn."""
    import torch

    from onceupon.interact.rollout import generate_rollout

    chunk = c.generation_chunk or min(16, STORIES)
    dealt = [prompts[i % len(prompts)] for i in range(STORIES)]
    out: list[tuple[str, str]] = []
    with torch.random.fork_rng(devices=[]), torch.no_grad(), progress_bar("stories") as bar:
        torch.manual_seed(c.seed)
        task = bar.add_task("teacher check: the student tells", total=STORIES)
        for i in range(0, STORIES, chunk):
            part = dealt[i : i + chunk]
            rollout = generate_rollout(
                model, tokenizer, part, max_new_tokens=c.max_new_tokens, temperature=c.temperature,
                top_k=c.top_k, top_p=c.top_p, context_length=context_length,
            )  # fmt: skip
            out += list(zip(part, rollout.continuations))
            bar.advance(task, len(part))
    return out
