"""Read raw records from JSONL, a JSON array, CSV, Parquet or an HF `datasets` folder, and turn a data
file into Annotations for a task.

`read_records(path)` gives (line, record) pairs; the number is the file line for JSONL and CSV and the
1-based record number for JSON arrays, Parquet and HF datasets. `load_examples(path, task)` accepts
either annotated JSONL (objects with "id" and "fields", see stepdistill/schema.py) or raw task records,
and raises DataError naming file, line and field for a bad row.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from stepdistill.data.io import annotation_from_obj, iter_jsonl, read_text, unique_annotations
from stepdistill.errors import DataError
from stepdistill.schema import Annotation
from stepdistill.tasks.base import RecordError, Task

Record = tuple[int, dict[str, Any]]


def _first_char(path: Path) -> str:
    # Only the first character decides the format; bad bytes are reported by the reader chosen.
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        while True:
            chunk = f.read(4096)
            if not chunk:
                return ""
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]


def _read_json_array(path: Path) -> list[Record]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(str(path), err.lineno, None, f"not valid JSON: {err.msg}") from None
    if not isinstance(data, list):
        raise DataError(str(path), None, None, "expected a JSON array of objects")
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise DataError(str(path), i, None, f"record {i} is not a JSON object")
    return list(enumerate(data, start=1))


# A CSV cell may legitimately be long (a document to classify); the csv module's default cap of
# 128 KiB would report such a file as malformed.
_CSV_FIELD_LIMIT = 1 << 30


def _read_csv(path: Path) -> list[Record]:
    out: list[Record] = []
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    previous = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        if not reader.fieldnames:
            raise DataError(str(path), 1, None, "CSV file has no header row")
        for row in reader:
            if None in row:  # more cells than header columns
                raise DataError(str(path), reader.line_num, None, "row has more cells than the header")
            # An empty cell is a missing value, as in every spreadsheet: required fields then say so.
            out.append((reader.line_num, {k: (None if v == "" else v) for k, v in row.items()}))
    except csv.Error as err:
        raise DataError(str(path), reader.line_num, None, f"malformed CSV: {err}") from None
    finally:
        csv.field_size_limit(previous)
    return out


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DataError(str(path), None, None, f"cannot read Parquet: {err}") from None
    return list(enumerate(rows, start=1))


def _read_hf_dir(path: Path) -> list[Record]:
    try:
        from datasets import Dataset, load_from_disk
    except ImportError:
        raise DataError(
            str(path), None, None, "reading a datasets folder needs `pip install datasets`"
        ) from None
    try:
        ds = load_from_disk(str(path))
    except Exception as err:  # FileNotFoundError or datasets' own errors for a wrong folder
        raise DataError(str(path), None, None, f"not a dataset saved with save_to_disk: {err}") from None
    if not isinstance(ds, Dataset):
        splits = ", ".join(ds.keys())
        raise DataError(str(path), None, None, f"holds several splits ({splits}); give the split's folder")
    return list(enumerate(ds.to_list(), start=1))


def read_records(path: str | os.PathLike) -> list[Record]:
    """All records of a data file as (line or record number, dict), chosen by extension or content."""
    path = Path(path)
    if path.is_dir():
        return _read_hf_dir(path)
    if not path.exists():
        raise DataError(str(path), None, None, "file does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return list(iter_jsonl(path))
    if suffix in (".json", ".txt") or not suffix:
        # ".json" is used for both JSON lines (the official datasets) and JSON arrays.
        if _first_char(path) == "[":
            return _read_json_array(path)
        return list(iter_jsonl(path))
    raise DataError(
        str(path), None, None, f"unknown data format '{suffix}' (use .jsonl, .json, .csv, .parquet)"
    )


def is_annotated(record: dict[str, Any]) -> bool:
    """Annotated examples (stepdistill/schema.py) carry their task inputs under "fields"."""
    return "fields" in record and isinstance(record.get("fields"), dict) and "id" in record


def load_examples(path: str | os.PathLike, task: Task) -> list[Annotation]:
    """Annotations from annotated JSONL or from raw task records; duplicate ids are an error."""
    records = read_records(path)
    annotated = bool(records) and is_annotated(records[0][1])
    numbered = (
        (lineno, _annotation(path, task, record, lineno, index, annotated))
        for index, (lineno, record) in enumerate(records)
    )
    return unique_annotations(path, numbered)


def _annotation(
    path: str | os.PathLike, task: Task, record: dict[str, Any], lineno: int, index: int, annotated: bool
) -> Annotation:
    if annotated:
        return annotation_from_obj(record, str(path), lineno)
    try:
        return Annotation.from_example(task.example_from_record(record, index))
    except RecordError as err:
        raise DataError(str(path), lineno, err.field, err.message) from None
    except KeyError as err:
        raise DataError(str(path), lineno, str(err.args[0]), "missing") from None
