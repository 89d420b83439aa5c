"""Sweep and report sections of the config (used by `stepdistill run`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[str] = Field(default_factory=lambda: ["step_by_step"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    fractions: list[float] = Field(default_factory=lambda: [1.0])


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_size: int = 20
