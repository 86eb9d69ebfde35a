"""A student checkpoint on disk: saving one (weights, tokenizer) and loading it back.

The directory itself (``onceupon.json``, ``trainer_state/``, atomic write, listing in order)
is the run machinery's: :mod:`onceupon.lifecycle.checkpoints`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from onceupon.errors import UserError
from onceupon.lifecycle.checkpoints import CheckpointMeta, write_checkpoint


def save_checkpoint(
    directory: str | Path,
    model,
    tokenizer,
    meta: CheckpointMeta,
    write_state: Callable[[Path], None] | None = None,
) -> Path:
    """Write model, tokenizer, metadata and (via ``write_state(dir)``) resume state atomically
    (a full disk is one sentence and leaves no partial directory)."""

    def write_files(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            from onceupon.student.tokenizer import save_tokenizer

            save_tokenizer(tokenizer, tmp)

    return write_checkpoint(directory, write_files, meta, write_state)


def load_model(directory: str | Path, fix: str, **kwargs):
    """``AutoModelForCausalLM.from_pretrained(directory, **kwargs)``; weights that cannot be read
    (a truncated copy, a garbage file, a missing shard) are one sentence ending in ``fix``, what
    the user can do. Every stage that loads a student goes through here."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"The checkpoint {directory} cannot be read ({_first_line(e)}); {fix}.") from None


def load_checkpoint_tokenizer(directory: str | Path, fix: str):
    """``AutoTokenizer.from_pretrained(directory)``, with the same one-sentence failure."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError) as e:
        raise UserError(f"The checkpoint {directory} cannot be read ({_first_line(e)}); {fix}.") from None


def check_weights(directory: str | Path, fix: str) -> None:
    """Refuse a checkpoint whose safetensors files cannot be read, before any work: reading
    each file's header is cheap and sees a truncated copy as well as a garbage file."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(Path(directory).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise UserError(f"The model weights {path} cannot be read ({_first_line(e)}); {fix}.") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
