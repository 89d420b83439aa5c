"""Evaluation section of the config (`eval:`): how stepdistill/evaluate.py predicts and scores."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    splits: list[str] = Field(default_factory=lambda: ["valid", "test"])
    # How the label is predicted: generate it (greedy), or rank the example's possible labels (its
    # multiple-choice options, or task.labels) by the student's likelihood (stepdistill/ranking.py).
    label_decoding: Literal["generate", "rank"] = "generate"
