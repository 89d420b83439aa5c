"""Helpers of the fault-injection suite: annotated arithmetic data on disk, a CLI training config for
the tests' tiny decoder, and `python -m stepdistill.cli` run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from stepdistill.data.io import write_jsonl
from stepdistill.demo_data import demo_splits

REPO = Path(__file__).resolve().parents[2]


def annotated_rows(split: str, n: int) -> list[dict[str, Any]]:
    """n demo arithmetic problems of `split` (train: 16, valid: 4 at most; no question in both),
    annotated as a perfect teacher would."""
    rows = demo_splits({"train": 16, "valid": 4}, seed=0)[split][:n]
    return [
        {
            "id": r["id"],
            "fields": {"question": r["question"]},
            "gold": r["answer"],
            "teacher_label": r["answer"],
            "teacher_rationale": r["explanation"],
        }
        for r in rows
    ]


def write_train_config(tmp_path: Path, model_dir: Path, name: str = "k", **train: Any) -> Path:
    """A `stepdistill train` config on 16 train / 4 valid annotated rows; returns its path."""
    data = tmp_path / "data"
    if not (data / "train.jsonl").exists():
        write_jsonl(data / "train.jsonl", annotated_rows("train", 16))
        write_jsonl(data / "valid.jsonl", annotated_rows("valid", 4))
    train_cfg = {
        "batch_size": 4,
        "lr": 1e-2,
        "max_steps": 16,
        "eval_every": 8,
        "save_every": 1,
        "keep_checkpoints": 2,
        "log_every": 1,
        "precision": "fp32",
        "seed": 0,
        **train,
    }
    raw = {
        "name": name,
        "out_dir": str(tmp_path / "runs"),
        "task": {"name": "arith"},
        "data": {"train": str(data / "train.jsonl"), "valid": str(data / "valid.jsonl")},
        "student": {"model": str(model_dir)},
        "train": train_cfg,
        "eval": {"batch_size": 8, "max_new_tokens": 4, "splits": ["valid"]},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of CLI subprocesses: this checkout's package, one thread (same numerics in
    every process, so interrupted and uninterrupted runs are comparable bit for bit)."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TQDM_DISABLE="1",
        CUDA_VISIBLE_DEVICES="",  # CPU: bit-identical results across processes need deterministic kernels
    )
    env.update(extra)
    return env


def start_cli(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stepdistill.cli", *args],
        env=cli_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(*args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    proc = start_cli(*args, **env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
