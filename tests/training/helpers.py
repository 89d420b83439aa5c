"""Building tiny configs for the training tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stepdistill.config import Config, config_from_dict


def tiny_config(tmp_path: Path, model_dir: Path, name: str = "toy", **train: Any) -> Config:
    """A config for `fit` on hand-made splits (data paths unused); `train` overrides TrainConfig keys."""
    train_cfg = {"method": "step_by_step", "batch_size": 4, "lr": 1e-2, "max_steps": 8, "eval_every": 4,
                 "log_every": 2, "seed": 0, "max_grad_norm": 1.0}
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
