"""Preemption: SIGTERM (spot instances, SLURM, `docker stop`) and Ctrl-C stop training cleanly.

While `on_signals()` is active the first SIGTERM or SIGINT only sets a flag. The training loop reads
`stop_requested(accelerator)` after each optimizer step (several processes compare their flags, so
that all stop at the same one), writes a checkpoint at that step boundary and raises
`Preempted`; the command then exits with code 75 (EX_TEMPFAIL: try again later) and
`stepdistill train CONFIG --resume` continues exactly where it stopped. A second signal while the
checkpoint is being written restores the default behaviour, so pressing Ctrl-C twice still stops a
process at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from stepdistill.errors import StepDistillError

EXIT_PREEMPTED = 75
_received: list[int] = []


class Preempted(StepDistillError):
    """Training stopped on a signal after writing a checkpoint; `--resume` continues it."""

    exit_code = EXIT_PREEMPTED


def requested() -> bool:
    """Whether a stop signal arrived since `on_signals()` was entered."""
    return bool(_received)


def stop_requested(accelerator) -> bool:
    """Whether any process received SIGTERM/SIGINT: all of them stop at the same step boundary (a
    process that stopped alone would leave the others waiting in a collective). Several processes
    compare their flags with one all-reduce of one number per step."""
    flag = requested()
    if accelerator.num_processes == 1:
        return flag
    import torch

    votes = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(votes, reduction="sum").item() > 0)


def stopped_message(step: int, total_steps: int) -> str:
    return (
        f"{signal_name() or 'stop signal'}: stopped at step {step} of {total_steps} with a checkpoint; "
        "continue with `stepdistill train CONFIG --resume` (re-running `stepdistill run` resumes it too)"
    )


def signal_name() -> str:
    return signal.Signals(_received[0]).name if _received else ""


def _handler(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    _received.append(signum)
    if len(_received) > 1:  # a second signal: stop now, as without this module
        signal.signal(signum, signal.SIG_DFL)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.raise_signal(signum)
        return
    print(
        f"\n{signal.Signals(signum).name} received: stopping after this step with a checkpoint "
        "(send it again to stop at once)",
        file=sys.stderr,
        flush=True,
    )


@contextmanager
def on_signals() -> Iterator[None]:
    """Catch SIGTERM and SIGINT for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _received.clear()
