"""The `stepdistill train CONFIG [--resume [--allow-config-change]]` command.

    from stepdistill.config import load_config
    from stepdistill.train import train
    run_dir = train(load_config("configs/demo.yaml"))

It reads the task and the data (the run's own annotations when `annotate` wrote them), takes the run
folder's lock, catches SIGTERM/SIGINT (a checkpoint at the next step, then exit 75), builds the
soft-target term when the config has a `kd:` section, and hands all of it to
stepdistill.training.loop.fit. Training itself never imports stepdistill.kd: the dependency runs one
way, kd -> training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from stepdistill.config import Config
from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task


def kd_builder(cfg: Config, task: Task, train_rows: list[Annotation]) -> Callable[[Any, Any], Any] | None:
    """make_kd(student, device) for fit when the config has a `kd:` section (teacher loaded, checks
    run when it is called), else None."""
    if cfg.kd is None:
        return None
    from stepdistill.kd.term import KDTerm

    def make_kd(student, device):
        return KDTerm.from_config(
            cfg.kd,
            student.tokenizer,
            student.base,
            device,
            train=cfg.train,
            task=task,
            annotations=train_rows,
        )

    return make_kd


def train(cfg: Config, resume: bool = False, allow_config_change: bool = False) -> Path:
    """Load the task and splits named by `cfg`, train, evaluate; returns the run folder.
    Holds the run folder's lock; SIGTERM/SIGINT stop at the next step with a checkpoint (preempt.py)."""
    from stepdistill import runlock
    from stepdistill.config import resolved
    from stepdistill.data.runfiles import with_annotations
    from stepdistill.data.splits import load_splits
    from stepdistill.tasks import get_task
    from stepdistill.training import preempt, rationales
    from stepdistill.training.formatting import trained_label
    from stepdistill.training.loop import fit
    from stepdistill.training.models import load_tokenizer

    cfg = with_annotations(resolved(cfg))  # the run's annotations when `annotate` wrote them
    task = get_task(cfg.task)
    splits = load_splits(cfg.data, task)
    rationales.preflight(  # bad rationale keys fail here, before the student loads
        task, splits["train"], cfg.train, cfg.kd is not None,
        lambda ann: trained_label(ann, cfg.train)[0], lambda: load_tokenizer(cfg.student),
    )  # fmt: skip
    with runlock.hold(cfg.run_dir, "train"), preempt.on_signals():
        return fit(
            cfg, task, splits, resume=resume, allow_config_change=allow_config_change,
            make_kd=kd_builder(cfg, task, splits["train"]),
        )  # fmt: skip
