"""One run folder, one writer: `train`, `run` and `annotate` hold an exclusive lock on <run>/.lock.

The lock is a `filelock.FileLock` on <run>/.lock (an OS lock on an open file: flock on POSIX), so the
system releases it when the process ends however it ends (SIGKILL included): a killed run never
leaves a stale lock behind. A second command on the same folder while the first is alive fails at
once, naming the holder's pid and command (the holder writes them into the lock file). Within one process
the lock is re-entrant (`run` annotates and trains in folders it already holds); under torchrun only
rank 0 takes it.

A run folder that a command created and that holds nothing but the lock and config.yaml when the
command fails (e.g. the training data turned out empty) is removed, so no half-made run is left.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from stepdistill.errors import StepDistillError

LOCK_NAME = ".lock"
_held: dict[Path, tuple[FileLock, int]] = {}  # resolved folder -> (lock, depth)
_SCAFFOLD = {LOCK_NAME, "config.yaml"}


class RunFolderBusy(StepDistillError):
    """Another live process is writing to the same run folder."""


def _acquire(folder: Path, command: str) -> None:
    key = folder.resolve()
    if key in _held:
        lock, depth = _held[key]
        _held[key] = (lock, depth + 1)
        return
    path = folder / LOCK_NAME
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
        raise RunFolderBusy(
            f"{folder} is in use by {holder}; wait for it to finish (or stop it), or choose another --name"
        ) from None
    # Another descriptor may write the file: the OS lock belongs to the one the FileLock holds.
    path.write_text(f"`stepdistill {command}` (pid {os.getpid()})\n", encoding="utf-8")
    _held[key] = (lock, 1)


def _release(folder: Path) -> None:
    key = folder.resolve()
    lock, depth = _held[key]
    if depth > 1:
        _held[key] = (lock, depth - 1)
        return
    del _held[key]
    lock.release()


@contextmanager
def hold(folder: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold the run folder's lock for the duration (creating the folder); see the module docstring."""
    folder = Path(folder)
    if os.environ.get("RANK", "0") != "0":  # torchrun: the main process holds the lock for all
        yield
        return
    fresh = not folder.exists()
    # The outermost folder this command creates (e.g. runs/ itself on a first run): removed with it.
    created = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), folder)
    folder.mkdir(parents=True, exist_ok=True)
    _acquire(folder, command)
    ok = False
    try:
        yield
        ok = True
    finally:
        outermost = _held[folder.resolve()][1] == 1
        _release(folder)
        if not ok and fresh and outermost and {p.name for p in folder.iterdir()} <= _SCAFFOLD:
            shutil.rmtree(folder, ignore_errors=True)
            for parent in [*folder.parents]:  # the empty parents this command made, up to `created`
                if parent == created.parent or any(parent.iterdir()):
                    break
                parent.rmdir()
