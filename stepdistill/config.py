"""Typed configuration: load YAML, apply `--section.key value` overrides, validate, save resolved.

Each stage owns its section's schema next to its code (tasks/config.py, data/config.py,
teachers/config.py, training/config.py, kd/config.py, evaluation's in evaluate_config.py, report's
in report/config.py, run's sweep and demo sections in run_config.py); this module composes them
and is imported by the commands only. A wrong key or value raises ConfigError naming the dotted
field and what is allowed; checks that span sections (`_cross_section_checks`) run here too, so
every command, `run --plan` included, refuses a bad combination before any model is loaded.
"""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from stepdistill.data.config import DataConfig
from stepdistill.errors import ConfigError, suggest
from stepdistill.evaluate_config import EvalConfig
from stepdistill.kd.config import KDConfig
from stepdistill.report.config import ReportConfig
from stepdistill.run_config import SweepConfig
from stepdistill.tasks.config import TaskConfig
from stepdistill.teachers.config import AnnotateConfig, TeacherConfig
from stepdistill.training.config import StudentConfig, TrainConfig


class Config(BaseModel):
    """A whole job. `train`/`evaluate` use task, data, student, train, eval; `run` uses all."""

    model_config = ConfigDict(extra="forbid")

    name: str = "run"  # the run folder is <out_dir>/<name>
    out_dir: str = "runs"
    task: TaskConfig
    data: DataConfig
    student: StudentConfig = StudentConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    kd: KDConfig | None = None
    teacher: TeacherConfig | None = None
    annotate: AnnotateConfig = AnnotateConfig()
    sweep: SweepConfig = SweepConfig()
    report: ReportConfig = ReportConfig()

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @model_validator(mode="after")
    def _cross_section_checks(self) -> Config:
        kd, method = self.kd, self.train.method
        if kd is None:
            return self
        if kd.missing_teacher():
            raise ValueError(kd.missing_teacher())
        if self.train.max_tokens_per_pass is not None:
            raise ValueError(
                "train.max_tokens_per_pass: not available with a kd: section (the soft-target term runs "
                "on the whole step in one pass); remove one of them"
            )
        if self.train.rationales != "one" or self.train.rationale_max_tokens is not None:
            raise ValueError(
                "train.rationales / train.rationale_max_tokens: not available with a kd: section (its "
                "teacher targets are stored per example and task, for the one chosen rationale); use "
                "rationales: one"
            )
        if method != "step_by_step" and "label" not in kd.tasks:
            raise ValueError(
                f"kd.tasks {kd.tasks}: train.method '{method}' has no rationale rows; use kd.tasks: [label]"
            )
        if kd.label_distribution and "label" in kd.tasks:
            if method in ("single_task", "answer_first"):
                raise ValueError(
                    f"kd.label_distribution: train.method '{method}' has no label-only target; use "
                    "standard, distill, step_by_step or rationale_input"
                )
            labels = _task_labels(self.task)
            if labels is not None and not labels:
                raise ValueError(
                    f"kd.label_distribution: task '{self.task.title or self.task.name}' has no closed "
                    "label set (task.labels)"
                )
        return self


def _task_labels(task: TaskConfig) -> list[str] | None:
    """The task's closed label set ([] when it has none), or None when only its spec file can say
    and the file cannot be read here (then training checks it)."""
    from stepdistill.tasks import BUILTIN, resolve_generic

    if task.name in BUILTIN:
        return list(BUILTIN[task.name].labels or [])
    try:
        return list(resolve_generic(task).labels or [])
    except ConfigError:
        return None


def _parse_scalar(text: str) -> Any:
    """Read an override value as YAML so `--train.lr 1e-4`, `--x true`, `--y [1,2]` get their types."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ["--train.lr", "1e-4", "--name=x", ...] to a nested dict (in place) and return it."""
    i = 0
    while i < len(overrides):
        item = overrides[i]
        if not item.startswith("--"):
            raise ConfigError(f"override '{item}' must look like --section.key value")
        key, sep, value = item[2:].partition("=")
        if not sep:
            if i + 1 >= len(overrides):
                raise ConfigError(f"override --{key} has no value")
            value = overrides[i + 1]
            i += 1
        i += 1
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"override --{key}: '{part}' is not a section")
            node = node[part]
        node[parts[-1]] = _parse_scalar(value)
    return raw


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config class holding the field at `loc` (("train", "max_step") -> TrainConfig)."""
    model: Any = Config
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        ann = field.annotation
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            ann = next((a for a in typing.get_args(ann) if isinstance(a, type)), None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _hint(e: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """The nearest valid key or value to what was written, as " (did you mean `x`?)"."""
    if e["type"] == "extra_forbidden":
        model = _model_at(loc)
        return suggest(loc[-1], list(model.model_fields)) if model else ""
    expected = (e.get("ctx") or {}).get("expected")
    if e["type"] == "literal_error" and expected and isinstance(e.get("input"), str):
        return suggest(e["input"], re.findall(r"'([^']*)'", expected))
    return ""


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")  # our validators name the fields themselves
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        allowed = (e.get("ctx") or {}).get("expected")
        extra = f" (allowed: {allowed})" if allowed and allowed not in msg else ""
        lines.append(f"  {loc}: {msg}{extra}{_hint(e, tuple(e['loc']))}")
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file, apply overrides and validate. Relative data paths stay as written."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    apply_overrides(raw, list(overrides or []))
    from stepdistill.training.resume_check import without_removed

    return config_from_dict(without_removed(raw, str(path)), str(path))


def resolved(cfg: Config) -> Config:
    """The config as it runs: a generic task's spec file folded into the task section (so a run
    folder's config.yaml reloads to the same task even when the spec file moves or changes)."""
    from stepdistill.tasks import resolve_generic

    if cfg.task.spec is None:
        return cfg
    return cfg.model_copy(update={"task": resolve_generic(cfg.task).model_copy(update={"spec": None})})


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config (every default filled in, task spec folded in) atomically."""
    from stepdistill.data.io import atomic_write_text

    dumped = resolved(cfg).model_dump(mode="json")
    atomic_write_text(path, yaml.safe_dump(dumped, sort_keys=False))
