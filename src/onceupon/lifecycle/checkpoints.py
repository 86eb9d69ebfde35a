"""The checkpoint directory, written by pretraining and interaction alike.

A checkpoint is a directory ``RUN/checkpoints/chck_{N}M`` holding a transformers model and
tokenizer (loadable with ``AutoModelForCausalLM``/``AutoTokenizer``), a ``onceupon.json``
describing it, and optionally a ``trainer_state/`` with what a resume needs (see
:mod:`onceupon.lifecycle.resume`). It is written to a temporary directory and renamed into
place, so a directory with ``onceupon.json`` is always complete.

``onceupon.json`` fields (read by evaluate and report):
  name             checkpoint name, e.g. "chck_20M"
  stage            "pretrain" or "interact"
  pretrain_words   words of pretraining input seen by these weights (repeats counted)
  interact_words   words of interaction input seen (0 for pretraining checkpoints)
  generated_words  words the student generated during interaction (0 for pretraining)
  step             optimizer step (pretrain) or RL step (interact)
  start_checkpoint for interaction: path of the checkpoint the run started from
  shape            the model as written: model_type, architectures, layers, width,
                   vocab_size; its config.json is checked against this before any weights
                   are read (onceupon.student.checkpoints.check_config). Absent in
                   checkpoints written before it was recorded.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from onceupon.errors import UserError
from onceupon.files import atomic_write_json, fsync_dir, is_disk_full, replace_dir
from onceupon.schemas.run import read_checkpoint_meta

META_FILE = "onceupon.json"
STATE_DIR = "trainer_state"


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
    shape: dict[str, Any] | None = None


def write_checkpoint(
    directory: str | Path,
    write_files: Callable[[Path], None],
    meta: CheckpointMeta,
    write_state: Callable[[Path], None] | None = None,
) -> Path:
    """Write a checkpoint atomically: ``write_files(dir)`` (weights, tokenizer), then
    ``write_state(dir/trainer_state)`` (resume state), then the metadata.

    A full disk is one sentence (:class:`UserError`) and leaves no partial directory behind:
    the writers report it in their own ways (safetensors and tokenizers in words, torch saving
    to a path as a ``RuntimeError`` about file positions), so the error is recognised by
    :func:`onceupon.files.is_disk_full`, and any failure while under 1 MiB is left counts too.
    """
    final = Path(directory)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_files(tmp)
        if write_state is not None:
            state = tmp / STATE_DIR
            state.mkdir()
            write_state(state)
        # The metadata goes last: its presence marks the directory as complete.
        atomic_write_json(tmp / META_FILE, asdict(meta))
        fsync_dir(tmp)
    except Exception as e:  # safetensors, tokenizers and torch each report a full disk their own way
        full = is_disk_full(e) or _disk_full(tmp.parent)
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


def read_meta(directory: str | Path) -> CheckpointMeta:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise UserError(f"{directory} is not a complete onceupon checkpoint (no {META_FILE}).")
    record = read_checkpoint_meta(path)  # a damaged or hand-edited file is one sentence (onceupon.schemas.run)
    return CheckpointMeta(**{name: getattr(record, name) for name in CheckpointMeta.__dataclass_fields__})


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
