"""What the trainer does differently under several processes: checks made on every process before
training, and checkpoints written by the main process (under FSDP from state gathered off every
process, so checkpoints and best/ stay plain `from_pretrained` folders).

FSDP (accelerate's FSDP plugin, `configs/accelerate/fsdp-1node.yaml`) runs on GPUs only: accelerate
does not shard CPU processes, so a CPU launch with an FSDP config is refused rather than silently
run as DDP.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from stepdistill.errors import ConfigError
from stepdistill.training import checkpoint as ckpt
from stepdistill.training.config import StudentConfig, TrainConfig
from stepdistill.training.device import gather_objects
from stepdistill.training.models import Student


def is_fsdp(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.FSDP


def check_launch(accelerator, tc: TrainConfig, student: StudentConfig, config: dict[str, Any]) -> None:
    """Checks every process makes before anything is trained or written, so that all of them fail
    together: FSDP really is on when asked for, the batch divides over the processes, and every
    process read the same config (`config`: the whole config, as JSON)."""
    world = accelerator.num_processes
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not is_fsdp(accelerator):
        raise ConfigError(
            "the accelerate config asks for FSDP, which accelerate runs on GPUs only; on CPU launch "
            "with configs/accelerate/ddp-1node.yaml (DDP) instead"
        )
    if is_fsdp(accelerator) and student.lora is not None:
        raise ConfigError("student.lora: LoRA students train under DDP (they fit one GPU); use a DDP config")
    if tc.batch_size % world:
        raise ConfigError(
            f"train.batch_size: {tc.batch_size} examples per micro-batch cannot be split evenly over "
            f"{world} processes; use a multiple of {world}"
        )
    if world > 1:
        mine = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
        seen = gather_objects([mine])
        if len(set(seen)) > 1:
            ranks = [r for r, h in enumerate(seen) if h != seen[0]]
            raise ConfigError(
                f"processes {ranks} loaded a different config than process 0; launch every process "
                "with the same config file and overrides"
            )


def _full_state(accelerator, objective, optimizer) -> tuple[dict | None, dict | None]:
    """Under FSDP, the full model and optimizer state, gathered from every process (a collective:
    every process calls it); (None, None) otherwise (the main process's copies are complete)."""
    if not is_fsdp(accelerator):
        return None, None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    model_state = accelerator.get_state_dict(objective)  # keys of the Objective: "model.<name>"
    model_state = {k.removeprefix("model."): v for k, v in (model_state or {}).items()}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    inner = accelerator.unwrap_model(objective)
    optim_state = get_optimizer_state_dict(inner, optimizer.optimizer, options=options)
    return model_state, optim_state


def save(accelerator, run_dir: Path, student: Student, objective, optimizer, scheduler,
         state: dict[str, Any], is_eval: bool, tc: TrainConfig) -> None:  # fmt: skip
    """A checkpoint, written by the main process while the others wait."""
    model_state, optim_state = _full_state(accelerator, objective, optimizer)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if model_state is None:
            ckpt.save_checkpoint(run_dir, student, optimizer, scheduler, state)
        else:
            ckpt.save_checkpoint(
                run_dir,
                student,
                optimizer,
                scheduler,
                state,
                model_state=model_state,
                optimizer_state=optim_state,
            )
        if is_eval and state["best_step"] == state["step"]:
            ckpt.record_best(run_dir, state["step"], state["best_valid_accuracy"])
        ckpt.prune(run_dir, tc.keep_checkpoints, state["best_step"])
    accelerator.wait_for_everyone()


def restore_optimizer(accelerator, last: Path, objective, optimizer, scheduler) -> None:
    """Optimizer and scheduler state of checkpoint `last` (under FSDP: the full state, sharded again)."""
    if not is_fsdp(accelerator):
        ckpt.restore_optimizer(last, optimizer, scheduler)
        return
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    blob = torch.load(Path(last) / "trainer_state.pt", map_location="cpu", weights_only=True)
    inner = accelerator.unwrap_model(objective)
    set_optimizer_state_dict(
        inner, optimizer.optimizer, blob["optimizer"], options=StateDictOptions(full_state_dict=True)
    )
    scheduler.load_state_dict(blob["scheduler"])


def record_best(accelerator, run_dir: Path, state: dict[str, Any], tc: TrainConfig) -> None:
    """After validating a saved checkpoint (FSDP): note it as best when it is, prune the rest."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if state["best_step"] == state["step"]:
            ckpt.record_best(run_dir, state["step"], state["best_valid_accuracy"])
        ckpt.prune(run_dir, tc.keep_checkpoints, state["best_step"])
    accelerator.wait_for_everyone()
