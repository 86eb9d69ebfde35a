"""The word budget of an interaction run, per the BabyLM interaction-track rules.

Two counters, both counted with :func:`onceupon.words.count_words`:

* **input words**: words *shown* to the student. The words of a prompt, counted once per
  distinct prompt (``count_prompt="once"``, the paper's accounting) or every time a story
  starts from it (``"per_episode"``), plus every word of the teacher's reply to each story
  (the paper's "2 1 3" answer is 3 words). Checked against ``input_budget``.
* **generated words**: words of the student's continuations. Checked against
  ``generation_budget``.

Neither is ever exceeded. How the last batch is cut to fit: the batch is generated and rated
as usual (a reply's length is only known once the teacher has answered); then stories are
*admitted* in batch order, one group at a time (a group is one story for ``ppo``, the
``group_size`` stories of one prompt for ``rloo``/``grpo``, whose baseline needs the whole
group), as long as the admitted stories' input and generated words still fit both budgets.
The first group that does not fit ends the admission, even if a later one would fit. Stories
that are not admitted never happened as far as the run is concerned: they are not counted,
not trained on and not written to the anthology. A batch that was cut ends the run:
:attr:`Budget.done` says when the run is over as far as words go.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from onceupon.words import count_words


def _key(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:16]


@dataclass
class Admission:
    """What a batch may add: its first ``n`` stories, and the words they cost."""

    n: int
    offered: int
    input_words: int  # prompt words + teacher words of the admitted stories
    prompt_words: int
    teacher_words: int
    generated_words: int
    new_prompts: list[str] = field(default_factory=list)

    @property
    def cut(self) -> bool:
        return self.n < self.offered


@dataclass
class Budget:
    input_budget: int
    generation_budget: int
    count_prompt: str = "once"
    input_words: int = 0
    prompt_words: int = 0
    teacher_words: int = 0
    generated_words: int = 0
    stories: int = 0
    seen_prompts: set[str] = field(default_factory=set)  # hashes of prompts already counted
    cut: bool = False  # the last batch did not fit whole: the budget cannot hold another group

    @property
    def input_left(self) -> int:
        return self.input_budget - self.input_words

    @property
    def generation_left(self) -> int:
        return self.generation_budget - self.generated_words

    @property
    def spent(self) -> bool:
        return self.input_left <= 0 or self.generation_left <= 0

    @property
    def done(self) -> bool:
        """No further batch: a budget is spent, or the last batch had to be cut to fit."""
        return self.spent or self.cut

    def admit(self, prompts: list[str], replies: list[str], n_words: list[int], group_size: int = 1) -> Admission:
        """The longest prefix of whole groups that fits both budgets (nothing is committed)."""
        seen = set(self.seen_prompts)
        used_in = used_gen = p_words = t_words = 0
        new_prompts: list[str] = []
        admitted = 0
        for start in range(0, len(prompts), group_size):
            g_prompt = g_teacher = g_gen = 0
            g_new: list[str] = []
            for i in range(start, min(start + group_size, len(prompts))):
                key = _key(prompts[i])
                if self.count_prompt == "per_episode" or key not in seen:
                    g_prompt += count_words(prompts[i])
                    if key not in seen:
                        g_new.append(prompts[i])
                        seen.add(key)
                g_teacher += count_words(replies[i])
                g_gen += n_words[i]
            fits = (
                used_in + g_prompt + g_teacher <= self.input_left and used_gen + g_gen <= self.generation_left
            )
            if not fits:
                break
            used_in += g_prompt + g_teacher
            used_gen += g_gen
            p_words += g_prompt
            t_words += g_teacher
            new_prompts += g_new
            admitted = min(start + group_size, len(prompts))
        return Admission(admitted, len(prompts), used_in, p_words, t_words, used_gen, new_prompts)

    def commit(self, a: Admission) -> None:
        self.input_words += a.input_words
        self.prompt_words += a.prompt_words
        self.teacher_words += a.teacher_words
        self.generated_words += a.generated_words
        self.stories += a.n
        self.seen_prompts.update(_key(p) for p in a.new_prompts)
        self.cut = a.cut

    def state_dict(self) -> dict:
        return {
            "input_words": self.input_words,
            "prompt_words": self.prompt_words,
            "teacher_words": self.teacher_words,
            "generated_words": self.generated_words,
            "stories": self.stories,
            "seen_prompts": sorted(self.seen_prompts),
            "cut": self.cut,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("input_words", "prompt_words", "teacher_words", "generated_words", "stories"):
            setattr(self, key, int(state[key]))
        self.seen_prompts = set(state["seen_prompts"])
        self.cut = bool(state.get("cut", False))  # resume states written before it was kept here: see record.py
