"""Capture and restore every random generator a training step may draw from, so a resumed run
draws exactly the numbers an uninterrupted run would have drawn."""

from __future__ import annotations

import random

import numpy as np


def capture_rng() -> dict:
    """The state of Python's, NumPy's, torch's and (where present) CUDA's generators (this process)."""
    import torch

    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(state: dict) -> None:
    """Restore what :func:`capture_rng` saved.

    Keys that are absent or None are left alone: interaction resume states written before
    NumPy's state was saved have no ``numpy`` key, and a state saved on a CPU has no CUDA part.
    """
    import torch

    random.setstate(state["python"])
    if state.get("numpy") is not None:
        np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
