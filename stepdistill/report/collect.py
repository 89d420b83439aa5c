"""Read finished run folders into plain data for the report (no torch, no plotting).

Two layouts are accepted:

    runs/<name>/                       a `stepdistill run` folder
        config.yaml  annotations/summary.json  teacher_timing.json
        <method>-f<fraction>-s<seed>/  one training each (the layout below)
    runs/<name>/                       a plain `stepdistill train` folder
        config.yaml  metrics.json  train_log.jsonl  predictions/<split>.jsonl
        export/deploy.json             when `stepdistill export` ran on it

A folder that is neither raises DataError naming it; a malformed file raises DataError naming the
file, the line (for JSONL) and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stepdistill.data.io import iter_jsonl
from stepdistill.errors import DataError
from stepdistill.schema import FIXED_LABELS, label_source, student_folder

TIMING_FILE = "teacher_timing.json"


@dataclass
class Training:
    """One trained student: its metrics.json, its log and its predictions."""

    path: Path
    metrics: dict[str, Any]
    train_rows: list[dict[str, Any]] = field(default_factory=list)  # rows with "loss"
    eval_rows: list[dict[str, Any]] = field(default_factory=list)  # rows with "valid_accuracy"
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    config: dict[str, Any] | None = None  # the training's resolved config.yaml, when present
    deploy: dict[str, Any] | None = None  # export/deploy.json written by `stepdistill export`

    @property
    def method(self) -> str:
        return str(self.metrics["method"])

    @property
    def label_source(self) -> str:
        """Where the label task's labels came from (standard: gold, distill: teacher by definition)."""
        return label_source(self.method, str(self.metrics.get("label_source") or "teacher"))

    @property
    def gold_filter(self) -> bool:
        """Whether the rationales it learned from were filtered to those whose teacher label agrees
        with gold: by the trainer (train.gold_filter) or already when annotating the training split
        (annotate.gold_filter, which drops the other rationales from the annotations)."""
        cfg = self.config or {}
        annotate = cfg.get("annotate") or {}
        at_annotation = bool(annotate.get("gold_filter")) and "train" in annotate.get(
            "gold_filter_splits", ["train", "valid"]
        )
        return bool((cfg.get("train") or {}).get("gold_filter")) or at_annotation

    @property
    def variant(self) -> str:
        """The method as the report names it: rationale methods say which labels (and rationales)
        they learned from, e.g. "step_by_step (gold labels, filtered rationales)"; step_by_step with
        a label weight other than the paper's constant 0.5 says it: "..., α 0.5→1" or "..., α 0.8"."""
        if self.method in FIXED_LABELS:
            return self.method
        extra = ", filtered rationales" if self.gold_filter else ""
        many = ((self.config or {}).get("train") or {}).get("rationales", "one")
        extra += f", {many} rationales" if many != "one" else ""  # train.rationales
        if self.method == "step_by_step":
            extra += self._alpha_text()
        return f"{self.method} ({self.label_source} labels{extra})"

    def _alpha_text(self) -> str:
        train = (self.config or {}).get("train") or {}

        def get(key: str, default: Any) -> Any:
            return self.metrics.get(key, train.get(key, default))

        alpha = float(get("alpha", 0.5))
        if get("alpha_schedule", "constant") == "linear":
            return f", α {alpha:g}→{float(get('alpha_end', 1.0)):g}"
        return "" if alpha == 0.5 else f", α {alpha:g}"

    @property
    def student(self) -> str:
        """The student's name: the model, with its layer count when the sweep cut it."""
        section = (self.config or {}).get("student")
        if isinstance(section, dict) and section.get("model"):
            return student_folder(section)
        return str((self.metrics.get("student") or {}).get("model", "?"))

    @property
    def seed(self) -> int:
        return int(self.metrics.get("seed", 0))

    @property
    def fraction(self) -> float:
        return float(self.metrics.get("train_fraction", 1.0))

    @property
    def task(self) -> str:
        """The task's own name (task.title, or a generic task's spec file stem), else its family."""
        return str(self.metrics.get("task_title") or self.metrics.get("task", "?"))

    def accuracy(self, split: str) -> float | None:
        s = self.metrics.get("splits", {}).get(split)
        return None if s is None or s.get("accuracy") is None else float(s["accuracy"])


@dataclass
class RunData:
    """One folder given to `stepdistill report`: its trainings and, when present, its annotation."""

    path: Path
    trainings: list[Training]
    config: dict[str, Any] | None = None
    annotation: dict[str, Any] | None = None  # annotations/summary.json
    teacher_timing: dict[str, Any] | None = None  # teacher_timing.json written by `stepdistill run`
    annotation_path: Path | None = None  # the summary.json read: runs sharing annotations show them once
    timing_path: Path | None = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(str(path), err.lineno, None, f"not valid JSON: {err.msg}") from None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise DataError(str(path), None, None, f"not valid YAML: {err}") from None
    return raw if isinstance(raw, dict) else None


def _check_metrics(metrics: Any, path: Path) -> dict[str, Any]:
    """The keys the report cannot do without; everything else is optional and shown when present."""
    if not isinstance(metrics, dict):
        raise DataError(str(path), None, None, "expected a JSON object")
    if not isinstance(metrics.get("method"), str):
        raise DataError(str(path), None, "method", "missing or not a string")
    splits = metrics.get("splits")
    if not isinstance(splits, dict):
        raise DataError(str(path), None, "splits", "missing or not an object of split -> scores")
    for name, scores in splits.items():
        if not isinstance(scores, dict):
            raise DataError(str(path), None, f"splits.{name}", "expected an object")
        acc = scores.get("accuracy")
        if acc is not None and not isinstance(acc, (int, float)):
            raise DataError(str(path), None, f"splits.{name}.accuracy", "expected a number")
    for key in ("seed", "train_fraction"):
        if key in metrics and not isinstance(metrics[key], (int, float)):
            raise DataError(str(path), None, key, "expected a number")
    return metrics


def read_training(path: str | Path) -> Training:
    """Read one training folder (metrics.json required; log and predictions when present)."""
    path = Path(path)
    metrics = _check_metrics(_read_json(path / "metrics.json"), path / "metrics.json")
    tr = Training(path=path, metrics=metrics, config=_read_yaml(path / "config.yaml"))
    log = path / "train_log.jsonl"
    if log.exists():
        for _, row in iter_jsonl(log):
            if "valid_accuracy" in row:
                tr.eval_rows.append(row)
            elif "loss" in row:
                tr.train_rows.append(row)
    deploy = path / "export" / "deploy.json"
    if deploy.is_file():
        tr.deploy = _read_json(deploy)
    pred_dir = path / "predictions"
    if pred_dir.is_dir():
        for f in sorted(pred_dir.glob("*.jsonl")):
            tr.predictions[f.stem] = [row for _, row in iter_jsonl(f)]
    return tr


def _find_annotation_summary(run: Path, config: dict[str, Any] | None) -> Path | None:
    """annotations/summary.json of the run, or next to the annotated train file a config points at."""
    own = run / "annotations" / "summary.json"
    if own.exists():
        return own
    train_file = ((config or {}).get("data") or {}).get("train")
    if isinstance(train_file, str):
        sibling = Path(train_file).parent / "summary.json"
        if sibling.exists():
            return sibling
    return None


def read_run(path: str | Path) -> RunData:
    """Read a `stepdistill run` folder or a plain training folder."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(str(path), None, None, "run folder does not exist")
    config = _read_yaml(path / "config.yaml")
    if (path / "metrics.json").exists():
        trainings = [read_training(path)]
    else:
        subs = sorted(p for p in path.iterdir() if (p / "metrics.json").is_file())
        trainings = [read_training(p) for p in subs]
    if not trainings:
        raise DataError(
            str(path), None, None, "no metrics.json here or in any sub-folder: not a finished run folder"
        )
    summary = _find_annotation_summary(path, config)
    timing = _find_timing(path, summary)
    return RunData(
        path=path,
        trainings=trainings,
        config=config,
        annotation=_read_json(summary) if summary else None,
        teacher_timing=_read_json(timing) if timing else None,
        annotation_path=summary.resolve() if summary else None,
        timing_path=timing.resolve() if timing else None,
    )


def _find_timing(run: Path, summary: Path | None) -> Path | None:
    """teacher_timing.json of the run, or of the run whose annotations it trained on
    (`stepdistill annotate` writes it beside annotations/)."""
    for folder in (run, summary.parent.parent if summary else None):
        if folder is not None and (folder / TIMING_FILE).exists():
            return folder / TIMING_FILE
    return None


def collect(run_dirs: list[str | Path]) -> list[RunData]:
    """Read every folder given; duplicates (the same folder twice) are read once."""
    seen: set[Path] = set()
    out: list[RunData] = []
    for d in run_dirs:
        key = Path(d).resolve()
        if key not in seen:
            seen.add(key)
            out.append(read_run(d))
    return out


def all_trainings(runs: list[RunData]) -> list[Training]:
    return [t for r in runs for t in r.trainings]
