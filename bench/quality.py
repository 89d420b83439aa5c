"""Quality grid: every training method on the paper's data with the PaLM 540B completions.

    .venv/bin/python bench/quality.py --config cpu                       # the whole CPU grid
    .venv/bin/python bench/quality.py --config cpu --only method=sbs_teacher,seed=0,fraction=0.125
    .venv/bin/python bench/quality.py --config cpu --smoke --only method=standard   # minutes
    .venv/bin/python bench/quality.py --config cpu --report              # table only, no training

A cell is one (task, method, seed, train fraction); the grid comes from bench/configs/<config>.yaml.
Each finished cell is written at once (atomically) to bench/results/quality-<config>.json, and a
re-invocation skips the cells already there, so the grid can be run in slices and resumed.
Validation is 10% of train carved with a fixed seed; the test split is scored once, with the
checkpoint chosen on validation (stepdistill.train.train does both).
The floor cell is the untrained student prompted few-shot with the teacher's own prompts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import shutil
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from stepdistill.threads import sleep_idle_cpu_threads  # noqa: E402

sleep_idle_cpu_threads()  # before torch loads

from stepdistill.data.io import write_json  # noqa: E402
from stepdistill.errors import ConfigError  # noqa: E402

# The PaLM teacher outputs (../shared/data beside the checkout; STEPDISTILL_SHARED_DATA elsewhere)
SHARED_DATA = Path(os.environ.get("STEPDISTILL_SHARED_DATA", ROOT.parent / "shared" / "data"))
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
FLOOR = "floor"
# Test accuracy (%) of T5-Base (220M) students in the paper (Hsieh et al., 2023), for the table beside
# ours; the paper's students, not ours, and not the PaLM teacher.
PAPER_T5_BASE = {
    "standard": {"cqa": 62.19, "svamp": 62.63},
    "sbs_teacher": {"cqa": 63.29, "svamp": 65.50},
    "single_task": {"cqa": 61.37, "svamp": 63.00},
}
METHOD_TITLES = {
    "standard": "standard fine-tuning (gold labels)",
    "distill": "standard distillation (PaLM labels)",
    "sbs_gold": "step-by-step, gold labels + PaLM rationales",
    "sbs_teacher": "step-by-step, PaLM labels + PaLM rationales",
    "single_task": "single-task (rationale then label)",
    FLOOR: "floor: untrained student, few-shot with the teacher's prompts",
}
CELL_KEYS = ("task", "method", "seed", "fraction")
# (A, B): the paper's two comparisons, and its headline (PaLM labels + rationales vs gold fine-tuning).
COMPARISONS = (("sbs_gold", "standard"), ("sbs_teacher", "distill"), ("sbs_teacher", "standard"))


@dataclass(frozen=True)
class Cell:
    task: str
    method: str  # a key of the config's `methods`, or "floor"
    seed: int
    fraction: float

    @property
    def key(self) -> str:
        return f"task={self.task},method={self.method},seed={self.seed},fraction={self.fraction:g}"


# ---------------------------------------------------------------- grid spec


def load_spec(name_or_path: str) -> dict[str, Any]:
    """Read bench/configs/<name>.yaml (or a path) and check the keys the grid needs."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ConfigError(
            f"quality config {path} does not exist (have: {sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))})"
        )
    spec = yaml.safe_load(path.read_text()) or {}
    if "settings" in spec:  # the tasks are those of the settings
        for i, setting in enumerate(spec["settings"]):
            if not isinstance(setting, dict) or "task" not in setting:
                raise ConfigError(f"{path}: settings[{i}] must be a mapping with a 'task' key")
        spec["tasks"] = list(dict.fromkeys(s["task"] for s in spec["settings"]))
    for key in ("tasks", "methods", "seeds", "train"):
        if key not in spec:
            raise ConfigError(f"{path}: missing key '{key}'")
    for name, over in spec["methods"].items():
        if not isinstance(over, dict) or "method" not in over:
            raise ConfigError(f"{path}: methods.{name} must be a mapping with a 'method' key")
    for i, setting in enumerate(spec.get("settings", [])):
        for name in setting.get("methods", []):
            if name not in spec["methods"]:
                raise ConfigError(f"{path}: settings[{i}].methods: '{name}' is not in methods")
    for name, over in spec["methods"].items():
        if "annotation" in over and over["annotation"] not in (spec.get("demo") or {}).get("annotations", {}):
            raise ConfigError(
                f"{path}: methods.{name}.annotation: '{over['annotation']}' is not in demo.annotations"
            )
    for name in spec.get("data_efficiency", {}).get("methods", []):
        if name not in spec["methods"]:
            raise ConfigError(f"{path}: data_efficiency.methods: '{name}' is not in methods")
    spec.setdefault("name", path.stem)
    return spec


def grid(spec: dict[str, Any]) -> list[Cell]:
    """All cells: every method x seed at fraction 1, the data-efficiency fractions for the chosen
    methods, and one floor cell per task (no training, so no seeds)."""
    cells: list[Cell] = []
    if "settings" in spec:  # explicit (task, fraction) pairs: every method and seed on each
        for setting in spec["settings"]:
            task, fraction = setting["task"], float(setting.get("fraction", 1.0))
            methods = setting.get("methods", spec["methods"])  # a setting may run a subset
            cells += [Cell(task, m, int(s), fraction) for m in methods for s in spec["seeds"]]
        return cells
    eff = spec.get("data_efficiency", {})
    for task in spec["tasks"]:
        if spec.get("floor", True):
            cells.append(Cell(task, FLOOR, 0, 1.0))
        for method in spec["methods"]:
            fractions = [1.0] + [f for f in eff.get("fractions", []) if method in eff.get("methods", [])]
            for fraction in sorted(set(fractions), reverse=True):
                cells += [Cell(task, method, int(seed), float(fraction)) for seed in spec["seeds"]]
    return cells


def parse_only(text: str | None) -> dict[str, str]:
    """`method=sbs_teacher,seed=0,fraction=0.125` -> {"method": "sbs_teacher", ...}."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in CELL_KEYS:
            raise ConfigError(
                f"--only: '{part}' must look like KEY=VALUE with KEY one of {', '.join(CELL_KEYS)}"
            )
        out[key] = value.strip()
    return out


def matches(cell: Cell, only: dict[str, str]) -> bool:
    for key, want in only.items():
        have = getattr(cell, key)
        if isinstance(have, float):
            if not math.isclose(have, float(want)):
                return False
        elif str(have) != want:
            return False
    return True


# ---------------------------------------------------------------- results file


def load_results(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"cells": {}}
    import json

    return json.loads(path.read_text(encoding="utf-8"))


class CellsFailed(RuntimeError):
    """Cells whose training raised; the grid ran every other cell before this is raised."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        lines = "\n".join(f"  {key}: {err}" for key, err in failures.items())
        super().__init__(f"{len(failures)} cell(s) failed (rerun to retry them):\n{lines}")


def run_grid(
    cells: list[Cell],
    path: Path,
    runner: Callable[[Cell], dict[str, Any]],
    claims: Path | None = None,
    stop_at: float | None = None,
) -> list[str]:
    """Run every cell not yet in `path`, writing the file after each one; returns the keys run.
    With `claims` (a folder shared by concurrent workers) a cell runs only in the worker that
    created its claim file; no cell starts after `stop_at` (time.time()). A cell that raises is
    reported and its claim released, the remaining cells still run, and `CellsFailed` names the
    failures at the end; an interrupt (Ctrl-C) stops the grid at once."""
    done: list[str] = []
    failures: dict[str, str] = {}
    for cell in cells:
        if stop_at is not None and time.time() > stop_at:
            print(f"stop: no time left to start {cell.key}", flush=True)
            break
        results = load_results(path)  # re-read: another slice may have finished cells meanwhile
        if cell.key in results["cells"]:
            print(f"skip {cell.key} (done)", flush=True)
            continue
        if claims is not None and not claim(claims, cell.key):
            print(f"skip {cell.key} (another worker runs it)", flush=True)
            continue
        try:
            if claims is not None and cell.key in load_results(path)["cells"]:
                continue  # finished (and released) since the read above
            print(f"run  {cell.key}", flush=True)
            t0 = time.perf_counter()
            try:
                out = runner(cell)
            except Exception as err:  # noqa: BLE001 - one broken cell must not stop the grid
                failures[cell.key] = f"{type(err).__name__}: {err}"
                print(f"FAIL {cell.key}: {failures[cell.key]}", flush=True)
                continue
            out["cell_wall_s"] = round(time.perf_counter() - t0, 1)
            out["finished"] = dt.datetime.now().isoformat(timespec="seconds")
            with locked(path):  # read-modify-write: workers finishing together must not drop a cell
                results = load_results(path)
                results["cells"][cell.key] = {**{k: getattr(cell, k) for k in CELL_KEYS}, **out}
                write_json(path, results)
            done.append(cell.key)
        finally:
            if claims is not None:  # after the write: a worker that claims it next sees it done
                _release(claims, cell.key)
    if failures:
        raise CellsFailed(failures)
    return done


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock (flock) on `path`.lock for the duration of the block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / "runs" / f"{path.name}.lock"  # under runs/: git ignores it
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _claim_path(folder: Path, key: str) -> Path:
    return folder / (key.replace("=", "-").replace(",", "_") + ".claim")


def _release(folder: Path, key: str) -> None:
    _claim_path(folder, key).unlink(missing_ok=True)


def claim(folder: Path, key: str) -> bool:
    """Whether this process now owns cell `key`: it created `folder/<key>.claim` (O_EXCL, atomic),
    or took over a claim whose process is gone (atomic rename of the stale file, then create)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = _claim_path(folder, key)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            seen = _claim_text(path)
            if _claim_alive(seen):
                return False
            moved = path.with_name(f"{path.name}.stale-{os.getpid()}")
            try:  # only one of several workers renames the stale file; the others see it gone
                os.rename(path, moved)
            except FileNotFoundError:
                continue
            if _claim_text(moved) != seen:  # another worker's fresh claim moved by mistake: put it back
                os.link(moved, path)
                return False
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{socket.gethostname()} {os.getpid()}\n")
        return True
    return False


def _claim_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _claim_alive(text: str | None) -> bool:
    """The claim's process still runs (a claim from another host counts as alive)."""
    try:
        host, pid = (text or "").split()
    except ValueError:
        return True  # being written, or just taken over: leave it to its owner
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_workers(argv: list[str], n: int, stop_at: float | None) -> int:
    """N copies of this script (`--worker`), each taking unclaimed cells of the same grid; CPU
    threads are shared out between them. Returns the number of workers that failed."""
    import subprocess

    threads = str(max(1, (os.cpu_count() or 1) // n))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    cmd = [sys.executable, __file__, *argv, "--workers", "1", "--worker"]
    cmd += [] if stop_at is None else ["--stop-at", str(stop_at)]
    procs = [subprocess.Popen(cmd, env=env) for _ in range(n)]
    # Reap each worker as soon as it ends: an unreaped (zombie) worker still answers os.kill, so its
    # claim would look alive to the others and its cell would wait for the slowest worker.
    while any(p.poll() is None for p in procs):
        time.sleep(1)
    codes = [p.returncode for p in procs]
    print(f"workers finished with exit codes {codes}", flush=True)
    return sum(c != 0 for c in codes)


# ---------------------------------------------------------------- aggregation and table


def mean_se(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (None with one value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None
    return m, statistics.stdev(values) / math.sqrt(len(values))


def aggregate(results: dict[str, Any]) -> dict[tuple[str, str, float], dict[str, Any]]:
    """(task, method, fraction) -> test accuracy mean, standard error, seeds, wall time."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for cell in results["cells"].values():
        groups.setdefault((cell["task"], cell["method"], float(cell["fraction"])), []).append(cell)
    out = {}
    for key, cells in groups.items():
        m, se = mean_se([100 * c["test_accuracy"] for c in cells])
        out[key] = {"mean": m, "se": se, "n": len(cells), "wall_s": sum(c["cell_wall_s"] for c in cells)}
    return out


def _fmt(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "not run"
    if entry["se"] is None:
        return f"{entry['mean']:.2f} (1 seed)"
    return f"{entry['mean']:.2f} ± {entry['se']:.2f} ({entry['n']} seeds)"


def _measured(results: dict[str, Any]) -> str:
    days = sorted({str(c.get("finished", "?"))[:10] for c in results["cells"].values()})
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def teacher_accuracy(task_name: str, data_dir: Path) -> float:
    """PaLM's test accuracy (%) measured from the imported files with the task's own metric."""
    from stepdistill.data.io import read_annotations
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig

    task = get_task(TaskConfig(name="arith" if task_name == DEMO else task_name))
    test = read_annotations(data_dir / "test.jsonl")
    return 100 * sum(task.is_correct(a.teacher_label, a.gold) for a in test) / len(test)


def markdown(spec: dict[str, Any], results: dict[str, Any], teacher: dict[str, float], command: str) -> str:
    agg = aggregate(results)
    tasks = spec["tasks"]
    tr = spec["train"]
    wall = sum(c["cell_wall_s"] for c in results["cells"].values())
    machine = results.get("machine", {})
    lines = [
        f"## Quality: test accuracy by method (config `{spec['name']}`)",
        "",
        f"Cells measured {_measured(results)}; table rebuilt {dt.date.today().isoformat()}. Command: `{command}`",
        f"Student: {spec.get('student', {}).get('model', 'embedded:smollm2')} (SmolLM2-135M-Instruct, offline "
        f"GGUF dequantised) for every method; {tr.get('max_steps')} steps, batch {tr.get('batch_size')}, "
        f"lr {tr.get('lr')}, alpha {tr.get('alpha', 0.5)}; seeds run: "
        f"{sorted({c['seed'] for c in results['cells'].values()})} (each entry says how many). Validation: 10% of train "
        "(fixed seed 0); test scored once with the checkpoint chosen on validation. "
        f"Hardware: {machine.get('device', '?')} ({machine.get('cpu', '?')}). "
        f"Wall time of the cells so far: {wall / 60:.1f} min ({len(results['cells'])} cells).",
        "",
        "| method | "
        + " | ".join(
            f"{t.upper()} ours (SmolLM2-135M student) | {t.upper()} paper (T5-Base 220M student)"
            for t in tasks
        )
        + " |",
        "|---|" + "---:|---:|" * len(tasks),
        "| teacher: PaLM 540B completions shipped with the paper's code, scored here by our parser | "
        + " | ".join(f"{teacher.get(t, float('nan')):.2f} | (not a student)" for t in tasks)
        + " |",
    ]
    for method in [FLOOR, *spec["methods"]]:
        cols = []
        for t in tasks:
            paper = PAPER_T5_BASE.get(method, {}).get(t)
            cols.append(f"{_fmt(agg.get((t, method, 1.0)))} | {paper if paper is not None else '-'}")
        title = METHOD_TITLES.get(method, method)
        if method == FLOOR and spec.get("floor_max_examples"):
            title += f" (first {spec['floor_max_examples']} test rows)"
        lines.append(f"| {title} | " + " | ".join(cols) + " |")
    eff = spec.get("data_efficiency", {})
    if eff.get("fractions"):
        fracs = sorted(set(eff["fractions"]) | {1.0})
        lines += ["", "Data efficiency (test accuracy, share of the training set):", ""]
        lines += ["| task | method | " + " | ".join(f"{f:.1%}" for f in fracs) + " |"]
        lines += ["|---|---|" + "---:|" * len(fracs)]
        for t in tasks:
            for method in eff["methods"]:
                cols = [_fmt(agg.get((t, method, float(f)))) for f in fracs]
                lines.append(f"| {t} | {METHOD_TITLES.get(method, method)} | " + " | ".join(cols) + " |")
    return "\n".join(lines + comparison_lines(spec, results))


def comparison_lines(spec: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """The paper's comparisons at the full training set, with their 95% intervals."""
    from compare import comparison_table

    head = ["", "Comparisons (test accuracy, full training set; A − B in points with its 95% interval):", ""]
    return head + comparison_table(spec["tasks"], list(results["cells"].values()), COMPARISONS, METHOD_TITLES)


# ---------------------------------------------------------------- running a cell


def prepare_data(task: str, out: Path) -> Path:
    """The task's official files imported once into annotated JSONL under bench/results/data/."""
    from stepdistill.data.official import import_official

    if not (out / "train.jsonl").exists():
        import_official(str(SHARED_DATA), task, out)
    return out


DEMO = "demo"  # the demo task: generated problems annotated by the demo's embedded teacher


def data_dir_for(spec: dict[str, Any], cell: Cell) -> Path:
    """The annotated files of a cell: the imported official files of its task, or for the demo task
    the annotation its method names (`annotation: k8` -> bench/results/data/study-demo-k8)."""
    if cell.task != DEMO:
        return RESULTS_DIR / "data" / cell.task
    return demo_dir(spec, spec["methods"][cell.method].get("annotation", "k1"))


def demo_dir(spec: dict[str, Any], annotation: str) -> Path:
    """bench/results/data/<config name>-<annotation>: a grid's demo annotations are its own."""
    return RESULTS_DIR / "data" / f"{spec['name']}-{annotation}"


def prepare_demo(spec: dict[str, Any], wanted: set[str] | None = None) -> dict[str, Any]:
    """Generate the demo's splits once and annotate their training split once per entry of
    demo.annotations (name -> annotate.samples) with the demo config's teacher (test too, for the
    teacher's reference accuracy, with the first); returns each annotation's summary (its wall
    seconds are the cost side of the study). Cached: a re-run annotates nothing. `wanted`: only
    these annotations (those of the cells --only selects; the first is always made: its test
    split gives the teacher's reference accuracy)."""
    import json

    from stepdistill.annotate import annotate
    from stepdistill.config import load_config
    from stepdistill.data.io import write_jsonl
    from stepdistill.demo_data import demo_splits
    from stepdistill.schema import Annotation
    from stepdistill.tasks import get_task
    from stepdistill.teachers.registry import LazyTeacher

    cfg = load_config(ROOT / spec[DEMO].get("config", "configs/demo.yaml"))
    # demo.teacher: fields laid over the demo config's teacher (e.g. the dtype a study was annotated in)
    cfg.teacher = cfg.teacher.model_copy(update=spec[DEMO].get("teacher", {}))
    task = get_task(cfg.task)
    records = demo_splits(cfg.sweep.demo_data.sizes, cfg.sweep.demo_data.seed)
    rows = {s: [Annotation.from_example(task.example_from_record(r, i)) for i, r in enumerate(recs)]
            for s, recs in records.items()}  # fmt: skip
    teacher, summaries = LazyTeacher(cfg.teacher), {}
    try:
        for n, (name, k) in enumerate(spec[DEMO]["annotations"].items()):
            if n and wanted is not None and name not in wanted:
                continue
            out = demo_dir(spec, name)
            done = out / "summary.json"
            if not done.exists():
                acfg = cfg.annotate.model_copy(update={"samples": int(k), "progress": False})
                split_summaries = {}
                for split in ["train", "test"] if n == 0 else ["train"]:
                    _, split_summaries[split] = annotate(
                        task, rows[split], cfg.teacher, acfg, out / "cache.sqlite", out / f"{split}.jsonl",
                        teacher=teacher, split=split,
                    )  # fmt: skip
                if n:  # the test rows unannotated: students are scored against gold
                    write_jsonl(out / "test.jsonl", [a.to_dict() for a in rows["test"]])
                write_jsonl(out / "valid.jsonl", [a.to_dict() for a in rows["valid"]])
                write_json(done, {"splits": split_summaries})
            summaries[name] = json.loads(done.read_text())
    finally:
        teacher.close()
    return summaries


def cell_config(spec: dict[str, Any], cell: Cell, data_dir: Path, smoke: bool):
    """The stepdistill Config of one training cell."""
    from stepdistill.config import config_from_dict

    train = {k: v for k, v in spec["train"].items()}
    train.update(spec.get("task_train", {}).get(cell.task, {}))  # per-task budgets and lengths
    train.update({k: v for k, v in spec["methods"][cell.method].items() if k != "annotation"})
    train["seed"] = cell.seed
    data = {"train": str(data_dir / "train.jsonl"), "test": str(data_dir / "test.jsonl")}
    data.update(valid_fraction=0.1, split_seed=0, train_fraction=cell.fraction)
    if cell.task == DEMO:  # the demo's own validation split (gold equations)
        data["valid"] = str(data_dir / "valid.jsonl")
    data.update(spec.get("task_data", {}).get(cell.task, {}))  # e.g. a smaller validation split
    if smoke:  # prove the wiring in minutes: few steps, few rows
        train.update(max_steps=4, eval_every=4, batch_size=2)
        data["max_examples"] = 8
    raw = {
        "name": cell.key.replace("=", "-").replace(",", "_") + ("-smoke" if smoke else ""),
        "out_dir": spec.get("out_dir", str(RESULTS_DIR / "runs" / spec["name"])),
        "task": {"name": "arith" if cell.task == DEMO else cell.task},
        "data": data,
        "student": spec.get("student", {"model": "embedded:smollm2"}),
        "train": train,
        # per-task evaluation, e.g. ranking CQA's five choices (SVAMP has no label set to rank)
        "eval": {
            **spec.get("eval", {}),
            **spec.get("task_eval", {}).get(cell.task, {}),
            "splits": ["valid", "test"],
        },
    }
    return config_from_dict(raw, f"quality cell {cell.key}")


def run_training_cell(spec: dict[str, Any], cell: Cell, data_dir: Path, smoke: bool) -> dict[str, Any]:
    import json

    from stepdistill.train import train
    from stepdistill.training.checkpoint import latest_checkpoint

    cfg = cell_config(spec, cell, data_dir, smoke)
    # A cell interrupted mid-training continues from its last checkpoint rather than restarting.
    run_dir = train(cfg, resume=latest_checkpoint(cfg.run_dir) is not None)
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    rows = [
        json.loads(line) for line in (Path(run_dir) / "predictions" / "test.jsonl").read_text().splitlines()
    ]
    log = [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]
    curve_keys = ("step", "examples_seen", "train_flops", "valid_accuracy", "valid_correct")
    curve = [{k: r.get(k) for k in curve_keys} for r in log if "valid_accuracy" in r]
    # A finished cell needs no resume state; its weights (~0.5 GB for SmolLM2, 3.5 GB with the two
    # checkpoints) stay only with `keep_best: true`, so a 40-cell grid does not fill the disk.
    shutil.rmtree(Path(run_dir) / "checkpoints", ignore_errors=True)
    if not spec.get("keep_best", False):
        shutil.rmtree(Path(run_dir) / "best", ignore_errors=True)
    return {
        "valid_accuracy": metrics["splits"]["valid"]["accuracy"],
        "test_accuracy": metrics["splits"]["test"]["accuracy"],
        "best_step": metrics.get("best_step"),
        "train_wall_s": metrics["train"]["wall_s"],
        "steps": metrics["train"]["steps"],
        "stopped_early": metrics["train"].get("stopped_early"),
        "train_flops": metrics["train"].get("train_flops"),
        "examples_seen": metrics["train"].get("examples_seen"),
        # validation accuracy, with per-row outcomes, at every evaluation: the learning curve
        "curve": curve,
        "run_dir": str(run_dir),
        "n_test": len(rows),
        # per-example outcomes, so methods can be compared on the same test rows (bench/compare.py)
        "test_correct": {r["id"]: int(bool(r["correct"])) for r in rows},
    }


def run_floor_cell(
    cell: Cell, data_dir: Path, smoke: bool, max_new_tokens: int, max_examples: int | None = None
) -> dict[str, Any]:
    """The untrained student prompted few-shot with the teacher's prompts, scored on test (the
    first `max_examples` test rows when set: long few-shot prompts are slow on a CPU).

    Generation goes through the local teacher backend, as an annotation run with this model would:
    plain-text prompts, greedy, the shared few-shot prefix read once (prefix cache) and each batch
    stopped at the prompts' stop strings."""
    import torch
    from train_speed import smollm2_student

    from stepdistill.data.io import read_annotations
    from stepdistill.embedded import EMBEDDED_SMOLLM2
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig
    from stepdistill.teachers.base import Sampling
    from stepdistill.teachers.config import TeacherConfig
    from stepdistill.teachers.hf_local import HFLocalTeacher
    from stepdistill.teachers.prompting import build_prompt, load_prompt_spec

    task = get_task(TaskConfig(name=cell.task))
    prompt_spec = load_prompt_spec(task, TeacherConfig(backend="precomputed"))
    test = read_annotations(data_dir / "test.jsonl")[: 8 if smoke else max_examples]
    model, tok = smollm2_student()
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    tok.padding_side = "left"  # decoder-only batches must end where generation starts
    batch = 32 if torch.cuda.is_available() else 4
    cfg = TeacherConfig(backend="hf_local", model=EMBEDDED_SMOLLM2, prompt_format="text", batch_size=batch)
    teacher = HFLocalTeacher(model, tok, cfg)
    sampling = Sampling(max_tokens=max_new_tokens, stop=tuple(prompt_spec.stop))
    prompts = [build_prompt(prompt_spec, task, a.fields) for a in test]
    texts = [
        c.text
        for start in range(0, len(prompts), batch)
        for c in teacher.generate_batch(prompts[start : start + batch], sampling, 0)
    ]
    outcomes = {}
    for ann, text in zip(test, texts):  # texts end before the first stop string, as the teacher's
        outcomes[ann.id] = int(task.is_correct(task.parse_completion(text).label, ann.gold))
    return {
        "valid_accuracy": None,
        "test_accuracy": sum(outcomes.values()) / len(test),
        "n_test": len(test),
        "test_correct": outcomes,
    }


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="cpu", help="bench/configs/<name>.yaml or a path")
    p.add_argument("--only", help="run the matching cells only, e.g. method=sbs_teacher,seed=0")
    p.add_argument(
        "--smoke", action="store_true", help="4 steps on 8 rows per cell; results-<config>-smoke.json"
    )
    p.add_argument("--report", action="store_true", help="rebuild the BENCHMARKS.md table, train nothing")
    p.add_argument("--list", action="store_true", help="print the grid's cells and whether each is done")
    p.add_argument(
        "--seeds", help="comma-separated seeds replacing the config's, e.g. 0,1,2 to add seeds to a grid"
    )
    p.add_argument(
        "--workers", type=int, default=1, help="cells run concurrently (claiming cells atomically)"
    )
    p.add_argument(
        "--stop-after", type=float, help="seconds; no cell starts after them (running ones finish)"
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a child of --workers N
    p.add_argument("--stop-at", type=float, help=argparse.SUPPRESS)  # time.time() past which no cell starts
    args = p.parse_args(argv)
    stop_at = args.stop_at or (time.time() + args.stop_after if args.stop_after else None)
    spec = load_spec(args.config)
    if args.seeds:
        spec["seeds"] = [int(s) for s in args.seeds.split(",")]
    suffix = "-smoke" if args.smoke else ""
    path = RESULTS_DIR / f"quality-{spec['name']}{suffix}.json"
    cells = [c for c in grid(spec) if matches(c, parse_only(args.only))]
    if not cells:
        raise ConfigError(f"--only {args.only}: no cell of config '{spec['name']}' matches")
    if args.list:
        done = load_results(path)["cells"]
        for c in cells:
            print(("done " if c.key in done else "todo ") + c.key)
        return 0
    if DEMO in spec["tasks"] and not args.report:
        prepare_demo(
            spec, {spec["methods"][c.method].get("annotation", "k1") for c in cells if c.task == DEMO}
        )
    data_dirs = {t: prepare_data(t, RESULTS_DIR / "data" / t) for t in spec["tasks"] if t != DEMO}
    if DEMO in spec["tasks"]:  # the teacher's reference accuracy: the first (greedy) annotation's test
        data_dirs[DEMO] = demo_dir(spec, next(iter(spec[DEMO]["annotations"])))
    failed = 0  # cells (or workers) that failed
    if not args.report:
        from benchmarks_md import machine_info

        def runner(cell: Cell) -> dict[str, Any]:
            if cell.method == FLOOR:
                return run_floor_cell(
                    cell,
                    data_dirs[cell.task],
                    args.smoke,
                    spec.get("floor_max_new_tokens", 96),
                    spec.get("floor_max_examples"),
                )
            return run_training_cell(spec, cell, data_dir_for(spec, cell), args.smoke)

        claims = RESULTS_DIR / "runs" / f"{path.stem}.claims"  # under runs/: git ignores it
        try:
            if args.worker:  # a child of --workers N: its share of the cells, no report
                run_grid(cells, path, runner, claims, stop_at)
                return 0
            if args.workers > 1:
                shutil.rmtree(claims, ignore_errors=True)  # claims of an earlier, ended invocation
                failed = run_workers(sys.argv[1:] if argv is None else argv, args.workers, stop_at)
            else:
                run_grid(cells, path, runner, stop_at=stop_at)
        except CellsFailed as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            if args.worker:
                return 1
            failed = len(err.failures)
        results = load_results(path)
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU only"
        results["machine"] = {**machine_info("cpu"), "device": device}
        write_json(path, results)
    results = load_results(path)
    teacher = {t: teacher_accuracy(t, data_dirs[t]) for t in spec["tasks"]}
    command = "python bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if "settings" in spec:  # a study grid: learning curves and matched-compute comparisons
        from study_report import study_figure, study_markdown

        figure = (
            None if args.smoke else study_figure(spec, results, ROOT / "docs" / f"{spec['name']}-curves.png")
        )
        rel = str(figure.relative_to(ROOT)) if figure else None
        text = study_markdown(spec, results, teacher, command.strip(), rel)
    else:
        text = markdown(spec, results, teacher, command.strip())
    print(text)
    if not args.smoke:  # smoke numbers only prove the wiring; they never reach BENCHMARKS.md
        from benchmarks_md import write_section

        write_section(f"quality_{spec['name']}", text)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
