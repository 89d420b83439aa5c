"""Data section of the config: where the splits are and how validation is carved."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Annotated JSONL (or raw JSONL/CSV/Parquet/HF-datasets dir for `annotate`/`standard`).
    train: str
    valid: str | None = None  # None: carve valid_fraction of train with split_seed (the paper: 10%)
    test: str | None = None
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 0  # fixed so every method and seed sees the same validation rows
    train_fraction: float = Field(1.0, gt=0, le=1)  # data-efficiency sweeps: subsample train
    max_examples: int | None = Field(None, ge=1)  # cap per split, for smoke runs
