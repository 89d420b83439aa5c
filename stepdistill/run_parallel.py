"""`stepdistill run` with `sweep.workers`: independent trainings of a sweep at once, one process each.

    stepdistill run configs/demo.yaml                     # sweep.workers: auto (the demo's setting)
    stepdistill run my.yaml --sweep.workers 2             # two trainings at a time

Each training runs in a child process that reads its config (JSON) on stdin and calls the same
`stepdistill.train.train` a sequential run calls, with OMP/MKL limited to its share of the cores
(`sweep.workers: auto` = one training per core, at most one per pending training; on 2 cores two
one-thread trainings ran the demo's students faster than the same two with two threads in sequence,
see BENCHMARKS.md "Demo time"). A child writes everything it prints to <training>/train.log; the
parent prints one line when a training starts and one when it ends (time, steps, accuracies), and,
on a terminal, one bar over all trainings' steps.

Only the parent writes stages.json. A failed training is reported with its name, its exit code and
the end of its log; no new training starts after a failure, the running ones finish, and the run
exits with the failed training's code. The children run in their own process group: Ctrl-C or
SIGTERM reaches the parent alone, which passes each signal on once, so the first stops every
training at its next step with a checkpoint (exit 75; re-running `stepdistill run` resumes them) and
a second stops them at once, as for a single `stepdistill train`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import stepdistill
from stepdistill.config import Config
from stepdistill.errors import StepDistillError

LOG_NAME = "train.log"
_POLL_S = 0.5  # how often the parent looks at its children (and the steps they logged)


class TrainingFailed(StepDistillError):
    """A training of the sweep ended with an error; exit_code is that training's."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def cpu_cores() -> int:
    """The cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _has_accelerator() -> bool:
    """A GPU (or Apple MPS) visible: the trainings would share it, so `auto` runs them in turn."""
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available()


def plan_workers(setting: int | str, pending: int, cores: int | None = None) -> tuple[int, int]:
    """(trainings at once, threads per training) for `sweep.workers` and `pending` trainings.
    1 worker means the trainings run one after another in this process, with its threads."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: every training uses all processes
        return 1, 0
    cores = cores or cpu_cores()
    if setting == "auto":
        workers = 1 if _has_accelerator() else cores
    else:
        workers = int(setting)
    workers = max(1, min(workers, pending))
    return workers, max(1, cores // workers)


@dataclass
class _Job:
    sub: Config
    resume: bool
    proc: subprocess.Popen
    log: IO[bytes]
    start: float
    total: int  # the step budget, for the bar


def _child_env(threads: int) -> dict[str, str]:
    root = str(Path(stepdistill.__file__).resolve().parents[1])  # the child imports this same package
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",  # the tokenizer's own threads would exceed the share
        "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root,
    }


def _start(sub: Config, resume: bool, threads: int) -> _Job:
    folder = sub.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / LOG_NAME, "ab")  # noqa: SIM115 - closed when the child ends
    code = "import sys; from stepdistill.run_parallel import child; sys.exit(child())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_child_env(threads),
        start_new_session=True,  # signals reach the parent alone; it passes each on once
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"config": sub.model_dump(mode="json"), "resume": resume}).encode())
    proc.stdin.close()
    total = sub.train.max_steps or 0
    return _Job(sub, resume, proc, log, time.perf_counter(), total)


def child() -> int:
    """A child's main: train the config read from stdin; the exit code `stepdistill train` would give."""
    from stepdistill.config import config_from_dict
    from stepdistill.threads import sleep_idle_cpu_threads

    sleep_idle_cpu_threads()
    point = json.load(sys.stdin)
    sub = config_from_dict(point["config"], "sweep point (from stepdistill run)")
    from stepdistill.train import train

    try:
        train(sub, resume=point["resume"], allow_config_change=True)
    except StepDistillError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return getattr(err, "exit_code", 2)
    return 0


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N: 128 + N, as a shell


def _log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


def _steps_logged(folder: Path) -> int:
    """The last step a training logged (train_log.jsonl ends with it), 0 before its first row."""
    path = folder / "train_log.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            last = f.read().splitlines()[-1]
        return int(json.loads(last)["step"])
    except (OSError, IndexError, ValueError, KeyError):
        return 0


@contextmanager
def _signals_recorded() -> Iterator[list[int]]:
    """SIGINT and SIGTERM only recorded for the duration (the poll loop passes them on)."""
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="trainings", unit="step", disable=None)  # None: off unless a terminal


def _expected_cost(sub: Config) -> int:
    """A training's relative cost, to start the longest first (so that the last to finish is short):
    its step budget, twice for step_by_step, whose every step trains a label and a rationale pass."""
    return (sub.train.max_steps or 0) * (2 if sub.train.method == "step_by_step" else 1)


def train_concurrently(
    todo: list[tuple[Config, bool]],
    workers: int,
    threads: int,
    say: Callable[[str], None],
    finished: Callable[[Config, float], None],
) -> None:
    """Train every (config, resume) of `todo`, `workers` at a time with `threads` threads each, the
    costliest first (with 2 workers, the demo's two step-by-step students start together).
    `finished(sub, seconds)` runs in this process after each training that succeeded."""
    waiting = deque(sorted(todo, key=lambda point: -_expected_cost(point[0])))
    live: list[_Job] = []
    failed: list[tuple[_Job, int]] = []
    done_steps: dict[str, int] = {}
    bar = _bar(sum(sub.train.max_steps or 0 for sub, _ in todo))
    passed = 0
    with _signals_recorded() as received:
        while live or (waiting and not failed and not received):
            while waiting and len(live) < workers and not failed and not received:
                sub, resume = waiting.popleft()
                live.append(_start(sub, resume, threads))
                say(
                    f"train {sub.run_dir.name}" + (" (resuming)" if resume else "")
                    + f": started, {threads} thread{'s' * (threads > 1)}, output in {sub.run_dir / LOG_NAME}"
                )  # fmt: skip
            time.sleep(_POLL_S)
            for signum in received[passed:]:  # each signal once, to every running training
                for job in live:
                    job.proc.send_signal(signum)
            passed = len(received)
            for job in list(live):
                name = job.sub.run_dir.name
                if job.proc.poll() is None:
                    done_steps[name] = _steps_logged(job.sub.run_dir)
                    continue
                live.remove(job)
                job.log.close()
                code = _exit_code(job.proc.returncode)
                done_steps[name] = job.total if code == 0 else _steps_logged(job.sub.run_dir)
                if code == 0:
                    bar.clear()
                    finished(job.sub, time.perf_counter() - job.start)
                else:
                    failed.append((job, code))
            bar.n = sum(done_steps.values())
            bar.refresh()
    bar.close()
    _raise_for(failed, received, [sub for sub, _ in waiting])


def _raise_for(failed: list[tuple[_Job, int]], received: list[int], not_started: list[Config]) -> None:
    from stepdistill.training.preempt import EXIT_PREEMPTED

    later = f"; not started: {', '.join(s.run_dir.name for s in not_started)}" if not_started else ""
    if received:
        names = ", ".join(sorted(job.sub.run_dir.name for job, _ in failed)) or "none running"
        raise TrainingFailed(
            f"{signal.Signals(received[0]).name}: stopped trainings {names} (a checkpoint each where "
            f"one was due){later}; re-run the same `stepdistill run` to resume them",
            EXIT_PREEMPTED,
        )
    if failed:
        parts = [
            f"training {job.sub.run_dir.name} failed (exit {code}); the end of "
            f"{job.sub.run_dir / LOG_NAME}:\n{_log_tail(job.sub.run_dir / LOG_NAME)}"
            for job, code in failed
        ]
        raise TrainingFailed("\n".join(parts) + later, failed[0][1])


def summary_line(folder: Path, seconds: float) -> str:
    """`<name>: finished in N s, <steps and why it stopped>, best validation accuracy ..., test ...`."""
    metrics: dict[str, Any] = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    train = metrics.get("train", {})
    why = "stopped by patience" if train.get("stopped_early") else "at its step budget"
    splits = metrics.get("splits", {})
    scores = [
        f"{'best validation' if name == 'valid' else name} accuracy {100 * s['accuracy']:.1f}%"
        for name, s in splits.items()
        if s.get("accuracy") is not None
    ]
    best = f" (step {metrics['best_step']})" if metrics.get("best_step") is not None else ""
    if scores and scores[0].startswith("best validation"):
        scores[0] += best
    return (
        f"train {folder.name}: finished in {seconds:.0f} s, {train.get('steps')} steps ({why}); "
        + ", ".join(scores)
    )
