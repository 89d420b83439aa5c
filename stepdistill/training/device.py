"""Device and precision, decided in one place: CPU runs in fp32, CUDA in bf16 when `auto`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

_MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def mixed_precision(precision: str) -> str:
    """accelerate's `mixed_precision` value for a TrainConfig.precision."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return _MIXED[precision]


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast context for code that calls sub-modules directly (bypassing a prepared forward)."""
    mixed = mixed_precision(precision)
    if mixed == "no":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if mixed == "bf16" else torch.float16)
