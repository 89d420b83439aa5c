"""Helpers of the export tests: whether llama.cpp is installed, and the tiny student's run config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stepdistill.data.io import write_jsonl
from stepdistill.demo_data import demo_splits

try:
    import llama_cpp  # noqa: F401

    HAVE_LLAMA = True
except ImportError:
    HAVE_LLAMA = False

NEEDS_LLAMA = pytest.mark.skipif(
    not HAVE_LLAMA, reason="llama-cpp-python is not installed: `make test` or `make setup-server` builds it"
)


N_TRAIN = 16  # training problems; the test split holds half of them and as many new ones


def _rows(records: list[dict]) -> list[dict]:
    return [{"id": r["id"], "fields": {"question": r["question"]}, "gold": r["answer"]} for r in records]


def write_run_config(folder: Path, model_dir: Path, **train) -> Path:
    """A `stepdistill train` config on 16 train, 4 valid and 16 test demo problems (8 of them from train)."""
    splits = demo_splits({"train": N_TRAIN, "valid": 4, "test": N_TRAIN // 2}, seed=0)
    data = folder / "data"
    write_jsonl(data / "train.jsonl", _rows(splits["train"]))
    write_jsonl(data / "valid.jsonl", _rows(splits["valid"]))
    write_jsonl(data / "test.jsonl", _rows(splits["train"][: N_TRAIN // 2] + splits["test"]))
    raw = {
        "name": "tiny",
        "out_dir": str(folder / "runs"),
        "task": {"name": "arith"},
        "data": {k: str(data / f"{k}.jsonl") for k in ("train", "valid", "test")},
        "student": {"model": str(model_dir)},
        "train": {
            "method": "standard",
            "batch_size": 8,
            "lr": 1e-2,  # a tiny model from random weights: a high rate learns the rows in seconds
            "max_steps": 150,  # enough to learn about half the training rows by heart
            "eval_every": 150,
            "max_input_length": 64,
            "max_target_length": 16,
            "precision": "fp32",
            "seed": 0,
            **train,
        },
        "eval": {"batch_size": 8, "max_new_tokens": 12, "splits": ["valid", "test"]},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
