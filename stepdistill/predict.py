"""The `stepdistill evaluate` and `stepdistill predict` commands: a run folder's student on data.

    stepdistill evaluate runs/cqa-sbs                     # best/ on the config's eval splits
    stepdistill evaluate runs/cqa-sbs --split test --checkpoint runs/cqa-sbs/checkpoints/step-200
    stepdistill predict runs/cqa-sbs --input new.jsonl [--rationale]

`evaluate` writes metrics.json and predictions/<split>.jsonl to runs/<name>/evaluation/ (into the
run folder with --overwrite); `predict` writes the labelled rows next to the run. The prediction and
scoring themselves are stepdistill/evaluate.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stepdistill.config import Config, load_config
from stepdistill.data.io import write_json, write_jsonl
from stepdistill.errors import ConfigError
from stepdistill.evaluate import evaluate_splits, predict_labels
from stepdistill.outcomes import evaluate_line
from stepdistill.runfiles import with_annotations
from stepdistill.schema import label_source
from stepdistill.training.device import barrier, device_of, is_main, join_launcher
from stepdistill.training.models import Student, load_saved_student


def base_metrics(cfg: Config, student: Student) -> dict[str, Any]:
    """The identity part of metrics.json."""
    return {
        "name": cfg.name,
        "task": cfg.task.name,
        "task_title": cfg.task.title or cfg.task.name,
        "method": cfg.train.method,
        "label_source": label_source(cfg.train.method, cfg.train.label_source),
        "alpha": cfg.train.alpha,
        "label_decoding": cfg.eval.label_decoding,
        "alpha_schedule": cfg.train.alpha_schedule,
        "alpha_end": cfg.train.alpha_end,
        "seed": cfg.train.seed,
        "train_fraction": cfg.data.train_fraction,
        "student": {"model": cfg.student.model, "kind": student.kind, "params": student.n_params},
    }


def _resolve_target(target: str | os.PathLike | Config, overrides: list[str] | None) -> Config:
    if isinstance(target, Config):
        return target
    path = Path(target)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{target}: neither a run folder (with config.yaml) nor a config file")
    return with_annotations(load_config(path, overrides), verb="evaluate")


def evaluate_run(
    target: str | os.PathLike | Config,
    splits: list[str] | None = None,
    checkpoint: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    say: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Score a run's best/ (or `checkpoint`) and write metrics.json and predictions/<split>.jsonl.

    They go to <run>/evaluation/, so the training's own metrics.json and predictions stay as
    training wrote them; `overwrite` updates those instead. For another checkpoint they go into that
    checkpoint's folder. `say` gets the closing line: accuracies per split and the files written.
    """
    from stepdistill.data.splits import load_splits
    from stepdistill.tasks import get_task

    join_launcher()
    cfg = _resolve_target(target, overrides)
    is_folder = isinstance(target, (str, os.PathLike)) and Path(target).is_dir()
    run_dir = Path(target) if is_folder else cfg.run_dir
    model_dir = Path(checkpoint) if checkpoint else run_dir / "best"
    student = _load_trained(model_dir, cfg.student.kind)
    task = get_task(cfg.task)
    out_dir = model_dir if checkpoint else (run_dir if overwrite else run_dir / "evaluation")
    results, latency = evaluate_splits(
        student, task, load_splits(cfg.data, task), cfg.train, cfg.eval, splits or cfg.eval.splits, out_dir
    )
    metrics_path = out_dir / "metrics.json"
    metrics = _read_metrics(metrics_path) or base_metrics(cfg, student)
    metrics.setdefault("splits", {}).update(results)
    if latency is not None:
        metrics["latency"] = latency
    if is_main():
        write_json(metrics_path, metrics)
        if say is not None:
            say(evaluate_line(results, out_dir))
    barrier()
    return metrics


def _load_trained(model_dir: Path, kind: str) -> Student:
    """The saved student in `model_dir`, on the GPU when there is one."""
    if not (model_dir / "config.json").exists():
        raise ConfigError(f"{model_dir}: no trained student there (train first, or pass --checkpoint)")
    student = load_saved_student(model_dir, kind=kind)
    student.model.to(device_of())
    return student


def _read_metrics(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def predict_file(
    run_dir: str | os.PathLike,
    input_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    rationale: bool = False,
    checkpoint: str | os.PathLike | None = None,
) -> Path:
    """Label the records of a JSONL/CSV/Parquet file with a run's student; returns the output path."""
    from stepdistill.data.readers import load_examples
    from stepdistill.tasks import get_task

    join_launcher()
    run_dir = Path(run_dir)
    cfg = _resolve_target(run_dir, None)
    model_dir = Path(checkpoint) if checkpoint else run_dir / "best"
    student = _load_trained(model_dir, cfg.student.kind)
    task = get_task(cfg.task)
    rows = predict_labels(
        student, task, load_examples(input_path, task), cfg.train, cfg.eval, rationale=rationale
    )
    out_path = Path(out) if out else run_dir / f"predictions-{Path(input_path).stem}.jsonl"
    if is_main():
        write_jsonl(out_path, rows)
    barrier()
    return out_path
