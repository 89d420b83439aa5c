"""Validation carving, nested subsampling and load_splits under every DataConfig knob."""

from __future__ import annotations

import json

import pytest

from stepdistill.data.config import DataConfig
from stepdistill.data.splits import carve_validation, load_splits, subsample
from stepdistill.tasks.arith import ArithTask


@pytest.mark.parametrize(
    ("n", "n_train", "n_valid"), [(9741, 8766, 975), (800, 720, 80), (10, 9, 1), (1, 0, 1)]
)
def test_carve_counts(n, n_train, n_valid):
    train, valid = carve_validation(list(range(n)), 0.1, seed=0)
    assert (len(train), len(valid)) == (n_train, n_valid)
    assert sorted(train + valid) == list(range(n)) and train == sorted(train) and valid == sorted(valid)


def test_carve_is_deterministic_and_seeded():
    rows = list(range(100))
    assert carve_validation(rows, 0.1, 0) == carve_validation(rows, 0.1, 0)
    assert carve_validation(rows, 0.1, 0)[1] != carve_validation(rows, 0.1, 1)[1]
    with pytest.raises(ValueError):
        carve_validation(rows, 1.0)


def test_subsample_nested_and_sized():
    rows = list(range(8766))
    sizes = {f: subsample(rows, f, seed=3) for f in (1.0, 0.5, 0.25, 0.125)}
    assert [len(sizes[f]) for f in (1.0, 0.5, 0.25, 0.125)] == [8766, 4383, 2192, 1096]
    assert set(sizes[0.125]) < set(sizes[0.25]) < set(sizes[0.5]) < set(sizes[1.0])
    assert len(subsample(list(range(3)), 0.01)) == 1
    assert subsample(rows, 0.25, seed=3) != subsample(rows, 0.25, seed=4)


def _write(path, n):
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(n)))
    return str(path)


def test_load_splits(tmp_path):
    train = _write(tmp_path / "train.jsonl", 50)
    test = _write(tmp_path / "test.jsonl", 7)
    task = ArithTask()
    full = load_splits(DataConfig(train=train, test=test), task)
    assert {k: len(v) for k, v in full.items()} == {"train": 45, "valid": 5, "test": 7}
    half = load_splits(DataConfig(train=train, test=test, train_fraction=0.5), task)
    assert half["valid"] == full["valid"]  # the same valid rows at every sweep point
    assert len(half["train"]) == 23  # 45 * 0.5 rounded half up
    assert {a.id for a in half["train"]} < {a.id for a in full["train"]}
    given = load_splits(DataConfig(train=train, valid=test, max_examples=3), task)
    assert {k: len(v) for k, v in given.items()} == {"train": 3, "valid": 3}
    assert [a.id for a in given["train"]] == ["arith-0", "arith-1", "arith-2"]
