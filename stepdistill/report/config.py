"""Sweep and report sections of the config (used by `stepdistill run` and `stepdistill report`)."""

from __future__ import annotations

from typing import get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stepdistill.training.config import TrainConfig

_METHODS = get_args(TrainConfig.model_fields["method"].annotation)


class DemoDataConfig(BaseModel):
    """Generate the demo arithmetic task (stepdistill/demo_data.py) into data.train/valid/test."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    # Examples per split; a split whose data path is unset is not generated.
    sizes: dict[str, int] = Field(default_factory=lambda: {"train": 200, "valid": 40, "test": 60})


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[str] = Field(default_factory=lambda: ["step_by_step"])
    seeds: list[int] = Field(default_factory=lambda: [0])
    fractions: list[float] = Field(default_factory=lambda: [1.0])  # of the annotated training set
    demo_data: DemoDataConfig | None = None  # set: write the demo task's data first (make demo)
    # Test examples the teacher answers again, uncached, to time its chain-of-thought generation per
    # example against the student's label-only prediction; 0 skips the measurement.
    teacher_timing_examples: int = Field(8, ge=0)

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str]) -> list[str]:
        unknown = [m for m in methods if m not in _METHODS]
        if unknown or not methods:
            raise ValueError(f"unknown method(s) {unknown or '(none given)'}; allowed: {', '.join(_METHODS)}")
        return methods

    @field_validator("fractions")
    @classmethod
    def _fractions_in_range(cls, fractions: list[float]) -> list[float]:
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            raise ValueError(f"fractions must be in (0, 1], got {fractions}")
        return fractions

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("give at least one seed")
        return seeds


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_size: int = Field(20, ge=0)  # test examples shown side by side (teacher and every method)
    # The teacher's parameter count when the backend cannot tell (API models), e.g. 540e9 for PaLM.
    teacher_params: float | None = None
