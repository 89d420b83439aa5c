"""Sweep section of the config (`sweep:`, with `sweep.demo_data`): what `stepdistill run` trains.

`stepdistill run` trains every method x student x seed x fraction of the sweep (stepdistill/run.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stepdistill.training.config import StudentConfig, TrainConfig

_METHODS = get_args(TrainConfig.model_fields["method"].annotation)


class DemoDataConfig(BaseModel):
    """Generate the demo arithmetic task (stepdistill/demo_data.py) into data.train/valid/test."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    # Examples per split; a split whose data path is unset is not generated.
    sizes: dict[str, int] = Field(default_factory=lambda: {"train": 200, "valid": 40, "test": 60})


class MethodSpec(BaseModel):
    """One method of a sweep with its label settings, e.g. the paper's two step-by-step settings:
    {method: step_by_step, label_source: gold, gold_filter: true} and
    {method: step_by_step, label_source: teacher}. A plain string sweeps the method as configured.
    step_by_step's label weight may differ per entry, so one sweep compares α settings:
    {method: step_by_step, alpha_schedule: linear, alpha: 0.5, alpha_end: 1.0} or {..., alpha: 0.8}."""

    model_config = ConfigDict(extra="forbid")

    method: str
    label_source: Literal["gold", "teacher"] | None = None  # None: train.label_source
    gold_filter: bool | None = None  # None: train.gold_filter
    alpha: float | None = Field(None, ge=0, le=1)  # None: train.alpha
    alpha_schedule: Literal["constant", "linear"] | None = None  # None: train.alpha_schedule
    alpha_end: float | None = Field(None, ge=0, le=1)  # None: train.alpha_end

    @property
    def folder(self) -> str:
        """The part of a training folder's name that says which method this is."""
        parts = [self.method]
        if self.label_source is not None:
            parts.append(self.label_source)
        if self.gold_filter:
            parts.append("filtered")
        if self.alpha_schedule is not None:
            parts.append(self.alpha_schedule)
        if self.alpha is not None:
            parts.append(f"alpha{self.alpha:g}")
        if self.alpha_end is not None:
            parts.append(f"to{self.alpha_end:g}")
        return "-".join(parts)

    def train_overrides(self) -> dict[str, Any]:
        """The train-section keys this entry sets."""
        keys = ("label_source", "gold_filter", "alpha", "alpha_schedule", "alpha_end")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class SweepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Method names, or MethodSpec mappings for methods with their own label settings.
    methods: list[str | MethodSpec] = Field(default_factory=lambda: ["step_by_step"])
    # Students to train every method on (None: the `student` section alone). Each entry is a hub id or
    # folder, or a mapping of `student` keys laid over the `student` section (e.g. {keep_layers: [...]},
    # {name: small, model: ...}).
    students: list[str | dict[str, Any]] | None = None
    seeds: list[int] = Field(default_factory=lambda: [0])
    fractions: list[float] = Field(default_factory=lambda: [1.0])  # of the annotated training set
    demo_data: DemoDataConfig | None = None  # set: write the demo task's data first (make demo)
    # Test examples the teacher answers again, uncached, to time its chain-of-thought generation per
    # example against the student's label-only prediction; 0 skips the measurement.
    teacher_timing_examples: int = Field(8, ge=0)
    # Trainings at once, each in its own process with cores // workers threads (run_parallel.py);
    # auto: one per core on a CPU-only machine, 1 where a GPU would be shared. 1: in turn, in-process.
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = 1

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str | MethodSpec]) -> list[str | MethodSpec]:
        names = [m if isinstance(m, str) else m.method for m in methods]
        unknown = [m for m in names if m not in _METHODS]
        if unknown or not methods:
            raise ValueError(f"unknown method(s) {unknown or '(none given)'}; allowed: {', '.join(_METHODS)}")
        folders = [method_spec(m).folder for m in methods]
        if len(set(folders)) < len(folders):
            raise ValueError(f"the same method and label settings twice: {folders}")
        return methods

    @field_validator("students")
    @classmethod
    def _valid_students(cls, students: list[str | dict[str, Any]] | None) -> list | None:
        if students is None:
            return None
        if not students:
            raise ValueError("give at least one student, or leave sweep.students unset")
        for i, entry in enumerate(students):
            if isinstance(entry, dict):
                try:
                    StudentConfig.model_validate({"model": "-", **entry})
                except ValidationError as err:
                    first = err.errors()[0]
                    where = ".".join(str(p) for p in first["loc"])
                    raise ValueError(f"students[{i}].{where}: {first['msg']}") from None
        return students

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


def method_spec(entry: str | MethodSpec) -> MethodSpec:
    return MethodSpec(method=entry) if isinstance(entry, str) else entry
