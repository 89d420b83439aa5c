"""`stepdistill export RUN`: the trained student as GGUF files, each scored like the original.

    stepdistill export runs/demo                                  # the best training of a sweep
    stepdistill export runs/demo/standard-f1-s0 --quant f16,q8_0,q4_k_m --out dist/ --overwrite

1. The student in RUN/best (LoRA adapters were merged into it when it was saved) is written as a
   float16 GGUF (gguf_file.py) and quantized by llama.cpp (quantize.py). Every file is written under
   a temporary name and renamed when complete; an existing export is replaced only with --overwrite.
2. Each file is run by llama.cpp on the run's test rows with the student's label-only prompt, greedy
   (or ranked labels, as eval.label_decoding says), through evaluate.predict_labels: the same
   prompt, parser and metric as the PyTorch student, whose predictions/test.jsonl it is paired with.
3. Per format: accuracy, Δ vs the PyTorch student with a paired 95% bootstrap interval and the
   exact McNemar p, changed predictions, size on disk, label-only ms/example and examples/s.

Written to the export folder (default RUN/export/, where the report's Deploy section reads
deploy.json): the .gguf files, deploy.json, predictions/<format>-<split>.jsonl, README.md (a model
card) and an Ollama Modelfile (card.py).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from stepdistill.config import Config, load_config
from stepdistill.data.io import iter_jsonl, write_json, write_jsonl
from stepdistill.errors import ConfigError
from stepdistill.evaluate import predict_labels
from stepdistill.export.gguf_file import check_exportable, write_gguf
from stepdistill.export.llama_student import LlamaStudent
from stepdistill.export.quantize import check_formats, llama_cpp_module, quantize
from stepdistill.report.collect import TIMING_FILE
from stepdistill.report.paired import discordant, mcnemar_exact, paired_bootstrap
from stepdistill.runfiles import with_annotations
from stepdistill.schema import Annotation
from stepdistill.tasks.base import Task
from stepdistill.training.batching import CAUSAL_SEP, encode_source
from stepdistill.training.formatting import eval_source

DEFAULT_FORMATS = ["f16", "q8_0", "q4_k_m"]
DEPLOY_FILE = "deploy.json"


def find_training(run: Path) -> Path:
    """`run` when it is one training (metrics.json, best/); for a `stepdistill run` sweep folder,
    its training with the best validation accuracy (the first in name order on a tie)."""
    if not run.is_dir():
        raise ConfigError(f"{run}: no such run folder")
    if (run / "metrics.json").is_file():
        return run
    trainings = sorted(p for p in run.iterdir() if (p / "metrics.json").is_file() and (p / "best").is_dir())
    if not trainings:
        raise ConfigError(
            f"{run}: not a finished run folder (no metrics.json and best/ here or in a sub-folder)"
        )

    def valid(p: Path) -> float:
        acc = (json.loads((p / "metrics.json").read_text()).get("splits", {}).get("valid") or {}).get(
            "accuracy"
        )
        return -1.0 if acc is None else float(acc)

    return max(trainings, key=valid)


def export_name(training: Path, cfg: Config) -> str:
    """The files' name: the run's name, prefixed with its sweep's ("demo-standard-f1-s0") when the
    training is one of a `stepdistill run` folder."""
    name = cfg.name.replace("/", "-")
    sweep = training.parent
    if (sweep / "config.yaml").is_file() and not (sweep / "metrics.json").is_file():
        return f"{sweep.name}-{name}"
    return name


def student_settings(cfg: Config) -> dict[str, Any]:
    """What a bare GGUF file needs to be prompted and parsed like the student (stored inside it)."""
    from stepdistill.tasks import resolve_generic

    keys = (
        "method",
        "label_source",
        "label_prefix",
        "rationale_prefix",
        "max_input_length",
        "max_target_length",
    )
    return {
        "task": resolve_generic(cfg.task).model_dump(exclude_none=True, exclude={"spec"}),
        "train": {k: getattr(cfg.train, k) for k in keys},
        "eval": {"max_new_tokens": cfg.eval.max_new_tokens, "label_decoding": cfg.eval.label_decoding},
    }


def _pytorch_rows(training: Path, split: str) -> list[dict[str, Any]]:
    path = training / "predictions" / f"{split}.jsonl"
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: the PyTorch student was not scored on {split} "
            f"(stepdistill evaluate {training} --split {split} --overwrite)"
        )
    return [row for _, row in iter_jsonl(path)]


def compare(gguf_rows: list[dict[str, Any]], torch_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy of the GGUF rows and their paired difference from the PyTorch rows (same ids)."""
    theirs = {r["id"]: r for r in torch_rows}
    missing = [r["id"] for r in gguf_rows if r["id"] not in theirs]
    if missing:
        raise ConfigError(f"the PyTorch predictions lack {len(missing)} test rows (e.g. id {missing[0]})")
    scored = [(r, theirs[r["id"]]) for r in gguf_rows if r.get("correct") is not None]
    mine = [bool(r["correct"]) for r, _ in scored]
    ref = [bool(t["correct"]) for _, t in scored]
    ci = paired_bootstrap(mine, ref)
    only_gguf, only_torch = discordant(mine, ref)
    return {
        "accuracy": sum(mine) / len(mine),
        "correct": sum(mine),
        "n": len(mine),
        "diff": ci.diff,
        "diff_lo": ci.lo,
        "diff_hi": ci.hi,
        "mcnemar_p": mcnemar_exact(only_gguf, only_torch),
        "only_gguf_right": only_gguf,
        "only_pytorch_right": only_torch,
        "changed": sum(r["pred"] != theirs[r["id"]]["pred"] for r in gguf_rows),
    }


def score_file(
    path: Path, task: Task, rows: list[Annotation], cfg: Config, threads: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(prediction rows, timing) of one GGUF file on `rows`, one example at a time."""
    n_ctx = cfg.train.max_input_length + cfg.train.max_target_length + cfg.eval.max_new_tokens + 8
    student = LlamaStudent(path, threads=threads, n_ctx=n_ctx, ranking=cfg.eval.label_decoding == "rank")
    try:
        start = time.perf_counter()
        preds = predict_labels(student, task, rows, cfg.train, cfg.eval)
        wall = time.perf_counter() - start
    finally:
        student.close()
    timing = {
        "ms_per_example": 1000 * wall / len(rows),
        "examples_per_s": len(rows) / wall,
        "threads": student.threads,
    }
    return preds, timing


def score_and_compare(
    fmt: str,
    path: Path,
    task: Task,
    rows: list[Annotation],
    cfg: Config,
    torch_rows: list[dict[str, Any]],
    threads: int | None,
    split: str,
) -> dict[str, Any]:
    """deploy.json's entry of one file; its predictions go to predictions/<format>-<split>.jsonl
    beside it."""
    preds, timing = score_file(path, task, rows, cfg, threads)
    write_jsonl(path.parent / "predictions" / f"{fmt}-{split}.jsonl", preds)
    return {
        "format": fmt,
        "file": path.name,
        "size_bytes": path.stat().st_size,
        **compare(preds, torch_rows),
        **timing,
    }


def tokenizer_agreement(path: Path, hf_tokenizer, task: Task, rows: list[Annotation], cfg: Config) -> dict:
    """On how many test prompts llama.cpp's embedded tokenizer gives the training tokenizer's ids."""
    student = LlamaStudent(path, threads=1, n_ctx=64)
    try:
        same = sum(
            encode_source(student.tokenizer, s, cfg.train, "causal")
            == encode_source(hf_tokenizer, s, cfg.train, "causal")
            for s in (eval_source(task, a, cfg.train) for a in rows)
        )
    finally:
        student.close()
    return {"same": same, "n": len(rows)}


def write_files(
    model_dir: Path, cfg: Config, targets: dict[str, Path], threads: int | None, tokenizer, name: str
) -> None:
    """The f16 GGUF and its quantized versions at `targets` (format -> path). All are written under
    temporary names and renamed once every one is complete, so a failure (a full disk) leaves the
    folder as it was; an OSError names the file the user asked for, not its temporary name."""
    folder = next(iter(targets.values())).parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = {fmt: folder / f".{path.name}.tmp-{os.getpid()}" for fmt, path in targets.items()}
    f16 = tmp.get("f16", folder / f".f16.gguf.tmp-{os.getpid()}")
    writing = targets.get("f16", f16)
    try:
        write_gguf(model_dir, tokenizer, f16, name=name, extra=student_settings(cfg))
        for fmt in targets:
            if fmt != "f16":
                writing = targets[fmt]
                quantize(f16, tmp[fmt], fmt, threads)
        for fmt, path in targets.items():
            os.replace(tmp[fmt], path)
    except OSError as err:
        # numpy's tofile reports a short write without an errno: the free space left tells
        if err.errno in (errno.ENOSPC, errno.EDQUOT) or shutil.disk_usage(folder).free < 1 << 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(writing)) from None
        raise
    finally:
        for p in [*tmp.values(), f16]:
            p.unlink(missing_ok=True)


def split_rows(cfg: Config, task: Task, split: str) -> list[Annotation]:
    """The rows of `split`: its own file when the config names one for valid or test (training warned about
    any overlap with train), else as training carved it from train."""
    from stepdistill.data.readers import load_examples
    from stepdistill.data.splits import load_splits

    path = getattr(cfg.data, split, None) if split in ("valid", "test") else None  # train is subsampled
    if isinstance(path, str):
        rows = load_examples(path, task)
        return rows[: cfg.data.max_examples] if cfg.data.max_examples is not None else rows
    return load_splits(cfg.data, task).get(split) or []


def pytorch_summary(
    model_dir: Path, torch_rows: list[dict[str, Any]], metrics: dict[str, Any]
) -> dict[str, Any]:
    """The PyTorch student the files are compared with: accuracy, size, latency (from training)."""
    ref = [bool(r["correct"]) for r in torch_rows if r.get("correct") is not None]
    latency = metrics.get("latency") or {}
    return {
        "accuracy": sum(ref) / len(ref) if ref else None,
        "n": len(ref),
        "size_bytes": sum(p.stat().st_size for p in model_dir.glob("*.safetensors")),
        **{k: latency.get(k) for k in ("ms_per_example", "examples_per_s", "device")},
    }


def _teacher_timing(training: Path) -> dict[str, Any] | None:
    for folder in (training, training.parent):
        if (folder / TIMING_FILE).is_file():
            return json.loads((folder / TIMING_FILE).read_text())
    return None


def export_run(
    run: str | os.PathLike,
    formats: list[str] | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    split: str = "test",
    threads: int | None = None,
) -> dict[str, Any]:
    """Export, score and describe a run's student (see the module docstring); returns deploy.json."""
    from transformers import AutoTokenizer

    from stepdistill.export.card import write_card
    from stepdistill.tasks import get_task

    formats = check_formats(formats or DEFAULT_FORMATS)
    training = find_training(Path(run))
    model_dir = training / "best"
    check_exportable(model_dir)
    llama_cpp = llama_cpp_module()
    cfg = with_annotations(load_config(training / "config.yaml"), say=None)
    torch_rows = _pytorch_rows(training, split)
    out_dir = Path(out) if out else training / "export"
    stem = export_name(training, cfg)
    targets = {fmt: out_dir / f"{stem}-{fmt}.gguf" for fmt in formats}
    present = [p for p in targets.values() if p.exists()]
    if present and not overwrite:
        raise ConfigError(f"{present[0]} exists: pass --overwrite to replace this export")
    task = get_task(cfg.task)
    rows = split_rows(cfg, task, split)
    if not rows:
        raise ConfigError(f"the run's config has no {split} rows to score the export on (data.{split})")

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    write_files(model_dir, cfg, targets, threads, tokenizer, stem)
    results = [
        score_and_compare(fmt, path, task, rows, cfg, torch_rows, threads, split)
        for fmt, path in targets.items()
    ]
    metrics = json.loads((training / "metrics.json").read_text())
    first = {r["id"]: r for r in torch_rows}[rows[0].id]
    deploy = {
        "run": str(training),
        "name": stem,
        "task": metrics.get("task_title") or cfg.task.name,
        "method": cfg.train.method,
        "split": split,
        "label_decoding": cfg.eval.label_decoding,
        "folder": str(out_dir),
        "pytorch": pytorch_summary(model_dir, torch_rows, metrics),
        "teacher": _teacher_timing(training),
        "formats": results,
        "example": {  # the model card's example request
            "prompt": eval_source(task, rows[0], cfg.train) + CAUSAL_SEP,
            "pytorch_pred": first["pred"],
            "gold": rows[0].gold,
        },
        "tokenizer_agreement": tokenizer_agreement(next(iter(targets.values())), tokenizer, task, rows, cfg),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "llama_cpp": llama_cpp.__version__,
        },
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(out_dir / DEPLOY_FILE, deploy)
    write_card(out_dir, deploy, cfg, metrics)
    return deploy


def export_line(deploy: dict[str, Any]) -> str:
    """export: <format> <MB> <accuracy> (Δ [interval], changed), ... -> folder (files)."""
    parts = [
        f"{r['format']} {r['size_bytes'] / 1e6:.1f} MB {100 * r['accuracy']:.2f}% "
        f"(Δ {100 * r['diff']:+.1f} [{100 * r['diff_lo']:+.1f}, {100 * r['diff_hi']:+.1f}], "
        f"{r['changed']} changed, {r['ms_per_example']:.1f} ms/example)"
        for r in deploy["formats"]
    ]
    return (
        f"export: {deploy['run']} vs PyTorch {100 * deploy['pytorch']['accuracy']:.2f}% on {deploy['pytorch']['n']} "
        f"{deploy['split']} rows: {', '.join(parts)} -> {deploy['folder']} (README.md, Modelfile, deploy.json)"
    )
