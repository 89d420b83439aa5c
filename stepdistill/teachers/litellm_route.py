"""Teacher through LiteLLM (`pip install stepdistill[litellm]`): one config line for 100+ providers.

`teacher.model` is LiteLLM's provider/model string (e.g. "anthropic/claude-3-5-haiku-20241022");
LiteLLM reads each provider's key from its usual environment variable. Concurrency is bounded like
the openai_http backend; retries are LiteLLM's own (`num_retries = teacher.max_retries`). Failures
that survive the retries are counted per exception type.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from stepdistill.errors import TeacherError
from stepdistill.teachers.base import Completion, Job, Sampling, Teacher
from stepdistill.teachers.config import TeacherConfig


class LiteLLMTeacher(Teacher):
    def __init__(self, litellm: Any, cfg: TeacherConfig):
        self.litellm, self.cfg = litellm, cfg
        self.identity = f"litellm:{cfg.model}"

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> LiteLLMTeacher:
        try:
            import litellm
        except ImportError:
            raise TeacherError(
                "teacher.backend 'litellm' needs: pip install 'stepdistill[litellm]'"
            ) from None
        if not cfg.model:
            raise TeacherError("teacher.model: the litellm backend needs a provider/model string")
        return cls(litellm, cfg)

    async def _one(self, job: Job, sampling: Sampling, gate: asyncio.Semaphore) -> tuple[Job, Completion]:
        kwargs: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": list(job.prompt.messages),
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "num_retries": self.cfg.max_retries,
            "timeout": self.cfg.timeout_s,
            **self.cfg.extra_body,
        }
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        if (seed := sampling.seed_for(job.sample)) is not None:
            kwargs["seed"] = seed
        async with gate:
            try:
                resp = await self.litellm.acompletion(**kwargs)
            except Exception as err:  # provider errors arrive as many exception types; count them
                return job, Completion.failed(type(err).__name__, self.cfg.max_retries, str(err)[:200])
        usage = getattr(resp, "usage", None)
        return job, Completion(
            text=resp.choices[0].message.content or "",
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    async def stream(self, jobs: Sequence[Job], sampling: Sampling) -> AsyncIterator[tuple[Job, Completion]]:
        gate = asyncio.Semaphore(self.cfg.concurrency)
        tasks = [asyncio.ensure_future(self._one(j, sampling, gate)) for j in jobs]
        try:
            for fut in asyncio.as_completed(tasks):
                yield await fut
        finally:
            for t in tasks:
                t.cancel()
