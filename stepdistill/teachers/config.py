"""Teacher and annotation sections of the config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class TeacherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai_http", "hf_local", "vllm", "precomputed", "litellm"]
    model: str = ""


class AnnotateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    splits: list[str] = ["train", "valid", "test"]
