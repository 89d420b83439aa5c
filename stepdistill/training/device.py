"""Device, precision and processes, decided in one place.

CPU runs in fp32, CUDA in bf16 when `auto`. Under a launcher (`torchrun`, `accelerate launch`)
`make_accelerator` joins the process group (NCCL on GPUs, gloo on CPU) with a collective timeout
of `train.dist_timeout_s`: a rank that waits longer than that for the others raises instead of
hanging (torchrun already stops the remaining ranks within seconds when one dies; the timeout is the
bound when nothing else notices, e.g. a lost node).

The helpers below work with or without a process group, so evaluation code calls them freely.

The optimizer is AdamW, fused (one kernel for all parameters) on CUDA and torch's default
implementation on CPU; a checkpoint restored on another device type switches to that device's
implementation (`make_adamw`).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import Any

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


def cpu_bf16_note(precision: str) -> str | None:
    """A warning when bf16 is asked for on an x86 CPU without native bf16 matmuls (AVX-512 BF16 or
    AMX), where bf16 is emulated and can be slower than fp32; None otherwise (CUDA, ARM, fp32)."""
    import platform

    if (
        precision != "bf16"
        or torch.cuda.is_available()
        or platform.machine().lower() not in ("x86_64", "amd64")
    ):
        return None
    # torch.cpu's probes are private: where one is missing, no warning rather than a wrong one
    native = any(
        getattr(torch.cpu, probe, lambda: True)()
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    if native:
        return None
    return (
        "train.precision bf16: this CPU has no native bf16 matmuls (AVX-512 BF16 or AMX), so bf16 is "
        "emulated and can be slower than fp32; pass --train.precision fp32 if steps are slow"
    )


def make_accelerator(precision: str, timeout_s: float) -> Any:
    """The run's Accelerator. Without CUDA it is told `cpu=True`, which is what makes accelerate
    start a gloo process group under torchrun instead of treating each rank as a lone process.
    Prints `cpu_bf16_note` once (main process) where it applies."""
    from accelerate import Accelerator

    note = cpu_bf16_note(precision)
    if note and int(os.environ.get("RANK", "0")) == 0:
        print(f"[train] warning: {note}", flush=True)
    from accelerate.utils import InitProcessGroupKwargs

    return Accelerator(
        mixed_precision=mixed_precision(precision),
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))],
    )


def join_launcher(timeout_s: float = 600.0) -> None:
    """Join the launcher's process group when started by one (for the work around the trainings:
    `stepdistill run`, `evaluate`, `predict`)."""

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=timeout_s))


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without a process group."""
    if not _initialized():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def is_main() -> bool:
    return rank_world()[0] == 0


def barrier() -> None:
    if _initialized():
        torch.distributed.barrier()


def gather_objects(items: list[Any]) -> list[Any]:
    """Every process's `items`, concatenated in rank order, on every process."""
    if not _initialized():
        return list(items)
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, items)
    return [x for part in out for x in part]


def device_of(accelerator_device: Any = None) -> torch.device:
    """Where a model for evaluation goes: this rank's accelerator device, else CUDA when present."""
    if accelerator_device is not None:
        return torch.device(accelerator_device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def adamw_options(device: torch.device) -> dict[str, Any]:
    """Implementation flags of AdamW on `device`: fused on CUDA (one kernel for every parameter
    instead of several per tensor list), torch's default elsewhere."""
    return {"fused": True} if torch.device(device).type == "cuda" else {"fused": None, "foreach": None}


def make_adamw(param_groups: list[dict[str, Any]], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with the implementation `adamw_options` picks for `device`.

    torch's `load_state_dict` copies the saved groups' `fused`/`foreach` flags over the current
    ones; a pre-hook rewrites them first, so a checkpoint written on CPU resumes fused on CUDA (and
    the reverse), with the step counters placed where each implementation keeps them."""
    options = adamw_options(device)
    optimizer = torch.optim.AdamW(param_groups, lr=lr, **options)

    def keep_implementation(_optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
        groups = [
            {**group, "fused": None, "foreach": None, **options} for group in state_dict["param_groups"]
        ]
        return {**state_dict, "param_groups": groups}

    optimizer.register_load_state_dict_pre_hook(keep_implementation)
    return optimizer
