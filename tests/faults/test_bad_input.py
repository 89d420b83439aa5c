"""Bad input everywhere: every malformed data file or config value ends in one `error:` line naming
the file, line and field (or the config key), never a traceback; odd but valid encodings load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stepdistill.cli import main
from stepdistill.config import config_from_dict
from stepdistill.data.readers import load_examples
from stepdistill.data.splits import load_splits
from stepdistill.errors import ConfigError, DataError
from stepdistill.tasks import get_task
from stepdistill.tasks.arith import ArithTask
from stepdistill.tasks.cqa import CQATask
from stepdistill.tasks.nli import NLITask

ROW = {"id": "a", "question": "What is 2 + 2?", "answer": "2 + 2"}


def _jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _annotate_config(tmp_path: Path, train: Path, **data) -> Path:
    teacher = tmp_path / "teacher.jsonl"
    teacher.write_text("")
    raw = {
        "name": "bad",
        "out_dir": str(tmp_path / "runs"),
        "task": {"name": "arith"},
        "data": {"train": str(train), **data},
        "teacher": {"backend": "precomputed", "path": str(teacher)},
        "annotate": {"progress": False},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_non_utf8_byte_is_one_error_line_from_the_real_command(tmp_path):
    data = tmp_path / "train.jsonl"
    rows = [dict(ROW, id=f"r{i}") for i in range(3)]
    data.write_bytes(_jsonl(rows[:2]) + b'{"id": "r2", "question": "caf\xe9?", "answer": "1"}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "stepdistill.cli", "annotate", str(_annotate_config(tmp_path, data))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"error: {data}:3: not valid UTF-8 (byte 0xe9 at column 30); save the file as UTF-8"
    )
    assert not (tmp_path / "runs" / "bad").exists()  # nothing half-made


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_non_utf8_in_csv_and_json_array_names_the_line(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    if suffix == ".csv":
        path.write_bytes(b"question,answer\nWhat is 1 + 1?,1 + 1\nna\xefve?,1\n")
    else:
        path.write_bytes(b'[\n{"question": "q", "answer": "1"},\n{"question": "\xff", "answer": "1"}\n]\n')
    with pytest.raises(DataError, match=rf"{path.name}:3: not valid UTF-8"):
        load_examples(path, ArithTask())


def test_bom_and_crlf_load_like_plain_files(tmp_path):
    rows = [dict(ROW, id=f"r{i}", answer=f"{i} + 1") for i in range(3)]
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(_jsonl(rows))
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + _jsonl(rows).replace(b"\n", b"\r\n"))
    csv_path = tmp_path / "bom.csv"
    body = "id,question,answer\r\n" + "".join(f"{r['id']},{r['question']},{r['answer']}\r\n" for r in rows)
    csv_path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    arr = tmp_path / "bom.json"
    arr.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    expected = load_examples(plain, ArithTask())
    for path in (jsonl, csv_path, arr):
        assert load_examples(path, ArithTask()) == expected, path


def test_empty_required_field_names_file_line_field(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("question,answer\nWhat is 1 + 1?,1 + 1\n,2 + 2\n")
    with pytest.raises(DataError) as err:
        load_examples(csv_path, ArithTask())
    assert str(err.value) == f"{csv_path}:3: field 'question': missing"
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_bytes(_jsonl([ROW, {"id": "b", "question": "   ", "answer": "1"}]))
    with pytest.raises(DataError) as err:
        load_examples(jsonl, ArithTask())
    assert str(err.value) == f"{jsonl}:2: field 'question': empty"
    # an empty gold cell is an unlabeled row, not an error
    csv_path.write_text("question,answer\nWhat is 1 + 1?,\n")
    assert load_examples(csv_path, ArithTask())[0].gold is None


def test_one_megabyte_line_loads_in_jsonl_and_csv(tmp_path):
    long_question = "How many? " + "x" * (1 << 20)
    jsonl = tmp_path / "big.jsonl"
    jsonl.write_bytes(_jsonl([dict(ROW, question=long_question), dict(ROW, id="b")]))
    csv_path = tmp_path / "big.csv"
    csv_path.write_text(f"question,answer\n{long_question},1\nshort,2\n")
    for path in (jsonl, csv_path):
        rows = load_examples(path, ArithTask())
        assert len(rows) == 2 and rows[0].fields["question"] == long_question


def test_unknown_labels_name_the_field(tmp_path):
    path = tmp_path / "nli.jsonl"
    path.write_bytes(_jsonl([{"premise": "p", "hypothesis": "h", "label": "maybe"}]))
    with pytest.raises(DataError, match=rf"{path.name}:1: field 'label': expected 0, 1, 2 or one of"):
        load_examples(path, NLITask())
    cqa = tmp_path / "cqa.jsonl"
    cqa.write_bytes(_jsonl([{"question": "q", "choices": ["a", "b", "c", "d", "e"], "answer": "f"}]))
    with pytest.raises(DataError, match=rf"{cqa.name}:1: field 'answer': 'f' is not one of the choices"):
        load_examples(cqa, CQATask())


def test_same_input_in_train_and_test_is_a_warning_naming_both(tmp_path, capsys):
    train = tmp_path / "train.jsonl"
    test = tmp_path / "test.jsonl"
    rows = [dict(ROW, id=f"t{i}", question=f"What is {i} + 1?", answer=f"{i} + 1") for i in range(6)]
    train.write_bytes(_jsonl(rows))
    test.write_bytes(_jsonl([dict(rows[2], id="x9"), dict(rows[4]), dict(ROW, id="new")]))
    valid = tmp_path / "valid.jsonl"
    valid.write_bytes(_jsonl([dict(ROW, id="v1", question="What is 9 + 9?")]))
    data = {"train": str(train), "valid": str(valid), "test": str(test)}
    cfg = config_from_dict({"task": {"name": "arith"}, "data": data})
    splits = load_splits(cfg.data, get_task(cfg.task))
    err = capsys.readouterr().err
    assert len(splits["test"]) == 3
    assert f"warning: 1 example id(s) in both train ({train}) and test ({test}): t4" in err
    assert f"identical input(s) in both train ({train}) and test ({test}): train:t2 = test:x9" in err


@pytest.mark.parametrize(
    "override, field",
    [
        (["--train.lr", "-1"], "train.lr"),
        (["--train.lr", "0"], "train.lr"),
        (["--train.batch_size", "0"], "train.batch_size"),
        (["--train.grad_accum", "0"], "train.grad_accum"),
        (["--train.warmup_ratio", "1.5"], "train.warmup_ratio"),
        (["--train.epochs", "0"], "train.epochs"),
        (["--train.max_steps", "-3"], "train.max_steps"),
        (["--data.valid_fraction", "1.2"], "data.valid_fraction"),
        (["--data.train_fraction", "0"], "data.train_fraction"),
        (["--data.max_examples", "0"], "data.max_examples"),
        (["--eval.batch_size", "0"], "eval.batch_size"),
        (["--sweep.fractions", "[0.5, 2]"], "sweep.fractions"),
        (["--teacher.concurrency", "0"], "teacher.concurrency"),
    ],
)
def test_nonsensical_config_numbers_are_refused_naming_the_field(tmp_path, capsys, override, field):
    data = tmp_path / "train.jsonl"
    data.write_bytes(_jsonl([ROW]))
    assert main(["train", str(_annotate_config(tmp_path, data)), *override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid config") and f"  {field}: " in err
    assert not (tmp_path / "runs").exists()


def test_config_error_message_is_exact_for_lr():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"task": {"name": "arith"}, "data": {"train": "x"}, "train": {"lr": -1}})
    assert str(err.value) == "invalid config <dict>:\n  train.lr: Input should be greater than 0"
