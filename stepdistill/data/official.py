"""Import the official distilling-step-by-step data layout into annotated JSONL.

    stepdistill import-official ROOT --task cqa --out data/cqa

reads
    ROOT/<task>/<task>_{train,valid,test}.json   JSON lines, one record per example
    ROOT/<task>/llm/{split}_CoT_{i}.json        JSON arrays of raw PaLM 540B completions, aligned
                                                row by row with the split, concatenated in i order
and writes OUT/{split}.jsonl (stepdistill/schema.py) for each split present. Completions are parsed with the
task's parser; one that does not parse keeps its raw text and gets `parse_error` set.
Everything is read and checked before anything is written, so a failing import leaves no output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stepdistill.data.io import write_annotations
from stepdistill.data.readers import read_records
from stepdistill.errors import DataError
from stepdistill.schema import Annotation
from stepdistill.tasks import BUILTIN
from stepdistill.tasks.base import RecordError, Task

# Official folder name -> task family. "anli1" is ANLI round 1, the round the paper used.
OFFICIAL_TASKS = {"cqa": "cqa", "svamp": "svamp", "esnli": "esnli", "anli1": "anli"}
SPLITS = ("train", "valid", "test")
TEACHER = "precomputed:palm-540b"


def read_completions(llm_dir: Path, split: str) -> tuple[list[str], list[Path]] | None:
    """Concatenated completions of llm/{split}_CoT_{0,1,...}.json, or None when there are none."""
    files: list[Path] = []
    while (llm_dir / f"{split}_CoT_{len(files)}.json").exists():
        files.append(llm_dir / f"{split}_CoT_{len(files)}.json")
    if not files:
        return None
    out: list[str] = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(str(path), err.lineno, None, f"not valid JSON: {err.msg}") from None
        if not isinstance(data, list):
            raise DataError(str(path), None, None, "expected a JSON array of completions")
        for i, text in enumerate(data, start=1):
            if not isinstance(text, str):
                raise DataError(str(path), i, None, f"completion {i} is not a string")
        out.extend(data)
    return out, files


def _annotate(ann: Annotation, task: Task, raw: str) -> Annotation:
    parsed = task.parse_completion(raw)
    ann.teacher_raw, ann.teacher_model = raw, TEACHER
    if parsed.ok:
        ann.teacher_label, ann.teacher_rationale = parsed.label, parsed.rationale
    else:
        ann.parse_error = parsed.error
    return ann


def import_split(task_dir: Path, official: str, split: str, task: Task) -> list[Annotation] | None:
    """The annotations of one split, or None when the split's data file does not exist."""
    data_path = task_dir / f"{official}_{split}.json"
    if not data_path.exists():
        return None
    anns: list[Annotation] = []
    for index, (lineno, record) in enumerate(read_records(data_path)):
        if record.get("id") in (None, ""):
            # Official SVAMP/NLI rows have no id; the split in the id keeps train and test ids distinct.
            record = {**record, "id": f"{task.name}-{split}-{index}"}
        try:
            anns.append(Annotation.from_example(task.example_from_record(record, index)))
        except RecordError as err:
            raise DataError(str(data_path), lineno, err.field, err.message) from None
    completions = read_completions(task_dir / "llm", split)
    if completions is None:
        return anns
    texts, files = completions
    if len(texts) != len(anns):
        names = ", ".join(str(f) for f in files)
        raise DataError(
            str(data_path), None, None, f"{len(anns)} rows but {len(texts)} completions in {names}"
        )
    return [_annotate(ann, task, raw) for ann, raw in zip(anns, texts)]


def import_official(root: str | os.PathLike, task: str, out_dir: str | os.PathLike) -> dict[str, int]:
    """Convert ROOT/<task>/ into OUT/{split}.jsonl; returns the number of rows written per split."""
    if task not in OFFICIAL_TASKS:
        raise DataError(str(root), None, None, f"unknown task '{task}' (one of {', '.join(OFFICIAL_TASKS)})")
    task_dir = Path(root) / task
    if not task_dir.is_dir():
        raise DataError(str(task_dir), None, None, "folder does not exist")
    family = BUILTIN[OFFICIAL_TASKS[task]]()
    splits = {s: anns for s in SPLITS if (anns := import_split(task_dir, task, s, family)) is not None}
    if "train" not in splits:
        raise DataError(str(task_dir / f"{task}_train.json"), None, None, "file does not exist")
    # Only now that every split was read and checked does anything get written.
    return {
        split: write_annotations(Path(out_dir) / f"{split}.jsonl", anns) for split, anns in splits.items()
    }
