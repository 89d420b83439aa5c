"""Reading and writing data files. Writes are atomic: a temporary file in the same folder, then rename.

Readers for raw records (JSONL, JSON array, CSV, Parquet, HF `datasets` saved to disk) and for the
annotated-example JSONL of stepdistill/schema.py. A malformed line raises DataError naming file, line, field.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stepdistill.errors import DataError
from stepdistill.schema import Annotation


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically, as atomic_write_bytes does."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Atomically write dicts as JSON lines; returns the number of rows."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def decode_line(raw: bytes, path: str | os.PathLike, lineno: int) -> str:
    """One line of a data file as text: UTF-8 (a byte-order mark on line 1 is dropped); other bytes
    raise DataError naming the file, the line and the column of the first bad byte."""
    try:
        text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as err:
        bad = raw[err.start : err.start + 1].hex()
        raise DataError(
            str(path),
            lineno,
            None,
            f"not valid UTF-8 (byte 0x{bad} at column {err.start + 1}); save the file as UTF-8",
        ) from None
    return text


def read_text(path: str | os.PathLike) -> str:
    """A whole data file as UTF-8 text (byte-order mark dropped); bad bytes raise DataError with the line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        lineno = raw.count(b"\n", 0, err.start) + 1
        start = raw.rfind(b"\n", 0, err.start) + 1
        decode_line(raw[start : raw.find(b"\n", err.start) % (len(raw) + 1)], path, lineno)
        raise  # unreachable: decode_line raised for the same bytes


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; bad JSON or bad bytes raise DataError."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = decode_line(raw, path, lineno)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(str(path), lineno, None, f"not valid JSON: {err.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(str(path), lineno, None, "expected a JSON object")
            yield lineno, obj


_REQUIRED = {"id": str, "fields": dict}
_OPTIONAL_STR = ("gold", "teacher_label", "teacher_rationale", "teacher_raw", "teacher_model", "parse_error")


def annotation_from_obj(obj: dict[str, Any], path: str, lineno: int) -> Annotation:
    """Validate one annotated-example object; errors name file, line and field."""
    for key, typ in _REQUIRED.items():
        if key not in obj:
            raise DataError(path, lineno, key, "missing")
        if not isinstance(obj[key], typ):
            raise DataError(path, lineno, key, f"expected {typ.__name__}, got {type(obj[key]).__name__}")
    for key in _OPTIONAL_STR:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise DataError(path, lineno, key, f"expected a string or null, got {type(obj[key]).__name__}")
    _check_samples(obj.get("teacher_samples"), path, lineno)
    try:
        return Annotation.from_dict(obj)
    except KeyError as err:
        raise DataError(path, lineno, err.args[0], "unknown key in annotated example") from None


def _check_samples(samples: Any, path: str, lineno: int) -> None:
    """teacher_samples: null or a list of objects whose label/rationale/parse_error are strings or null
    (training reads them under train.rationales: agreeing|all)."""
    if samples is None:
        return
    if not isinstance(samples, list):
        raise DataError(
            path, lineno, "teacher_samples", f"expected a list or null, got {type(samples).__name__}"
        )
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise DataError(path, lineno, f"teacher_samples[{i}]", "expected an object")
        for key in ("label", "rationale", "parse_error", "raw"):
            if sample.get(key) is not None and not isinstance(sample[key], str):
                raise DataError(path, lineno, f"teacher_samples[{i}].{key}", "expected a string or null")


def unique_annotations(
    path: str | os.PathLike, numbered: Iterable[tuple[int, Annotation]]
) -> list[Annotation]:
    """Collect (line number, annotation) pairs of `path`; a repeated id raises DataError."""
    out: list[Annotation] = []
    seen: dict[str, int] = {}
    for lineno, ann in numbered:
        if ann.id in seen:
            raise DataError(
                str(path), lineno, "id", f"duplicate id '{ann.id}' (first on line {seen[ann.id]})"
            )
        seen[ann.id] = lineno
        out.append(ann)
    return out


def read_annotations(path: str | os.PathLike) -> list[Annotation]:
    """Read an annotated-example JSONL file (stepdistill/schema.py); duplicate ids are an error."""
    return unique_annotations(
        path, ((lineno, annotation_from_obj(obj, str(path), lineno)) for lineno, obj in iter_jsonl(path))
    )


def write_annotations(path: str | os.PathLike, annotations: Iterable[Annotation]) -> int:
    return write_jsonl(path, (a.to_dict() for a in annotations))
