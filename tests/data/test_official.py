"""import_official on the real reference data, and its refusal to write anything on bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from stepdistill.data.io import read_annotations
from stepdistill.data.official import TEACHER, import_official
from stepdistill.errors import DataError
from stepdistill.tasks.cqa import CQATask
from stepdistill.tasks.svamp import SVAMPTask


def test_import_svamp_round_trip(shared_data, tmp_path):
    counts = import_official(shared_data, "svamp", tmp_path / "out")
    assert counts == {"train": 800, "test": 200}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test.jsonl", "train.jsonl"]
    test = read_annotations(tmp_path / "out" / "test.jsonl")
    first = json.loads((shared_data / "svamp" / "svamp_test.json").open().readline())
    raw0 = json.loads((shared_data / "svamp" / "llm" / "test_CoT_0.json").read_text())[0]
    a = test[0]
    assert (a.id, a.fields, a.gold) == ("svamp-test-0", {"input": first["input"]}, "( 10.0 * 45.0 )")
    assert (a.teacher_label, a.teacher_raw, a.teacher_model, a.parse_error) == (
        "(10 * 45)",
        raw0,
        TEACHER,
        None,
    )
    assert a.teacher_rationale.endswith("10 * 45 is 450.")
    failed = [x for x in test if x.parse_error]
    assert len(failed) == 2 and all(x.teacher_label is None and x.teacher_rationale is None for x in failed)
    assert sum(SVAMPTask().is_correct(x.teacher_label, x.gold) for x in test) == 148


def test_import_cqa_counts(shared_data, tmp_path):
    assert import_official(shared_data, "cqa", tmp_path) == {"train": 9741, "test": 1221}
    test = read_annotations(tmp_path / "test.jsonl")
    assert sum(CQATask().is_correct(x.teacher_label, x.gold) for x in test) == 943
    train = read_annotations(tmp_path / "train.jsonl")
    assert train[0].id == "6b819727eb8a670df26a7ffad036c119" and len({a.id for a in train}) == 9741


def _small_copy(shared_data, tmp_path):
    """A two-split SVAMP tree with 3 test rows, to break in different ways."""
    root = tmp_path / "root"
    (root / "svamp" / "llm").mkdir(parents=True)
    lines = (shared_data / "svamp" / "svamp_test.json").read_text().splitlines()[:3]
    (root / "svamp" / "svamp_test.json").write_text("\n".join(lines) + "\n")
    (root / "svamp" / "svamp_train.json").write_text("\n".join(lines) + "\n")
    outs = json.loads((shared_data / "svamp" / "llm" / "test_CoT_0.json").read_text())[:3]
    for split in ("train", "test"):
        (root / "svamp" / "llm" / f"{split}_CoT_0.json").write_text(json.dumps(outs[:2]))
        (root / "svamp" / "llm" / f"{split}_CoT_1.json").write_text(json.dumps(outs[2:]))
    return root


def test_small_copy_imports(shared_data, tmp_path):
    root = _small_copy(shared_data, tmp_path)
    assert import_official(root, "svamp", tmp_path / "out") == {"train": 3, "test": 3}
    assert [a.teacher_label for a in read_annotations(tmp_path / "out" / "test.jsonl")] == [
        "(10 * 45)",
        "(10 - (3 + 6))",
        read_annotations(tmp_path / "out" / "train.jsonl")[2].teacher_label,
    ]


def test_mismatched_counts_write_nothing(shared_data, tmp_path):
    root = _small_copy(shared_data, tmp_path)
    (root / "svamp" / "llm" / "test_CoT_1.json").write_text("[]")
    with pytest.raises(DataError) as err:
        import_official(root, "svamp", tmp_path / "out")
    msg = str(err.value)
    assert "svamp_test.json" in msg and "3 rows but 2 completions" in msg and "test_CoT_1.json" in msg
    assert not (tmp_path / "out").exists()  # train was fine, but nothing was written


def test_malformed_line_names_file_line_and_writes_nothing(shared_data, tmp_path):
    root = _small_copy(shared_data, tmp_path)
    path = root / "svamp" / "svamp_test.json"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], '{"label": "( 1.0 )"}', lines[2]]) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError) as err:
        import_official(root, "svamp", out)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), 2, "input")
    assert list(out.iterdir()) == []
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DataError, match=r"svamp_test\.json:2: not valid JSON"):
        import_official(root, "svamp", out)
    assert list(out.iterdir()) == []


def test_bad_completion_file_and_unknown_task(shared_data, tmp_path):
    root = _small_copy(shared_data, tmp_path)
    (root / "svamp" / "llm" / "train_CoT_1.json").write_text("[null]")
    with pytest.raises(DataError, match=r"train_CoT_1\.json:1: completion 1 is not a string"):
        import_official(root, "svamp", tmp_path / "out")
    with pytest.raises(DataError, match="unknown task 'gsm8k'"):
        import_official(root, "gsm8k", tmp_path / "out")
    shutil.rmtree(root / "svamp")
    with pytest.raises(DataError, match="folder does not exist"):
        import_official(root, "svamp", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_nli_layout_with_valid_split(tmp_path):
    """A hand-written anli1 tree in the official layout: integer labels, three splits, one bad completion."""
    task_dir = tmp_path / "root" / "anli1"
    (task_dir / "llm").mkdir(parents=True)
    rows = [
        {"premise": "A man plays guitar.", "hypothesis": "A man makes music.", "label": 0, "reason": "x"},
        {"premise": "It rained.", "hypothesis": "It was dry.", "label": 2, "reason": "y"},
    ]
    outs = [
        "Playing guitar is making music. So the answer is entailment.\n\nPremise: a\nHypothesis: b\nSo the",
        "Rain is not dry weather. So the answer is maybe.",
    ]
    for split in ("train", "valid", "test"):
        (task_dir / f"anli1_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (task_dir / "llm" / "train_CoT_0.json").write_text(json.dumps(outs))
    assert import_official(tmp_path / "root", "anli1", tmp_path / "out") == {
        "train": 2,
        "valid": 2,
        "test": 2,
    }
    train = read_annotations(tmp_path / "out" / "train.jsonl")
    assert [(a.id, a.gold, a.teacher_label) for a in train] == [
        ("anli-train-0", "entailment", "entailment"),
        ("anli-train-1", "contradiction", None),
    ]
    assert train[0].teacher_rationale == "Playing guitar is making music."
    assert train[1].parse_error == "answer 'maybe.' is not one of entailment, neutral, contradiction"
    valid = read_annotations(tmp_path / "out" / "valid.jsonl")  # no completions: raw examples
    assert [(a.id, a.teacher_raw, a.teacher_model) for a in valid] == [
        ("anli-valid-0", None, None),
        ("anli-valid-1", None, None),
    ]


def test_cli_import_official(shared_data, tmp_path, capsys):
    from stepdistill.cli import main

    assert main(["import-official", str(shared_data), "--task", "svamp", "--out", str(tmp_path / "o")]) == 0
    assert len(read_annotations(tmp_path / "o" / "train.jsonl")) == 800
    assert main(["import-official", str(tmp_path), "--task", "svamp", "--out", str(tmp_path / "p")]) == 2
    assert "folder does not exist" in capsys.readouterr().err
