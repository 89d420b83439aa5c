"""The one interface every teacher backend implements (the factory that picks one: registry.py).

A `Job` is one request: a prompt and a sample index (self-consistency sends n samples per prompt).
`Teacher.stream(jobs, sampling)` yields `(job, Completion)` pairs as they finish, so the annotator can
commit each answer to the cache the moment it arrives. A per-request failure is a Completion with
`error` set (counted by the annotator); a teacher that cannot work at all raises TeacherError.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """The same few-shot prompt in both forms: plain completion text and chat messages."""

    text: str
    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class Sampling:
    """Generation settings shared by all jobs of a run; part of the cache key."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int | None = None

    def seed_for(self, sample: int) -> int | None:
        """Seed of sample i: distinct per sample so self-consistency samples differ."""
        return None if self.seed is None else self.seed + sample


@dataclass(frozen=True)
class Job:
    """One request. `key` identifies it in the cache; `example_id` is for lookups and messages."""

    key: str
    example_id: str
    sample: int
    prompt: Prompt


@dataclass
class Completion:
    """A teacher answer with its token usage, or a failure (`error` = kind, e.g. "http_429")."""

    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[dict[str, Any]] | None = None
    error: str | None = None
    detail: str | None = None  # a short server message for failures
    retries: int = 0
    cached: bool = False
    # Every failed attempt by kind, the retried ones included ({"http_429": 2, "timeout": 1}).
    failed_attempts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, kind: str, retries: int = 0, detail: str | None = None) -> Completion:
        return cls(text=None, error=kind, retries=retries, detail=detail)


class Teacher(ABC):
    """Base class of a backend. `identity` ("backend:model") is recorded as teacher_model."""

    identity: str = ""

    @abstractmethod
    def stream(self, jobs: Sequence[Job], sampling: Sampling) -> AsyncIterator[tuple[Job, Completion]]:
        """Yield (job, completion) for every job, in completion order."""

    def close(self) -> None:
        """Release models or connections; the default has nothing to release."""
        return None

    def preflight(self) -> None:
        """Raise TeacherError at once when the backend cannot answer (e.g. no server); default: no check."""
        return None

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: Sampling) -> list[list[Completion]]:
        """Convenience (no cache): n completions per prompt, in prompt order."""
        jobs = [Job(f"{i}:{s}", str(i), s, p) for i, p in enumerate(prompts) for s in range(n)]

        async def collect() -> dict[str, Completion]:
            return {job.key: comp async for job, comp in self.stream(jobs, sampling)}

        got = asyncio.run(collect())
        return [[got[f"{i}:{s}"] for s in range(n)] for i in range(len(prompts))]
