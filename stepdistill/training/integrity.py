"""Checkpoint integrity: a manifest of every file's size and SHA-256, written last.

A checkpoint folder is complete only when `manifest.json` exists and every file it lists has the
recorded size and hash. The manifest is the last file written before the folder is renamed into
place, so a process killed mid-write leaves a `.tmp-step-N` folder that is never mistaken for a
checkpoint, and a checkpoint damaged afterwards (a truncated copy, a disk error) is detected on
`--resume`: it is reported, set aside as `corrupt-step-N`, and the previous checkpoint is used.

`STEPDISTILL_TEST_PAUSE_CHECKPOINT=<seconds>` makes every checkpoint write pause between the model
files and the optimizer state (tests kill the process inside that window).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stepdistill.data.io import write_json
from stepdistill.errors import DiskFullError, StepDistillError

MANIFEST = "manifest.json"
PAUSE_ENV = "STEPDISTILL_TEST_PAUSE_CHECKPOINT"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    """Record size and SHA-256 of every file under `folder` in folder/manifest.json (atomically)."""
    folder = Path(folder)
    files = {
        str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)
    }
    write_json(folder / MANIFEST, {"files": files})


def problem(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint (missing manifest, missing, resized or changed
    file), or None when every file matches its manifest entry."""
    folder = Path(folder)
    try:
        listed = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (the write did not finish)"
    except (ValueError, KeyError, TypeError):
        return f"{MANIFEST} is not readable"
    for name, want in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{name} has {size} bytes, the manifest says {want['bytes']}"
        if _sha256(path) != want["sha256"]:
            return f"{name} does not match its SHA-256 in the manifest"
    return None


def newest_intact(found: list[tuple[int, Path]]) -> Path | None:
    """The newest checkpoint of `found` (oldest first) that passes `problem`; newer damaged ones are
    reported on stderr and renamed to corrupt-step-N so that they are neither used nor pruned.
    Under torchrun only the main process renames; the others skip the same damaged folders."""
    for step, path in reversed(found):
        why = problem(path)
        if why is None:
            return path
        if os.environ.get("RANK", "0") != "0":
            continue
        aside = path.with_name(f"corrupt-{path.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(path, aside)
        print(
            f"warning: checkpoint step-{step} is incomplete or corrupt ({why}); set aside as "
            f"{aside.name}, resuming from the previous checkpoint",
            file=sys.stderr,
            flush=True,
        )
    return None


def pause_for_tests() -> None:
    """Sleep STEPDISTILL_TEST_PAUSE_CHECKPOINT seconds (unset: no pause); a window for kill tests."""
    seconds = os.environ.get(PAUSE_ENV)
    if seconds:
        time.sleep(float(seconds))


def _is_disk_full(err: BaseException, folder: Path | None) -> bool:
    # torch.save reports a full disk as a RuntimeError about stream positions and safetensors as its
    # own error type; the free space left where the write failed tells them apart from real bugs.
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        return True
    if "No space left" in str(err) or "Disk quota" in str(err):
        return True
    probe = folder if folder is not None and folder.exists() else None
    return probe is not None and shutil.disk_usage(probe).free < LOW_SPACE_BYTES


LOW_SPACE_BYTES = 1 << 20


@contextmanager
def disk_full_is_an_error(what: str, partial: Path | None = None) -> Iterator[None]:
    """Turn a full disk while writing `what` into DiskFullError, removing the partial folder."""
    try:
        yield
    except Exception as err:
        if isinstance(err, StepDistillError) or not _is_disk_full(err, partial):
            raise
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        raise DiskFullError(
            f"disk full while writing {what} ({err}); the previous checkpoint is intact: "
            "free some space and run again with --resume"
        ) from None
