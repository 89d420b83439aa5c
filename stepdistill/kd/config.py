"""Soft-target distillation section of the config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class KDConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loss: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    temperature: float = 1.0
    weight: float = 0.5
