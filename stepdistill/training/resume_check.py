"""`--resume` continues the run that config.yaml describes, not a different one.

The config given to a resumed run is compared with the run's saved config.yaml key by key. Any
difference refuses the resume and lists the changed keys. `--allow-config-change` accepts changes to
keys that cannot alter the trained weights (how often to log, how many checkpoints to keep, the
evaluation batch size, progress bars); it is refused for every other key. An accepted change is
written to config.yaml, and the config it replaces is kept as config.prev.yaml.

A run saved by an older stepdistill lacks the options added since. Such a key is no difference when
the new config leaves it at its default (a new option's default keeps the earlier behaviour); set to
anything else, it is a change like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from stepdistill.errors import ConfigError

# Keys that change what is logged, kept or shown, or how the teacher is reached, never the
# optimisation: safe to change on resume.
SAFE_TO_CHANGE = frozenset(
    {
        "out_dir",
        "eval.batch_size",
        "train.log_every",
        "train.save_every",
        "train.keep_checkpoints",
        "train.prefetch_steps",
        "annotate.progress",
        "annotate.allow_incomplete",
        "teacher.concurrency",
        "teacher.timeout_s",
        "teacher.max_retries",
        "teacher.backoff_base_s",
        "teacher.backoff_max_s",
        "teacher.requests_per_minute",
        "teacher.tokens_per_minute",
    }
)
SAFE_SECTIONS = ("report.",)


def is_safe(key: str) -> bool:
    return key in SAFE_TO_CHANGE or key.startswith(SAFE_SECTIONS)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: node}


MISSING = object()

# Options an older version had and this one dropped (no measured gain: BENCHMARKS.md), with the value
# that changed nothing. A saved config.yaml holding them at that value still loads and resumes.
REMOVED = {("train", "compile"): False, ("train", "compile_timeout_s"): None}


def without_removed(raw: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """`raw` (a config as a nested dict) without the REMOVED options; one set to anything but its
    harmless value is refused, naming it."""
    from stepdistill.errors import ConfigError

    out = dict(raw)
    for (section, key), harmless in REMOVED.items():
        node = out.get(section)
        if not isinstance(node, dict) or key not in node:
            continue
        if harmless is not None and node[key] != harmless:
            raise ConfigError(
                f"{source}: {section}.{key} is no longer an option (it showed no measured gain and was "
                f"removed); delete it"
            )
        out[section] = {k: v for k, v in node.items() if k != key}
    return out


def config_diff(
    old: dict[str, Any], new: dict[str, Any], default: Callable[[str], Any] | None = None
) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs, sorted by key. With
    `default` (dotted key -> the option's default, or MISSING), a key absent from `old` whose new
    value is its default is left out: `old` was written before that option existed."""
    a, b = _flatten(without_removed(old)), _flatten(new)
    changed = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, MISSING), b.get(key, MISSING)
        if va == vb:
            continue
        if va is MISSING and default is not None and vb is not MISSING and default(key) == vb:
            continue
        changed.append((key, None if va is MISSING else va, None if vb is MISSING else vb))
    return changed


def model_default(model: BaseModel) -> Callable[[str], Any]:
    """dotted key -> the default of that field in `model`'s schema (as JSON), or MISSING."""

    def default(key: str) -> Any:
        *parents, leaf = key.split(".")
        node: Any = model
        for part in parents:
            node = getattr(node, part, None)
            if not isinstance(node, BaseModel):
                return MISSING
        field = type(node).model_fields.get(leaf)
        if field is None:
            return MISSING
        value = field.get_default(call_default_factory=True)
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    return default


def check_resume(
    saved_path: Path,
    new: dict[str, Any],
    allow_change: bool,
    write: bool = True,
    default: Callable[[str], Any] | None = None,
) -> list[tuple[str, Any, Any]]:
    """Refuse (ConfigError with the diff) a resume whose config differs from the saved one, unless
    `allow_change` and every changed key is in SAFE_TO_CHANGE; returns the accepted changes. Every
    process of a launch checks; only the one with `write` keeps the replaced file as config.prev.yaml.
    `default` (see `model_default`) lets options newer than the saved run stay at their defaults."""
    if not saved_path.exists():
        return []
    old = yaml.safe_load(saved_path.read_text()) or {}
    diff = config_diff(old, new, default)
    if not diff:
        return []
    lines = "\n".join(f"  {key}: {va!r} -> {vb!r}" for key, va, vb in diff)
    unsafe = [key for key, _, _ in diff if not is_safe(key)]
    if not allow_change:
        hint = (
            "pass --allow-config-change to accept them"
            if not unsafe
            else "resume with the saved config, or train under another --name"
        )
        raise ConfigError(f"--resume: the config differs from {saved_path}:\n{lines}\n{hint}")
    if unsafe:
        raise ConfigError(
            f"--resume --allow-config-change: {', '.join(unsafe)} would change the result "
            f"(only {', '.join(sorted(SAFE_TO_CHANGE))} and report.* may change on resume):\n{lines}"
        )
    if write:
        saved_path.with_name("config.prev.yaml").write_text(saved_path.read_text())
    return diff
