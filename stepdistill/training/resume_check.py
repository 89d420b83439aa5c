"""`--resume` continues the run that config.yaml describes, not a different one.

The config given to a resumed run is compared with the run's saved config.yaml key by key. Any
difference refuses the resume and lists the changed keys. `--allow-config-change` accepts changes to
keys that cannot alter the trained weights (how often to log, how many checkpoints to keep, the
evaluation batch size, progress bars); it is refused for every other key. An accepted change is
written to config.yaml, and the config it replaces is kept as config.prev.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
        "train.compile_timeout_s",
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


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs, sorted by key."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    changed = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            changed.append((key, None if va is missing else va, None if vb is missing else vb))
    return changed


def check_resume(
    saved_path: Path, new: dict[str, Any], allow_change: bool, write: bool = True
) -> list[tuple[str, Any, Any]]:
    """Refuse (ConfigError with the diff) a resume whose config differs from the saved one, unless
    `allow_change` and every changed key is in SAFE_TO_CHANGE; returns the accepted changes. Every
    process of a launch checks; only the one with `write` keeps the replaced file as config.prev.yaml."""
    if not saved_path.exists():
        return []
    old = yaml.safe_load(saved_path.read_text()) or {}
    diff = config_diff(old, new)
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
