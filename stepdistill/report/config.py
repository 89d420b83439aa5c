"""Report section of the config (`report:`, used by `stepdistill report` and `stepdistill run`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sample_size: int = Field(20, ge=0)  # test examples shown side by side (teacher and every method)
    # The teacher's parameter count when the backend cannot tell (API models), e.g. 540e9 for PaLM.
    teacher_params: float | None = None
