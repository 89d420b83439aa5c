"""`stepdistill run CONFIG --plan`: what a run would do, and what of it is already done.

Reads the run folder and writes nothing: no teacher request, no model load. One line per stage and
per training of the sweep, with its state:

    demo data  written | to write (with sweep.demo_data)
    annotate   done (annotations/ reused) | to do: teacher <backend>:<model>, splits [...]
    training   done | done, with another config (the run refuses it) | resumes at step N | to do

and a last line counting them, with the step budget of each training.
"""

from __future__ import annotations

from pathlib import Path

from stepdistill.config import Config
from stepdistill.run import (
    SPLITS,
    annotation_files,
    annotation_stamp,
    annotations_reusable,
    sweep_points,
    trained_differently,
    training_stamp,
)
from stepdistill.training.checkpoint import list_checkpoints


def _annotate_line(cfg: Config) -> str:
    if cfg.teacher is None:
        return "annotate: nothing to do (no teacher section: trains on the data files as given)"
    _, stamp = annotation_stamp(cfg)
    if annotations_reusable(cfg, stamp):
        return f"annotate: done ({cfg.run_dir / 'annotations'} reused)"
    teacher = f"{cfg.teacher.backend}:{cfg.teacher.model or '(default)'}"
    return f"annotate: to do: teacher {teacher}, splits {', '.join(cfg.annotate.splits)}"


def _training_state(cfg: Config, sub: Config) -> str:
    folder = sub.run_dir
    if (folder / "metrics.json").exists():
        if trained_differently(cfg, sub, training_stamp(sub)):
            return "done, with another config (the run refuses it)"
        return "done"
    found = list_checkpoints(folder)
    return f"resumes at step {found[-1][0]}" if found else "to do"


def plan(cfg: Config) -> list[str]:
    """The lines `--plan` prints."""
    files = annotation_files(cfg)
    files = {s: p or f"(no {s} file)" for s, p in files.items()} | {"train": files["train"] or "(train)"}
    lines = [f"run folder: {cfg.run_dir}"]
    demo = cfg.sweep.demo_data
    if demo is not None:
        paths = [Path(getattr(cfg.data, s)) for s in SPLITS if getattr(cfg.data, s)]
        state = (
            "written"
            if all(p.exists() for p in paths)
            else f"to write (seed {demo.seed}, sizes {demo.sizes})"
        )
        lines.append(f"demo data: {state}")
    lines.append(_annotate_line(cfg))
    states: list[str] = []
    for sub in sweep_points(cfg, files):
        states.append(_training_state(cfg, sub))
        lines.append(f"train {sub.run_dir.name}: {states[-1]}")
    tc = cfg.train
    budget = f"{tc.max_steps} steps" if tc.max_steps else f"{tc.epochs:g} epochs"
    if tc.patience:
        budget += f", or fewer: stops after {tc.patience} validations without progress"
    done = sum(s == "done" for s in states)
    resume = sum(s.startswith("resumes") for s in states)
    lines.append(
        f"{len(states)} trainings: {done} done, {resume} to resume, {len(states) - done - resume} "
        f"to start; each at most {budget}"
    )
    return lines
