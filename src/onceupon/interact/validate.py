"""What an interaction run checks before it writes anything, and the start checkpoint it loads.

Every mistake that can be seen from the output location, the settings, the start checkpoint and
the machine ends the command here, with one sentence, before anything is written into the run
directory (so the corrected command can use the same ``--out``): an output location that
cannot be used or that holds another kind of run (:func:`check_run_dir`, before the run lock),
settings pydantic cannot check field by field (:func:`validate`), a start checkpoint that is
missing or cannot be read (:func:`load_student`), prompts that leave no room in the student's
context for ``max_new_tokens`` and a student too big to train in this machine's memory
(:func:`check_fits`). :func:`unused_settings` names settings of the other algorithm, which the
run ignores (written as one line in the log).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from onceupon import preflight
from onceupon.config import InteractConfig
from onceupon.errors import UserError
from onceupon.interact.anthology import FILE as ANTHOLOGY_FILE
from onceupon.lifecycle.checkpoints import CheckpointMeta, read_meta
from onceupon.lifecycle.resume import check_new_run, check_resume
from onceupon.student.checkpoints import load_checkpoint_tokenizer, load_model
from onceupon.student.model import context_length

if TYPE_CHECKING:
    from onceupon.interact.objective import Objective

STATE_FILE = "state.json"  # the run's counters (record.py); with the anthology, marks an interaction run
RUN_MARKERS = (STATE_FILE, ANTHOLOGY_FILE)

#: settings only one family of algorithms reads (the rest are shared)
PPO_ONLY = ("init_kl_coef", "adaptive_kl", "target_kl", "kl_horizon", "cliprange_value", "vf_coef", "gamma", "lam")
GROUP_ONLY = ("group_size", "group_kl_coef")


@dataclass
class Student:
    """A loaded checkpoint: the tokenizer (left padding), the causal LM and its metadata."""

    path: Path
    tokenizer: object
    model: object
    meta: CheckpointMeta | None  # None: a plain transformers model (no pretraining words known)


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """The output location can be used and holds (``--resume``) or does not hold (a new run)
    an interaction run: cheap, nothing loaded, so it runs before the run lock."""
    if resume:
        check_resume(run_dir, "interact", STATE_FILE)
        preflight.output_dir(run_dir, "--resume")
    else:
        preflight.output_dir(run_dir)
        check_new_run(run_dir, "interact", RUN_MARKERS)


def unused_settings(c: InteractConfig) -> str | None:
    """One line naming the settings given (YAML or ``--set``) that ``interact.algorithm`` does
    not read, or None. Not an error: a config may keep both families' values at hand."""
    unused = [k for k in (GROUP_ONLY if c.algorithm == "ppo" else PPO_ONLY) if k in c.model_fields_set]
    if not unused:
        return None
    family = "rloo/grpo" if c.algorithm == "ppo" else "ppo"
    names = ", ".join(f"interact.{k}" for k in unused)
    return f"warning: {names} only apply to {family}; interact.algorithm={c.algorithm} ignores them."


def validate(c: InteractConfig, objective: Objective) -> None:
    """Configuration mistakes that pydantic's per-field checks cannot see."""
    if c.batch_size % objective.group_size:
        raise UserError(
            f"interact.batch_size ({c.batch_size}) must be a multiple of interact.group_size "
            f"({objective.group_size}) for {objective.name}."
        )
    if c.input_budget <= 0 or c.generation_budget <= 0:
        raise UserError("interact.input_budget and interact.generation_budget must be positive.")
    if c.checkpoint_every <= 0:
        raise UserError("interact.checkpoint_every must be a positive word count.")


def load_student(path: Path, fix: str = "copy or save that checkpoint again") -> Student:
    """Tokenizer, model and onceupon metadata of a checkpoint directory; a directory without a
    model, or weights that cannot be read (truncated, garbage), is one sentence ending in
    ``fix`` (what the user can do)."""
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UserError(f"Start checkpoint {path} is not a model directory (no config.json).")
    tokenizer = load_checkpoint_tokenizer(path, fix)
    model = load_model(path, fix)
    tokenizer.padding_side = "left"  # generation continues each prompt right where it ends
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        meta = read_meta(path)
    except UserError:
        meta = None
    return Student(path, tokenizer, model, meta)


def check_fits(c: InteractConfig, student: Student, prompts: list[str]) -> None:
    """The longest prompt plus ``max_new_tokens`` fits the student's context, and training the
    student cannot be known to exceed this machine's memory."""
    import torch

    context = context_length(student.model)
    width = max(len(ids) for ids in student.tokenizer(prompts)["input_ids"])
    if width + c.max_new_tokens > context:
        raise UserError(
            f"A prompt of {width} tokens plus {c.max_new_tokens} new tokens (interact.max_new_tokens) exceeds the "
            f"student's context of {context} tokens; shorten the prompts or interact.max_new_tokens."
        )
    mc = student.model.config
    needed = preflight.student_training_bytes(
        n_layer=mc.num_hidden_layers,
        n_embd=mc.hidden_size,
        context_length=width + c.max_new_tokens,
        vocab_size=mc.vocab_size,
        batch_size=c.micro_batch_size or c.mini_batch_size,
        learned_positions=getattr(mc, "n_positions", None) is not None,
    )
    preflight.memory_for(needed, "Interaction with this student and batch", on_gpu=torch.cuda.is_available())
