"""The teacher registry: teacher.backend -> the backend class that serves it.

teachers/base.py is the interface every backend implements; this module is the one place that
knows every backend (each imported only when chosen, so its heavy dependencies load only then).
"""

from __future__ import annotations

from stepdistill.errors import ConfigError
from stepdistill.teachers.base import Teacher
from stepdistill.teachers.config import TeacherConfig


def make_teacher(cfg: TeacherConfig) -> Teacher:
    """Build the backend named by cfg.backend (heavy imports happen only for the one chosen)."""
    if cfg.backend == "openai_http":
        from stepdistill.teachers.openai_http import OpenAIHTTPTeacher

        return OpenAIHTTPTeacher.from_config(cfg)
    if cfg.backend == "hf_local":
        from stepdistill.teachers.hf_local import HFLocalTeacher

        return HFLocalTeacher.from_config(cfg)
    if cfg.backend == "vllm":
        from stepdistill.teachers.vllm_offline import VLLMTeacher

        return VLLMTeacher.from_config(cfg)
    if cfg.backend == "precomputed":
        from stepdistill.teachers.precomputed import PrecomputedTeacher

        return PrecomputedTeacher.from_config(cfg)
    if cfg.backend == "litellm":
        from stepdistill.teachers.litellm_route import LiteLLMTeacher

        return LiteLLMTeacher.from_config(cfg)
    raise ConfigError(f"teacher.backend: unknown backend '{cfg.backend}'")


class LazyTeacher:
    """Builds the teacher on first use, so a run answered wholly from the cache loads nothing."""

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg
        self._teacher: Teacher | None = None

    def get(self) -> Teacher:
        if self._teacher is None:
            teacher = make_teacher(self.cfg)
            teacher.preflight()  # before any work is sent: fail in seconds, saying what to fix
            self._teacher = teacher
        return self._teacher

    def close(self) -> None:
        if self._teacher is not None:
            self._teacher.close()
