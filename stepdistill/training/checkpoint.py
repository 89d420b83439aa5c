"""Checkpoints of a training run: runs/<name>/checkpoints/step-<N>/.

Each checkpoint folder is a complete student (safetensors + config + tokenizer, LoRA merged) that
plain `from_pretrained` loads, plus what resuming needs: `trainer_state.pt` (optimizer and scheduler
state), `trainer_state.json` (step, best so far, elapsed time) and, for LoRA, `adapter.safetensors`
(the unmerged adapter weights, so training continues on the same base + adapter). Data order and
dropout are functions of (seed, step), so no RNG state is needed to resume exactly.
`checkpoints/best.json` records the step with the best validation accuracy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from stepdistill.data.io import write_json
from stepdistill.training import integrity
from stepdistill.training.config import StudentConfig
from stepdistill.training.models import Student, load_student, save_student

_STEP_DIR = re.compile(r"^step-(\d+)$")
RESUME_FILES = ("trainer_state.pt", "trainer_state.json", "adapter.safetensors")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.exists():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / "trainer_state.json").exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def resume_point(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); refuses --resume without a checkpoint and
    a fresh run in a folder that holds checkpoints."""
    from stepdistill.errors import ConfigError

    last = latest_checkpoint(run_dir)
    if resume and last is None:
        raise ConfigError(f"--resume: {run_dir} has no checkpoint to resume from")
    if not resume and last is not None:
        raise ConfigError(
            f"{run_dir} already holds checkpoints: pass --resume to continue, or choose another --name"
        )
    return last if resume else None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose files match its manifest (damaged newer ones are set aside)."""
    return integrity.newest_intact(list_checkpoints(run_dir))


def save_checkpoint(
    run_dir: Path,
    student: Student,
    optimizer,
    scheduler,
    state: dict[str, Any],
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoints/step-<state['step']>/; written to a temporary folder then renamed.
    `model_state` / `optimizer_state`: full states gathered from sharded (FSDP) processes, used
    instead of the student's and optimizer's own."""
    root = checkpoints_dir(run_dir)
    final = root / f"step-{state['step']}"
    tmp = root / f".tmp-step-{state['step']}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_student(student, tmp, state_dict=model_state)
    if student.is_lora:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        adapter = {
            k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(student.model).items()
        }
        save_file(adapter, str(tmp / "adapter.safetensors"))
    integrity.pause_for_tests()
    torch.save(
        {
            "optimizer": optimizer.state_dict() if optimizer_state is None else optimizer_state,
            "scheduler": scheduler.state_dict(),
        },
        tmp / "trainer_state.pt",
    )
    write_json(tmp / "trainer_state.json", state)
    integrity.write_manifest(tmp)  # last: a folder without it is an unfinished write
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def record_best(run_dir: Path, step: int, valid_accuracy: float | None) -> None:
    write_json(checkpoints_dir(run_dir) / "best.json", {"step": step, "valid_accuracy": valid_accuracy})


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / "trainer_state.json").read_text())


def restore_student(cfg: StudentConfig, path: Path, seed: int) -> Student:
    """The student as it was at checkpoint `path`."""
    if cfg.lora is None:
        # A full-weight checkpoint is a complete model folder; load it without re-deriving it.
        ckpt_cfg = cfg.model_copy(
            update={
                "model": str(path),
                "gguf_file": None,
                "init": "pretrained",
                "keep_layers": None,
                "config_overrides": {},
                "tokenizer": None,
            }
        )
        student = load_student(ckpt_cfg, seed=seed)
        student.name = cfg.model
        return student
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    # LoRA: the frozen base is rebuilt exactly as at the start (same seed), then the adapter restored.
    student = load_student(cfg, seed=seed)
    set_peft_model_state_dict(student.model, load_file(str(Path(path) / "adapter.safetensors")))
    return student


def restore_optimizer(path: Path, optimizer, scheduler) -> None:
    blob = torch.load(Path(path) / "trainer_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])


def prune(run_dir: Path, keep_last: int, best_step: int | None) -> None:
    """Delete old checkpoints, keeping the newest `keep_last` and the best one."""
    found = list_checkpoints(run_dir)
    keep = {step for step, _ in found[-keep_last:]} if keep_last > 0 else set()
    if best_step is not None:
        keep.add(best_step)
    for step, path in found:
        if step not in keep:
            shutil.rmtree(path)


def export_best(run_dir: Path, step: int) -> Path:
    """Copy the model files of checkpoint `step` to runs/<name>/best/ (no resume state)."""
    src = checkpoints_dir(run_dir) / f"step-{step}"
    dst = Path(run_dir) / "best"
    tmp = Path(run_dir) / ".tmp-best"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*RESUME_FILES, integrity.MANIFEST))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst
