"""What a task knows: how to read a record, show it to the student, parse a teacher, score an answer.

Every task family (nli.py, cqa.py, svamp.py, generic.py, arith.py) subclasses `Task`. Tasks are pure:
values in, values out, no I/O, so parsers and scorers are tested with exact expectations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from stepdistill.schema import Example


@dataclass(frozen=True)
class Parsed:
    """A teacher completion split into rationale and label; `error` says why it did not parse."""

    rationale: str | None
    label: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Task(ABC):
    """Base class of a task family. Subclasses set `name`, `labels` and `answer_phrase`."""

    name: str = ""
    # Closed label space (NLI: entailment/neutral/contradiction) or None for open answers.
    labels: tuple[str, ...] | None = None
    # The phrase that ends a chain of thought and introduces the answer, e.g. "So the answer is".
    answer_phrase: str = "So the answer is"

    @abstractmethod
    def example_from_record(self, record: dict[str, Any], index: int) -> Example:
        """Turn one raw data record into an Example; raise KeyError/ValueError naming the field."""

    @abstractmethod
    def format_input(self, fields: dict[str, Any]) -> str:
        """The text the student (and the teacher's question) shows for this example."""

    @abstractmethod
    def parse_completion(self, text: str) -> Parsed:
        """Split a raw teacher completion into (rationale, label), as the official code does."""

    def normalize(self, answer: str) -> str:
        """Canonical form of an answer for comparison; default: stripped text."""
        return answer.strip()

    def is_correct(self, pred: str | None, gold: str | None) -> bool:
        """Whether a predicted answer matches the gold one under the task's metric."""
        if pred is None or gold is None:
            return False
        return self.normalize(pred) == self.normalize(gold)

    def format_target(self, label: str) -> str:
        """The label text the student is trained to emit; default: the label itself."""
        return label.strip()

    def candidates(self, fields: dict[str, Any]) -> tuple[str, ...] | None:
        """The labels this example can have (eval.label_decoding: rank); default: the closed label
        space, None for open answers."""
        return self.labels


class RecordError(ValueError):
    """A raw record lacks a field or has a bad value; `field` names it so readers can report file:line."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"field '{field}': {message}")


def require(record: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    """record[key], checked for presence, type and (for text) not being blank; raises RecordError."""
    if key not in record or record[key] is None:
        raise RecordError(key, "missing")
    value = record[key]
    if isinstance(value, str) and not value.strip():
        raise RecordError(key, "empty")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError(key, f"expected {names}, got {type(value).__name__}")
    return value


def record_id(record: dict[str, Any], task: str, index: int, key: str = "id") -> str:
    """The record's own id when it has one, else "<task>-<index>"."""
    value = record.get(key)
    if value is None or value == "":
        return f"{task}-{index}"
    return str(value)


def cut_at(text: str, marker: str) -> str:
    """Text before the first `marker`: teacher completions run on into the next few-shot exemplar."""
    return text.split(marker, 1)[0]


def split_at_answer(text: str | None, marker: str, phrase: str) -> tuple[str, str] | None:
    """(rationale, text after the answer phrase) of a completion cut at the next exemplar's `marker`;
    None when the phrase is missing. The first phrase ends the chain of thought; a later one is
    restatement and bounds the answer."""
    body = cut_at(text or "", marker).rstrip()
    if phrase not in body:
        return None
    rationale, after = body.split(phrase, 2)[:2]
    return rationale.rstrip(), after
