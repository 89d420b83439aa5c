"""Raw record readers for every supported format, and load_examples' errors (file, line, field)."""

from __future__ import annotations

import json

import pytest

from stepdistill.data.io import write_annotations
from stepdistill.data.readers import load_examples, read_records
from stepdistill.errors import DataError
from stepdistill.schema import Annotation
from stepdistill.tasks.arith import ArithTask

ROWS = [
    {"question": "Anne has 4 apples and eats 1. How many are left?", "answer": "4 - 1"},
    {"question": "Tom has 2 and gets 3. How many now?", "answer": "2 + 3"},
]


def _expected(numbers):
    return list(zip(numbers, ROWS))


def test_jsonl_json_array_csv(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    assert read_records(jsonl) == _expected([1, 3])  # file line numbers, blank lines skipped
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps(ROWS, indent=1))
    assert read_records(arr) == _expected([1, 2])
    lines_json = tmp_path / "b.json"  # the official datasets use .json for JSON lines
    lines_json.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert read_records(lines_json) == _expected([1, 2])
    csv_path = tmp_path / "a.csv"
    csv_path.write_text(
        'question,answer\n"Anne has 4 apples and eats 1. How many are left?",4 - 1\n'
        '"Tom has 2 and gets 3. How many now?",2 + 3\n'
    )
    assert read_records(csv_path) == _expected([2, 3])  # line 1 is the header


def test_parquet_and_hf_dataset(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    assert read_records(tmp_path / "a.parquet") == _expected([1, 2])
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "hf"))
    assert read_records(tmp_path / "hf") == _expected([1, 2])
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "hfd"))
    with pytest.raises(DataError, match="several splits \\(train\\)"):
        read_records(tmp_path / "hfd")


def test_load_examples_raw_and_annotated(tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    anns = load_examples(raw, ArithTask())
    assert [(a.id, a.gold, a.teacher_label) for a in anns] == [
        ("arith-0", "4 - 1", None),
        ("arith-1", "2 + 3", None),
    ]
    anns[0].teacher_label, anns[0].teacher_rationale = "4 - 1", "She eats one."
    write_annotations(tmp_path / "ann.jsonl", anns)
    again = load_examples(tmp_path / "ann.jsonl", ArithTask())
    assert again == anns


@pytest.mark.parametrize(
    ("content", "line", "field", "message"),
    [
        ('{"question": "q", "answer": "1"}\n{"question": "q2", "answer": "2"\n', 2, None, "not valid JSON"),
        ('{"question": "q"}\n\n{"answer": "1"}\n', 3, "question", "missing"),
        ('{"question": 5}\n', 1, "question", "expected str, got int"),
        ('{"question": "q", "answer": [1]}\n', 1, "answer", "expected an equation or number"),
        ('{"id": "x", "question": "a"}\n{"id": "x", "question": "b"}\n', 2, "id", "duplicate id 'x'"),
        ("[1, 2]\n", 1, None, "expected a JSON object"),
    ],
)
def test_bad_rows_name_file_line_field(tmp_path, content, line, field, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        load_examples(path, ArithTask())
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, field)
    assert message in str(err.value) and str(err.value).startswith(f"{path}:{line}")


def test_bad_annotated_row(tmp_path):
    path = tmp_path / "ann.jsonl"
    good = Annotation(id="a", fields={"question": "q"}).to_dict()
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "teacher_label": 3}) + "\n")
    with pytest.raises(DataError) as err:
        load_examples(path, ArithTask())
    assert (err.value.line, err.value.field) == (2, "teacher_label")


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_records(tmp_path / "nope.jsonl")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataError, match="unknown data format"):
        read_records(tmp_path / "x.xlsx")
    (tmp_path / "ragged.csv").write_text("question,answer\nq,1,extra\n")
    with pytest.raises(DataError, match=":2: row has more cells"):
        read_records(tmp_path / "ragged.csv")
