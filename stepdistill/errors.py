"""Errors a user can act on: each names where the problem is and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def suggest(word: object, choices: Iterable[object]) -> str:
    """ " (did you mean `x`?)" naming the nearest of `choices` to a misspelt `word`, else ""."""
    near = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean `{near[0]}`?)" if near else ""


class StepDistillError(Exception):
    """Base class for errors reported to the user without a traceback by the CLI."""


class DataError(StepDistillError):
    """Malformed input data: names the file, the line (1-based, when known) and the field."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {message}")


class ConfigError(StepDistillError):
    """Invalid configuration: names the field and what is allowed."""


class TeacherError(StepDistillError):
    """A teacher backend could not be used at all (not a per-request failure, which is counted)."""


class DiskFullError(StepDistillError):
    """The disk filled up during a write; the previous file, checkpoint or cache is intact."""
