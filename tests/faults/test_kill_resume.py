"""Training under real process faults: SIGKILL at seeded random instants and inside a checkpoint
write, SIGTERM and Ctrl-C (SIGINT), a damaged checkpoint, a second writer on the same run folder.

One run folder goes through all of them in a row; after every interruption `--resume` must succeed,
and the finished run must hold exactly the weights of an uninterrupted run of the same config.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from faultkit import run_cli, start_cli
from safetensors.torch import load_file

from stepdistill.cli import main
from stepdistill.training.checkpoint import list_checkpoints
from stepdistill.training.preempt import EXIT_PREEMPTED

pytestmark = pytest.mark.slow


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _wait_for(predicate, timeout: float = 120.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _steps(run: Path) -> list[int]:
    return [s for s, _ in list_checkpoints(run)]


def _resume_args(cfg: Path, run: Path) -> list[str]:
    # Before the first checkpoint there is nothing to resume: start again.
    return ["train", str(cfg), "--resume"] if _steps(run) else ["train", str(cfg)]


def test_kills_preemption_and_damage_resume_to_identical_weights(tmp_path, tiny_causal_dir, train_config):
    steps = {"max_steps": 20, "eval_every": 10}
    ref_cfg = train_config(tmp_path, tiny_causal_dir, name="ref", **steps)
    ref = start_cli("train", str(ref_cfg))  # the uninterrupted run, alongside the interrupted one
    ref_run = tmp_path / "runs" / "ref"

    cfg = train_config(tmp_path, tiny_causal_dir, name="k", **steps)
    run = tmp_path / "runs" / "k"
    rng = random.Random(12)  # the kill instants are seeded: a failure reproduces
    events = []

    # 1-2. SIGKILL at two seeded random instants: after a random number of steps, then a random
    # fraction of a second more. Every checkpoint write pauses 0.1 s, which bounds the progress per
    # second on any machine and makes many of these kills land inside a write or a prune.
    target = 0
    for _ in range(2):
        target += rng.randint(2, 4)
        proc = start_cli(*_resume_args(cfg, run), STEPDISTILL_TEST_PAUSE_CHECKPOINT="0.1")
        _wait_for(lambda t=target: max(_steps(run), default=0) >= t, proc=proc)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.wait()
        inside_write = [p.name for p in (run / "checkpoints").glob(".tmp-step-*")]
        events.append(("SIGKILL", _steps(run), inside_write))

    # 3. SIGKILL inside a checkpoint write: the model files are on disk, the optimizer state is not.
    started = time.time()
    proc = start_cli(*_resume_args(cfg, run), STEPDISTILL_TEST_PAUSE_CHECKPOINT="30")

    # Written by this process: an earlier kill may have left a .tmp-step-N of the same name, and this
    # process re-creates it only after start-up (seconds), so an mtime at or before `started` is stale.
    def paused_writes() -> list[Path]:
        out = []
        for p in (run / "checkpoints").glob(".tmp-step-*/model.safetensors"):
            try:
                if p.stat().st_mtime > started and not (p.parent / "trainer_state.pt").exists():
                    out.append(p.parent)
            except FileNotFoundError:
                pass
        return out

    _wait_for(lambda: bool(paused_writes()), proc=proc)
    partial = paused_writes()[0]
    # ... meanwhile a second writer on the same run folder is refused at once, naming the first
    assert main(["train", str(cfg), "--resume"]) == 2
    proc.kill()
    proc.wait()
    half_written = int(partial.name.rsplit("-", 1)[1])
    assert half_written not in _steps(run)  # a half-written checkpoint is never listed
    events.append(("SIGKILL mid-write", _steps(run), [partial.name]))

    # 4-5. SIGTERM, then Ctrl-C: a checkpoint at the next step boundary and exit code 75
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = max(_steps(run))
        proc = start_cli("train", str(cfg), "--resume")
        _wait_for(lambda b=before: max(_steps(run), default=0) > b, proc=proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
        stopped = max(_steps(run))
        assert f"{sig.name}: stopped at step {stopped} of 20 with a checkpoint" in err
        events.append((sig.name, _steps(run), []))

    # 6. damage the newest checkpoint: it is reported, set aside, and the previous one is used
    newest = max(_steps(run))
    target = run / "checkpoints" / f"step-{newest}" / "model.safetensors"
    target.write_bytes(target.read_bytes()[:-100])
    done = run_cli("train", str(cfg), "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"checkpoint step-{newest} is incomplete or corrupt (model.safetensors has" in done.stderr
    assert (run / "checkpoints" / f"corrupt-step-{newest}").is_dir()

    _, err = ref.communicate(timeout=240)
    assert ref.returncode == 0, err[-3000:]
    assert len(events) == 5 and all(e[1] for e in events[2:]), events
    assert _same(_weights(run / "best"), _weights(ref_run / "best")), events
    final = run / "checkpoints" / "step-20"
    assert _same(_weights(final), _weights(ref_run / "checkpoints" / "step-20")), events
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (ref_run, run))
    assert ma["splits"] == mb["splits"] and ma["best_step"] == mb["best_step"], events
