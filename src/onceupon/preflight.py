"""Checks that run before a command makes a directory or starts work.

A mistake the user can fix (an output path that cannot be written, a device that is not
there, a model that cannot fit in memory) should end the command within a second, with one
sentence, rather than after minutes of work with a traceback. Each function raises
:class:`~onceupon.errors.UserError` and writes nothing.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from onceupon.errors import UserError

GB = 1024**3


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists (where a mkdir -p would start); a
    symlink counts as existing even when it leads nowhere."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _not_plain(path: Path) -> str | None:
    """What ``path`` is when it is neither nothing, a file, a directory, nor a symlink to one
    of those: a device, a FIFO, a socket, a symlink loop or a symlink to nothing. None
    otherwise. Writing to such a path would block (a FIFO), write into a device, or replace
    or write through a link that is not onceupon's to change."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symlink loop"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return f"a symlink to {os.readlink(path)}, which does not exist"
        return None  # nothing there, or not reachable: the checks that follow say so
    for test, kind in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return kind
    return None


def _plain(path: Path, option: str, what: str) -> Path:
    """Refuse an output ``path`` that is, or would be created under, something other than a
    plain file or directory; returns the nearest existing path (itself or an ancestor)."""
    try:
        os.lstat(path)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise UserError(f"{option} {path}: the name is too long for the file system.") from None
    base = _nearest_existing(path)
    kind = _not_plain(base)
    if kind and base == Path(os.path.abspath(path)):
        raise UserError(f"{option} {path} is {kind}, not a {what}; give another path (it is left as it is).")
    if kind:
        raise UserError(f"{option} {path} cannot be created: {base} is {kind}.")
    return base


def _writable_dir(directory: Path) -> bool:
    """Whether files can be created in ``directory``. A real probe file rather than
    ``os.access`` alone: it also sees read-only mounts, ACLs and full quotas."""
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".onceupon-probe-"):
            return True
    except OSError:
        return False


def output_dir(path: str | Path, option: str = "--out") -> None:
    """``path`` is a directory that can be written, or can be created as one (never a
    device, FIFO, socket or broken symlink, nor anything under one)."""
    path = Path(path)
    base = _plain(path, option, "directory")
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a directory.")
    if not base.is_dir():
        raise UserError(f"{option} {path} cannot be created: {base} is a file, not a directory.")
    if not _writable_dir(base):
        where = "" if base == Path(os.path.abspath(path)) else f" (in {base})"
        raise UserError(f"{option} {path} is not writable{where}; choose a location you can write to.")


def output_file(path: str | Path, option: str = "--out") -> None:
    """``path`` is a file that can be (over)written: not a directory, in a writable place
    (never a device, FIFO, socket or broken symlink, nor anything under one)."""
    path = Path(path)
    _plain(path, option, "file")
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory; give a file name.")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path} is not writable.")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise UserError(f"{option} {path} cannot be created: {base} is a file, not a directory.")
    if not _writable_dir(base):
        raise UserError(f"{option} {path} cannot be written: {base} is not writable.")


def device(name: str, setting: str = "device") -> None:
    """A torch device string names hardware that is present (``auto`` and ``cpu`` always are)."""
    name = (name or "auto").strip().lower()
    if name in ("auto", "cpu"):
        return
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"{setting} is {name!r} but no CUDA GPU is available here; use 'cpu' or 'auto'.")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise UserError(f"{setting} is {name!r} but this machine has {torch.cuda.device_count()} CUDA GPU(s).")
        return
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{setting} is 'mps' but Apple's Metal backend is not available here; use 'cpu' or 'auto'.")
        return
    try:
        torch.device(name)
    except RuntimeError:
        raise UserError(f"{setting} {name!r} is not a device; use 'auto', 'cpu', 'cuda' or 'cuda:N'.") from None


def total_memory(on_gpu: bool) -> int | None:
    """Bytes of memory a process can use: the first GPU's, or the machine's RAM (None: unknown)."""
    if on_gpu:
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory) if torch.cuda.is_available() else None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def memory_for(n_bytes: int, what: str, on_gpu: bool = False) -> None:
    """Refuse a size that cannot fit: ``n_bytes`` (a lower estimate) above the machine's memory.

    Only the impossible is refused (the estimate is a floor and the comparison is with all
    memory, not what happens to be free), so a run that might fit is never stopped here.
    """
    available = total_memory(on_gpu)
    if available is not None and n_bytes > available:
        where = "GPU" if on_gpu else "this machine"
        raise UserError(
            f"{what} needs at least {n_bytes / GB:,.1f} GB but {where} has {available / GB:,.1f} GB; reduce its size."
        )


def student_training_bytes(
    *, n_layer: int, n_embd: int, context_length: int, vocab_size: int, batch_size: int, learned_positions: bool
) -> int:
    """A floor on the memory one process needs to train a decoder-only student with AdamW.

    Parameters: token embeddings (tied with the output), learned position embeddings (GPT-2;
    Llama's rotary positions have none) and about ``12 x width^2`` per layer; each parameter
    costs 16 bytes in training (fp32 weight, gradient and AdamW's two moments). Activations:
    the logits of one micro-batch (fp32, kept for the backward pass) and, per layer, the
    hidden states of every position (a small fraction of what autograd really keeps).
    """
    params = vocab_size * n_embd + n_layer * 12 * n_embd * n_embd
    if learned_positions:
        params += context_length * n_embd
    tokens = batch_size * context_length
    activations = tokens * vocab_size * 4 + n_layer * tokens * n_embd * 4
    return 16 * params + activations
