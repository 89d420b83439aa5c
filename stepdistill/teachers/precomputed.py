"""Teacher answers read from files: completions someone already paid for (e.g. the paper's PaLM outputs).

`teacher.path` is a JSONL file, or a folder of *.jsonl files, whose rows carry an "id" and either
"completion" (a raw completion) or "teacher_raw" (an annotated JSONL, such as the output of
`stepdistill import-official`). No request is made; the answers go through the same parsing, voting,
filtering and summary as any other teacher's. Token counts are unknown and reported as 0.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from stepdistill.data.io import iter_jsonl
from stepdistill.errors import ConfigError, DataError
from stepdistill.teachers.base import Completion, Job, Sampling, Teacher
from stepdistill.teachers.config import TeacherConfig


def read_completions(path: str | Path) -> dict[str, str]:
    """id -> completion from one JSONL file or every *.jsonl in a folder; duplicate ids are an error."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise ConfigError(f"teacher.path: {path} does not exist or holds no .jsonl files")
    out: dict[str, str] = {}
    where: dict[str, str] = {}
    for file in files:
        for lineno, obj in iter_jsonl(file):
            if not isinstance(obj.get("id"), str):
                raise DataError(str(file), lineno, "id", "missing or not a string")
            text = obj.get("completion", obj.get("teacher_raw"))
            if text is None and "teacher_raw" in obj:
                continue  # an annotated row without a teacher answer: nothing to offer
            if not isinstance(text, str):
                raise DataError(str(file), lineno, "completion", "missing or not a string")
            if obj["id"] in out:
                raise DataError(
                    str(file), lineno, "id", f"duplicate id '{obj['id']}' (first in {where[obj['id']]})"
                )
            out[obj["id"]] = text
            where[obj["id"]] = f"{file}:{lineno}"
    return out


class PrecomputedTeacher(Teacher):
    def __init__(self, completions: dict[str, str], name: str):
        self.completions = completions
        self.identity = f"precomputed:{name}"

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> PrecomputedTeacher:
        if not cfg.path:
            raise ConfigError(
                "teacher.path: the precomputed backend needs a JSONL file or folder of completions"
            )
        return cls(read_completions(cfg.path), cfg.model or Path(cfg.path).stem)

    async def stream(self, jobs: Sequence[Job], sampling: Sampling) -> AsyncIterator[tuple[Job, Completion]]:
        for job in jobs:
            text = self.completions.get(job.example_id)
            if text is None:
                yield (
                    job,
                    Completion.failed(
                        "missing_precomputed", detail=f"no completion for id '{job.example_id}'"
                    ),
                )
            else:
                yield job, Completion(text=text)
