"""Task families and the registry that builds one from the `task` config section.

from stepdistill.tasks import get_task
task = get_task(cfg.task)          # CQATask, SVAMPTask, ESNLITask, ANLITask, ArithTask, GenericTask
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from stepdistill.errors import ConfigError, suggest
from stepdistill.tasks.arith import ArithTask
from stepdistill.tasks.base import Parsed, Task
from stepdistill.tasks.config import GENERIC_KEYS, TaskConfig
from stepdistill.tasks.cqa import CQATask
from stepdistill.tasks.generic import GenericTask
from stepdistill.tasks.nli import ANLITask, ESNLITask
from stepdistill.tasks.svamp import SVAMPTask

BUILTIN: dict[str, type[Task]] = {
    "cqa": CQATask,
    "svamp": SVAMPTask,
    "esnli": ESNLITask,
    "anli": ANLITask,
    "arith": ArithTask,
}

__all__ = ["BUILTIN", "GenericTask", "Parsed", "Task", "get_task", "resolve_generic"]


def _read_spec(path: str) -> dict[str, Any]:
    spec_path = Path(path)
    if not spec_path.is_file():
        raise ConfigError(f"task.spec: file {spec_path} does not exist")
    try:
        raw = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"task.spec: {spec_path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"task.spec: {spec_path} must hold a mapping of task keys")
    allowed = (*GENERIC_KEYS, "title")
    for key in sorted(set(raw) - set(allowed)):
        raise ConfigError(
            f"task.spec: {spec_path}: unknown key {key}{suggest(key, allowed)} (allowed: {', '.join(allowed)})"
        )
    return raw


def resolve_generic(cfg: TaskConfig) -> TaskConfig:
    """A TaskConfig whose generic keys are filled from the spec file; inline keys win."""
    if cfg.spec is None:
        return cfg
    merged = _read_spec(cfg.spec)
    # Inline keys win, but an inline null is "not given" (a saved config writes every key out).
    inline = cfg.model_dump(exclude_unset=True, exclude_none=True)
    merged.update({k: v for k, v in inline.items() if k in (*GENERIC_KEYS, "title")})
    merged.setdefault("title", Path(cfg.spec).stem)
    merged.update(name=cfg.name, spec=cfg.spec)
    try:
        return TaskConfig.model_validate(merged)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}{_hint(e)}" for e in err.errors())
        raise ConfigError(f"task.spec: {cfg.spec}: {problems}") from None


def _hint(e: dict[str, Any]) -> str:
    """ " (did you mean `normalized`?)" for a misspelt choice such as metric: normalised."""
    expected = (e.get("ctx") or {}).get("expected")
    if e["type"] != "literal_error" or not expected or not isinstance(e.get("input"), str):
        return ""
    return suggest(e["input"], re.findall(r"'([^']*)'", expected))


def get_task(cfg: TaskConfig) -> Task:
    """Build the Task named by `cfg.name`; for `generic`, validate and apply its spec."""
    if cfg.name in BUILTIN:
        return BUILTIN[cfg.name]()
    if cfg.name != "generic":
        raise ConfigError(f"task.name: '{cfg.name}' is not one of {', '.join([*BUILTIN, 'generic'])}")
    full = resolve_generic(cfg)
    return GenericTask(**{key: getattr(full, key) for key in GENERIC_KEYS if getattr(full, key) is not None})
