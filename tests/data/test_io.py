"""Atomic writes and the annotated-example reader of data/io.py."""

from __future__ import annotations

import json

import pytest

from stepdistill.data.io import atomic_write_bytes, atomic_write_text, read_annotations
from stepdistill.errors import DataError
from stepdistill.schema import Annotation


def test_atomic_write_bytes_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "blob.bin"
    atomic_write_bytes(path, b"old contents")
    atomic_write_bytes(path, b"\x00\xffnew")
    assert path.read_bytes() == b"\x00\xffnew"
    assert [p.name for p in path.parent.iterdir()] == ["blob.bin"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "blob.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["blob.bin"]


def test_atomic_write_text_is_utf8(tmp_path):
    path = tmp_path / "t.txt"
    atomic_write_text(path, "café → 3\n")
    assert path.read_bytes() == "café → 3\n".encode()


def test_read_annotations_rejects_a_repeated_id(tmp_path):
    path = tmp_path / "ann.jsonl"
    rows = [Annotation(id=i, fields={"q": "x"}).to_dict() for i in ("a", "b", "a")]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError) as err:
        read_annotations(path)
    assert (err.value.line, err.value.field) == (3, "id")
    assert str(err.value) == f"{path}:3: field 'id': duplicate id 'a' (first on line 1)"


@pytest.mark.parametrize(
    "samples,field",
    [
        ("abc", "teacher_samples"),
        (["x"], "teacher_samples[0]"),
        ([{"rationale": 3}], "teacher_samples[0].rationale"),
    ],
)
def test_read_annotations_names_a_malformed_teacher_sample(tmp_path, samples, field):
    path = tmp_path / "ann.jsonl"
    good = Annotation(id="a", fields={"q": "x"}, teacher_samples=[{"label": "1", "rationale": "r"}])
    bad = {**Annotation(id="b", fields={"q": "x"}).to_dict(), "teacher_samples": samples}
    path.write_text(json.dumps(good.to_dict()) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as err:
        read_annotations(path)
    assert (err.value.line, err.value.field) == (2, field)
