"""``precision: auto | bf16 | fp32``, resolved the same way by pretraining and interaction."""

from __future__ import annotations


def resolve_precision(setting: str) -> str:
    """``"bf16"`` or ``"fp32"`` for a ``precision`` setting (``auto``: bf16 on a CUDA GPU that
    supports it, else fp32; CPUs run fp32 because bf16 autocast there is slower, not faster)."""
    if setting in ("bf16", "fp32"):
        return setting
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def mixed_precision(setting: str) -> str:
    """The ``accelerate.Accelerator(mixed_precision=...)`` value for a ``precision`` setting."""
    return "bf16" if resolve_precision(setting) == "bf16" else "no"
