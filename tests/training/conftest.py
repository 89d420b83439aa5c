"""Fixtures of the training tests: a tiny task of our own and hand-made annotated examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stepdistill.config import Config, config_from_dict
from stepdistill.schema import Annotation, Example
from stepdistill.tasks.base import Parsed, Task


class ToyTask(Task):
    """Inputs are short texts in `fields["text"]`; labels are single words."""

    name = "toy"
    answer_phrase = "So the answer is"

    def example_from_record(self, record: dict[str, Any], index: int) -> Example:
        return Example(
            id=str(record.get("id", index)), fields={"text": record["text"]}, gold=record.get("label")
        )

    def format_input(self, fields: dict[str, Any]) -> str:
        return fields["text"]

    def parse_completion(self, text: str) -> Parsed:
        head, sep, tail = text.rpartition(self.answer_phrase)
        if not sep:
            return Parsed(None, None, "no answer phrase")
        return Parsed(head.strip(), tail.strip().rstrip("."))


def make_annotations(n: int = 6) -> list[Annotation]:
    """n examples 'colour of the i-th fruit' with gold/teacher labels and rationales."""
    fruits = [
        ("banana", "yellow"),
        ("cherry", "red"),
        ("lime", "green"),
        ("plum", "purple"),
        ("orange", "orange"),
        ("blueberry", "blue"),
        ("lemon", "yellow"),
        ("apple", "red"),
    ]
    out = []
    for i in range(n):
        fruit, colour = fruits[i % len(fruits)]
        out.append(
            Annotation(
                id=f"toy-{i}",
                fields={"text": f"What colour is a {fruit}?"},
                gold=colour,
                teacher_label=colour,
                teacher_rationale=f"A ripe {fruit} is {colour}.",
                teacher_raw=f"A ripe {fruit} is {colour}. So the answer is {colour}.",
            )
        )
    return out


@pytest.fixture
def toy_task() -> ToyTask:
    return ToyTask()


@pytest.fixture
def toy_annotations() -> list[Annotation]:
    return make_annotations()


def _tiny_config(tmp_path: Path, model_dir: Path, name: str = "toy", **train: Any) -> Config:
    """A config for `fit` on hand-made splits (data paths unused); `train` overrides TrainConfig keys."""
    train_cfg = {
        "method": "step_by_step",
        "batch_size": 4,
        "lr": 1e-2,
        "max_steps": 8,
        "eval_every": 4,
        "log_every": 2,
        "seed": 0,
        "max_grad_norm": 1.0,
    }
    train_cfg.update(train)
    raw = {
        "name": name,
        "out_dir": str(tmp_path / "runs"),
        "task": {"name": "arith"},
        "data": {"train": str(tmp_path / "unused.jsonl")},
        "student": {"model": str(model_dir)},
        "train": train_cfg,
        "eval": {"batch_size": 8, "max_new_tokens": 8, "splits": ["valid", "test"]},
    }
    return config_from_dict(raw)


@pytest.fixture
def make_config():
    """tiny_config(tmp_path, model_dir, name=..., **train_overrides) -> Config."""
    return _tiny_config


@pytest.fixture
def make_splits():
    """make_splits(n) -> {"train", "valid", "test"}: the same n toy examples in each split."""

    def build(n: int = 4) -> dict[str, list[Annotation]]:
        rows = make_annotations(n)
        return {"train": rows, "valid": rows, "test": rows}

    return build
