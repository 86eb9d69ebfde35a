"""Checkpoints shared by pretraining and interaction.

A checkpoint is a directory ``RUN/checkpoints/chck_{N}M`` holding a transformers model and
tokenizer (``save_pretrained``; loadable with ``AutoModelForCausalLM``/``AutoTokenizer``), a
``onceupon.json`` describing it, and optionally a ``trainer_state/`` with what a resume needs
(optimizer, RNG, counters). It is written to a temporary directory and renamed into place, so
a directory with ``onceupon.json`` is always complete.

``onceupon.json`` fields (read by evaluate and report):
  name             checkpoint name, e.g. "chck_20M"
  stage            "pretrain" or "interact"
  pretrain_words   words of pretraining input seen by these weights (repeats counted)
  interact_words   words of interaction input seen (0 for pretraining checkpoints)
  generated_words  words the student generated during interaction (0 for pretraining)
  step             optimizer step (pretrain) or RL step (interact)
  start_checkpoint for interaction: path of the checkpoint the run started from
"""

from __future__ import annotations

import errno
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from onceupon.errors import UserError
from onceupon.files import atomic_write_json, fsync_dir, replace_dir

META_FILE = "onceupon.json"
STATE_DIR = "trainer_state"
RESUME_STATE = "state.pt"  # in STATE_DIR: what a resume needs beyond the weights (torch.save)


@dataclass
class CheckpointMeta:
    name: str
    stage: str
    pretrain_words: int
    interact_words: int = 0
    generated_words: int = 0
    step: int = 0
    start_checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    directory: str | Path,
    model,
    tokenizer,
    meta: CheckpointMeta,
    write_state: Callable[[Path], None] | None = None,
) -> Path:
    """Write model, tokenizer, metadata and (via ``write_state(dir)``) resume state atomically.

    A full disk is one sentence (:class:`UserError`) and leaves no partial directory behind:
    the writers report it in their own ways (torch: a ``RuntimeError`` about file positions),
    so any failure while the disk has no room left counts as one.
    """
    from safetensors import SafetensorError

    final = Path(directory)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            from onceupon.student.tokenizer import save_tokenizer

            save_tokenizer(tokenizer, tmp)
        if write_state is not None:
            state = tmp / STATE_DIR
            state.mkdir()
            write_state(state)
        # The metadata goes last: its presence marks the directory as complete.
        atomic_write_json(tmp / META_FILE, asdict(meta))
        fsync_dir(tmp)
    except (OSError, RuntimeError, SafetensorError) as e:
        full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or _disk_full(tmp.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise UserError(
                f"No space left on the disk to write checkpoint {final}; free some space, then continue the run with --resume."
            ) from None
        raise
    replace_dir(tmp, final)
    return final


def _disk_full(directory: Path) -> bool:
    """Less than 1 MiB left for us in ``directory``'s file system."""
    try:
        return shutil.disk_usage(directory).free < 1 << 20
    except OSError:
        return False


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


def read_meta(directory: str | Path) -> CheckpointMeta:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise UserError(f"{directory} is not a complete onceupon checkpoint (no {META_FILE}).")
    data = json.loads(path.read_text(encoding="utf-8"))
    return CheckpointMeta(**data)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, in the order they were reached (by words seen)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / META_FILE).is_file()]

    def order(p: Path) -> tuple[int, int, int]:
        m = read_meta(p)
        return (m.pretrain_words, m.interact_words, m.step)

    return sorted(found, key=order)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None
