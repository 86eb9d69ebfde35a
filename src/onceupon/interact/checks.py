"""What an interaction run checks before it creates anything.

Every mistake that can be seen from the settings, the start checkpoint and the machine ends
the command here, with one sentence, before the run directory exists (so the corrected
command can use the same ``--out``): settings pydantic cannot check field by field, a start
checkpoint that is missing or cannot be read, prompts that leave no room in the student's
context for ``max_new_tokens``, and a student too big to train in this machine's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onceupon import preflight
from onceupon.config import InteractConfig
from onceupon.errors import UserError
from onceupon.interact.objective import Objective
from onceupon.lifecycle.checkpoints import CheckpointMeta, read_meta
from onceupon.student.checkpoints import load_checkpoint_tokenizer, load_model
from onceupon.student.model import context_length


@dataclass
class Student:
    """A loaded checkpoint: the tokenizer (left padding), the causal LM and its metadata."""

    path: Path
    tokenizer: object
    model: object
    meta: CheckpointMeta | None  # None: a plain transformers model (no pretraining words known)


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
