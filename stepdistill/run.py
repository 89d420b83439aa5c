"""`stepdistill run CONFIG`: demo data -> teacher annotation -> one training per sweep point -> report.

    stepdistill run configs/demo.yaml            # the offline demo (`make demo`)
    stepdistill run my.yaml --sweep.seeds [0,1,2]

Everything goes into <out_dir>/<name>/:

    config.yaml            the resolved config
    data/                  the demo task's data (when sweep.demo_data is set and data paths point here)
    annotations/           {train,valid,test}.jsonl, cache.sqlite, summary.json (annotate.py)
    <method>-f<fraction>-s<seed>/   one `stepdistill train` folder per sweep point; a method with
                           its own label settings is <method>-<label source>[-filtered], and with
                           sweep.students every folder starts with the student's name
    teacher_timing.json    the teacher's chain-of-thought time per example, for the cost section
    stages.json            fingerprints of finished stages, so a re-run skips what is done
    report/                report.html, report.md, figures/

Re-running the same command reuses every finished stage: annotation is skipped when its inputs are
unchanged (re-asking a cache would overwrite summary.json with a bill of zero), a training whose
metrics.json exists is skipped, an interrupted one resumes from its last checkpoint. With
sweep.workers > 1 independent trainings run at once, one process each (run_parallel.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stepdistill import runlock
from stepdistill.config import Config, config_from_dict, save_config
from stepdistill.data.io import read_annotations, write_json
from stepdistill.errors import ConfigError
from stepdistill.report.collect import TIMING_FILE
from stepdistill.run_config import MethodSpec, method_spec
from stepdistill.schema import student_folder
from stepdistill.threads import sleep_idle_cpu_threads

SPLITS = ("train", "valid", "test")


def _say(msg: str) -> None:
    print(f"[run] {msg}", flush=True)


def fingerprint(cfg: Config, sections: tuple[str, ...]) -> str:
    """A hash of the named config sections: a stage is redone when one of its inputs changes."""
    dumped = cfg.model_dump(mode="json")
    blob = json.dumps({s: dumped.get(s) for s in sections}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _stages(run_dir: Path) -> dict[str, str]:
    path = run_dir / "stages.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _mark_done(run_dir: Path, stage: str, stamp: str) -> None:
    stages = _stages(run_dir)
    stages[stage] = stamp
    write_json(run_dir / "stages.json", stages)


def make_demo_data(cfg: Config) -> None:
    """Write the demo task's splits to the data paths of the config (skipped when they exist)."""
    from stepdistill.demo_data import generate_demo_data

    demo = cfg.sweep.demo_data
    if cfg.task.name != "arith":
        raise ConfigError(f"sweep.demo_data generates the 'arith' task, but task.name is '{cfg.task.name}'")
    paths = {s: getattr(cfg.data, s) for s in SPLITS if getattr(cfg.data, s)}
    missing = [s for s in paths if s not in demo.sizes]
    if missing:
        raise ConfigError(f"sweep.demo_data.sizes: no size for split(s) {missing} named in data")
    if all(Path(p).exists() for p in paths.values()):
        return
    generate_demo_data(paths, demo.sizes, seed=demo.seed)
    _say(
        f"demo data: {', '.join(f'{s} {demo.sizes[s]}' for s in paths)} examples -> {Path(paths['train']).parent}"
    )


def annotation_files(cfg: Config) -> dict[str, str | None]:
    """The annotated split files the trainings read: the run's annotations, or the data as given."""
    if cfg.teacher is None:  # data already annotated (e.g. precomputed JSONL): train on it directly
        return {s: getattr(cfg.data, s) for s in SPLITS}
    # A split the teacher did not annotate (e.g. valid, scored against gold only) is read raw.
    folder = cfg.run_dir / "annotations"
    return {
        s: str(folder / f"{s}.jsonl") if (folder / f"{s}.jsonl").exists() else getattr(cfg.data, s)
        for s in SPLITS
    }


def annotation_stamp(cfg: Config) -> tuple[Config, str]:
    """The config that annotates the full training set, and its fingerprint."""
    full = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train_fraction": 1.0})})
    return full, fingerprint(full, ("task", "data", "teacher", "annotate"))


def annotations_reusable(cfg: Config, stamp: str) -> bool:
    """annotations/ was finished under these inputs and holds every split asked for."""
    folder = cfg.run_dir / "annotations"
    done = _stages(cfg.run_dir).get("annotate") == stamp and (folder / "summary.json").exists()
    return done and all((folder / f"{s}.jsonl").exists() for s in cfg.annotate.splits)


def annotate_stage(cfg: Config) -> None:
    """Annotate the full training set once; sweep fractions subsample the annotated file later."""
    if cfg.teacher is None:
        _say("annotate: no teacher section, training on the data files as given")
        return
    from stepdistill.annotate import annotate_from_config

    full, stamp = annotation_stamp(cfg)
    if annotations_reusable(cfg, stamp):
        _say("annotate: done before, reusing annotations/")
        return
    _say(f"annotate: teacher {cfg.teacher.backend}:{cfg.teacher.model or '(default)'}")
    # Stops the run here (IncompleteAnnotation) while examples lack an answer, unless
    # annotate.allow_incomplete; an incomplete stage is not marked done, so a re-run asks again.
    missing = annotate_from_config(full)["total"]["unanswered"]
    if missing:
        _say(f"annotate: {missing} examples unanswered, training without them (annotate.allow_incomplete)")
        return
    _mark_done(cfg.run_dir, "annotate", stamp)


def training_name(method: str, fraction: float, seed: int, student: str | None = None) -> str:
    return (f"{student}-" if student else "") + f"{method}-f{fraction:g}-s{seed}"


def _student_section(cfg: Config, entry: str | dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """The student section of a sweep point and its folder name (None without sweep.students)."""
    base = cfg.student.model_dump(mode="json")
    if entry is None:
        return base, None
    if isinstance(entry, str):
        entry = {"model": entry}
    merged = {**base, "name": None, **entry}
    if "model" in entry and "keep_layers" not in entry:
        merged["keep_layers"] = None  # another model: the base student's layer cut does not apply
    return merged, student_folder(cfg.student.model_validate(merged).model_dump())


def training_config(
    cfg: Config,
    method: str | MethodSpec,
    fraction: float,
    seed: int,
    files: dict[str, str | None],
    student: str | dict[str, Any] | None = None,
) -> Config:
    """The config of one sweep point: its own folder inside the run, reading the annotated files.
    `student`: an entry of sweep.students laid over the student section."""
    spec = method_spec(method)
    raw = cfg.model_dump(mode="json")
    raw["student"], student_name = _student_section(cfg, student)
    raw.update(out_dir=str(cfg.run_dir), name=training_name(spec.folder, fraction, seed, student_name))
    raw["train"].update(method=spec.method, seed=seed, **spec.train_overrides())
    raw["data"].update(
        train=files["train"], valid=files["valid"], test=files["test"], train_fraction=fraction
    )
    raw.pop("sweep")
    return config_from_dict(raw, f"sweep point {raw['name']}")


def training_stamp(sub: Config) -> str:
    """The fingerprint of what a sweep point trains on and how."""
    return fingerprint(sub, ("task", "data", "student", "train", "eval", "kd"))


def trained_differently(cfg: Config, sub: Config, stamp: str) -> bool:
    """A finished sweep point was recorded with another fingerprint (the run refuses to reuse it)."""
    done = _stages(cfg.run_dir).get(f"train:{sub.run_dir.name}")
    return done is not None and done != stamp


def sweep_points(cfg: Config, files: dict[str, str | None]) -> Iterator[Config]:
    """The config of every student x fraction x method x seed of the sweep, in training order."""
    for student in cfg.sweep.students or [None]:
        for fraction in cfg.sweep.fractions:
            for method in cfg.sweep.methods:
                for seed in cfg.sweep.seeds:
                    yield training_config(cfg, method, fraction, seed, files, student)


def _to_train(cfg: Config, sub: Config) -> bool | None:
    """None when the sweep point is done (its metrics.json exists), else whether it resumes from a
    checkpoint; a finished folder trained with another config is an error."""
    from stepdistill.training.checkpoint import latest_checkpoint

    folder = sub.run_dir
    if (folder / "metrics.json").exists():
        if trained_differently(cfg, sub, training_stamp(sub)):
            raise ConfigError(
                f"{folder} was trained with a different config; choose another --name "
                "or delete that folder to retrain it"
            )
        _say(f"train {folder.name}: done before, skipped")
        return None
    return latest_checkpoint(folder) is not None


def _finished(cfg: Config, sub: Config, seconds: float) -> None:
    from stepdistill.run_parallel import summary_line

    _mark_done(cfg.run_dir, f"train:{sub.run_dir.name}", training_stamp(sub))
    _say(summary_line(sub.run_dir, seconds))


def _train_one(cfg: Config, sub: Config, resume: bool) -> None:
    """Train one sweep point in this process (all processes of a launcher take part)."""
    from stepdistill.train import train
    from stepdistill.training.device import is_main

    _say(f"train {sub.run_dir.name}" + (" (resuming)" if resume else ""))
    start = time.perf_counter()
    # A re-run resumes an interrupted training; changes that cannot alter it (e.g. teacher.concurrency)
    # are accepted, any other change is refused with the diff.
    train(sub, resume=resume, allow_config_change=True)
    if is_main():
        _finished(cfg, sub, time.perf_counter() - start)


def train_stage(cfg: Config, files: dict[str, str | None]) -> list[Path]:
    """Train every student x fraction x method x seed of the sweep; returns the training folders.
    With sweep.workers > 1 (or auto on a machine with several cores) trainings run at once, each in
    its own process (run_parallel.py); else one after another in this one."""
    from stepdistill.run_parallel import plan_workers, train_concurrently

    if files["train"] is None:
        raise ConfigError(
            f"no annotated training file in {cfg.run_dir / 'annotations'}: annotate.splits lacks 'train'"
        )
    points = list(sweep_points(cfg, files))
    todo = [(sub, resume) for sub in points if (resume := _to_train(cfg, sub)) is not None]
    workers, threads = plan_workers(cfg.sweep.workers, len(todo))
    if workers > 1:
        train_concurrently(todo, workers, threads, _say, lambda sub, s: _finished(cfg, sub, s))
    else:
        for sub, resume in todo:
            _train_one(cfg, sub, resume)
    return [sub.run_dir for sub in points]


def _teacher_model_facts(teacher: Any) -> tuple[int | None, str | None]:
    """(parameters, device) when the backend holds a transformers model (hf_local); else Nones."""
    model = getattr(teacher, "model", None)
    count = getattr(model, "num_parameters", None)
    device = getattr(teacher, "device", None) or getattr(model, "device", None)
    return (int(count()) if callable(count) else None), (None if device is None else str(device))


def measure_teacher(cfg: Config, examples: list) -> dict[str, Any]:
    """Time the teacher's chain-of-thought generation on `examples`, bypassing the cache.

    The teacher is loaded and warmed up on one prompt first, so the time per example is generation
    alone, comparable with the student's label-only latency (metrics.json "latency").
    """
    from stepdistill.annotate import make_sampling
    from stepdistill.tasks import get_task
    from stepdistill.teachers.prompting import build_prompt, load_prompt_spec
    from stepdistill.teachers.registry import make_teacher

    task = get_task(cfg.task)
    spec = load_prompt_spec(task, cfg.teacher)
    prompts = [build_prompt(spec, task, ex.fields) for ex in examples]
    sampling = make_sampling(cfg.teacher, cfg.annotate.model_copy(update={"samples": 1}), spec.stop)
    teacher = make_teacher(cfg.teacher)
    try:
        teacher.preflight()  # a server gone since annotation fails here in seconds, not after retries
        teacher.generate(prompts[:1], 1, sampling)
        start = time.perf_counter()
        outs = teacher.generate(prompts, 1, sampling)
        wall = time.perf_counter() - start
        params, device = _teacher_model_facts(teacher)
    finally:
        teacher.close()
    ok = [o[0] for o in outs if o[0].ok]
    tokens = sum(c.completion_tokens for c in ok)
    return {
        "teacher_model": getattr(teacher, "identity", "") or f"{cfg.teacher.backend}:{cfg.teacher.model}",
        "params": params if params is not None else cfg.report.teacher_params,
        "examples": len(prompts),
        "succeeded": len(ok),
        "wall_s": round(wall, 6),
        "ms_per_example": round(1000 * wall / len(prompts), 3),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 3) if wall > 0 else None,
        "batch_size": cfg.teacher.batch_size,
        "device": device,
    }


def timing_stage(cfg: Config, files: dict[str, str | None]) -> None:
    """Measure the teacher's generation time once per teacher (precomputed teachers generate nothing)."""
    n = cfg.sweep.teacher_timing_examples
    if cfg.teacher is None or cfg.teacher.backend == "precomputed" or n == 0:
        return
    source = files["test"] or files["valid"] or files["train"]
    stamp = fingerprint(cfg, ("task", "teacher")) + f"-{n}"
    if _stages(cfg.run_dir).get("teacher_timing") == stamp and (cfg.run_dir / TIMING_FILE).exists():
        return
    examples = read_annotations(source)[:n]
    _say(f"teacher timing: {len(examples)} examples of {Path(source).name}, uncached")
    timing = measure_teacher(cfg, examples)
    write_json(cfg.run_dir / TIMING_FILE, timing)
    _mark_done(cfg.run_dir, "teacher_timing", stamp)
    _say(f"teacher timing: {timing['ms_per_example']:.0f} ms per example")


def annotate_command(cfg: Config) -> dict[str, Any]:
    """`stepdistill annotate`: annotate, time the teacher (for the report's cost section), one line."""
    from stepdistill.annotate import annotate_from_config
    from stepdistill.outcomes import annotate_line

    summary = annotate_from_config(cfg)
    timing_stage(cfg, annotation_files(cfg))
    print(annotate_line(summary, cfg.run_dir / "annotations"), flush=True)
    return summary


def run(cfg: Config) -> Path:
    """Run every stage (reusing finished ones) and return the path of report.html."""
    sleep_idle_cpu_threads()  # before anything imports torch

    with runlock.hold(cfg.run_dir, "run"):
        return _run_stages(cfg)


def _run_stages(cfg: Config) -> Path:
    from stepdistill.report.build import build_report
    from stepdistill.training.device import barrier, is_main, join_launcher

    # Under torchrun / accelerate launch every process runs this: the trainings use all of them,
    # everything else (data, teacher, report) runs on the main process while the others wait.
    join_launcher(cfg.train.dist_timeout_s)
    run_dir = cfg.run_dir
    start = time.perf_counter()
    if is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if cfg.sweep.demo_data is not None:
            make_demo_data(cfg)
        annotate_stage(cfg)
    barrier()
    files = annotation_files(cfg)
    train_stage(cfg, files)
    path = run_dir / "report" / "report.html"
    if is_main():
        timing_stage(cfg, files)
        path = build_report([run_dir])
        _say(f"all stages done in {time.perf_counter() - start:.0f} s")
        print(f"report: {path}", flush=True)
    barrier()
    return path
