"""The demo task's generator: deterministic, arithmetic right, splits disjoint, readable by the task."""

from __future__ import annotations

import json
import re

import pytest

from stepdistill.demo_data import TEMPLATES, demo_splits, generate_demo_data
from stepdistill.tasks.arith import ArithTask
from stepdistill.tasks.arith_eval import evaluate

SIZES = {"train": 150, "valid": 20, "test": 40}


def _int_value(equation: str) -> int:
    """Left-to-right integer arithmetic, independent of the task's evaluator (the templates only
    chain + and -, or use a single * or /)."""
    tokens = equation.split()
    value = int(tokens[0])
    for op, num in zip(tokens[1::2], tokens[2::2]):
        n = int(num)
        if op == "+":
            value += n
        elif op == "-":
            value -= n
        elif op == "*":
            value *= n
        else:
            assert value % n == 0, equation
            value //= n
    return value


def test_files_are_deterministic(tmp_path):
    paths_a = {s: tmp_path / "a" / f"{s}.jsonl" for s in SIZES}
    paths_b = {s: tmp_path / "b" / f"{s}.jsonl" for s in SIZES}
    generate_demo_data(paths_a, SIZES, seed=3)
    generate_demo_data(paths_b, SIZES, seed=3)
    for s in SIZES:
        assert paths_a[s].read_bytes() == paths_b[s].read_bytes()
        assert len(paths_a[s].read_text().splitlines()) == SIZES[s]
    other = demo_splits(SIZES, seed=4)
    assert [r["question"] for r in other["test"]] != [
        json.loads(line)["question"] for line in paths_a["test"].read_text().splitlines()
    ]


def test_every_gold_equation_is_right():
    splits = demo_splits(SIZES, seed=0)
    task = ArithTask()
    for split, rows in splits.items():
        for i, rec in enumerate(rows):
            value = _int_value(rec["answer"])
            assert value >= 0
            assert evaluate(rec["answer"]) == value
            # the explanation ends with "<equation> = <value> <item>..." and uses the same numbers
            stated = re.search(re.escape(rec["answer"]) + r" = (\d+)", rec["explanation"])
            assert stated and int(stated.group(1)) == value, rec
            # every number of the equation appears in the question
            for num in re.findall(r"\d+", rec["answer"]):
                assert re.search(rf"\b{num}\b", rec["question"]), rec
            ex = task.example_from_record(rec, i)
            assert ex.id == f"demo-{split}-{i}" and ex.gold == rec["answer"]
            assert task.is_correct(str(value), ex.gold)


def test_splits_are_disjoint_and_mix_templates():
    splits = demo_splits(SIZES, seed=0)
    questions = [r["question"] for rows in splits.values() for r in rows]
    assert len(set(questions)) == len(questions) == sum(SIZES.values())
    for rows in splits.values():
        assert {r["template"] for r in rows} == set(TEMPLATES)
    # templates taken in turn: the test split holds 40 / 5 = 8 of each
    counts = {t: sum(r["template"] == t for r in splits["test"]) for t in TEMPLATES}
    assert set(counts.values()) == {8}


def test_missing_size_raises(tmp_path):
    with pytest.raises(ValueError, match="no demo size given for split"):
        generate_demo_data({"train": tmp_path / "t.jsonl"}, {"test": 3})
    assert not (tmp_path / "t.jsonl").exists()
