"""Task section of the config: which task family, and for `generic` how to read the user's data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # cqa, svamp, esnli, anli (the paper's four), arith (the shipped demo task), generic (YAML-declared)
    name: Literal["cqa", "svamp", "esnli", "anli", "arith", "generic"]
    # generic only: path to a task YAML (see README "Your own task"), or the same keys inline below
    spec: str | None = None
    input_template: str | None = None
    label_field: str | None = None
    id_field: str | None = None
    labels: list[str] | None = None
    answer_pattern: str | None = None
    metric: Literal["exact", "normalized", "numeric"] = "exact"
