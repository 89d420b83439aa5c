"""The data types every stage shares: an input `Example` and its teacher `Annotation`.

One annotated example is one JSON object per line (JSONL):

    {"id": "cqa-train-17",
     "fields": {"question": "...", "choices": ["...", ...]},   # task inputs, task-specific keys
     "gold": "bank",                                          # gold label or null
     "teacher_label": "bank",                                 # parsed teacher label or null
     "teacher_rationale": "Banks keep money. ...",            # parsed rationale or null
     "teacher_raw": "Banks keep money. ... So the answer is (b) bank.",
     "teacher_model": "precomputed:palm-540b",                # teacher identity
     "parse_error": null,                                     # why the completion did not parse
     "teacher_samples": null,                                 # self-consistency samples, see below
     "teacher_logprobs": null}                                # optional per-token top-k, see below

`teacher_samples` (when n > 1): a list of {"raw", "label", "rationale", "parse_error"}; the top-level
label is the majority vote and the top-level rationale one of the agreeing samples.
`teacher_logprobs` (when requested from an API teacher): a list over generated tokens of
{"token": str, "logprob": float, "top": [[token, logprob], ...]}.
An example without a teacher (raw data) simply has the teacher_* keys null.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Example:
    """One task input; `fields` holds the task's own keys (question, choices, premise, ...)."""

    id: str
    fields: dict[str, Any]
    gold: str | None = None


@dataclass
class Annotation:
    """An example with what a teacher said about it. Teacher keys are None until annotated."""

    id: str
    fields: dict[str, Any]
    gold: str | None = None
    teacher_label: str | None = None
    teacher_rationale: str | None = None
    teacher_raw: str | None = None
    teacher_model: str | None = None
    parse_error: str | None = None
    teacher_samples: list[dict[str, Any]] | None = None
    teacher_logprobs: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def example(self) -> Example:
        return Example(id=self.id, fields=self.fields, gold=self.gold)

    @classmethod
    def from_example(cls, ex: Example) -> Annotation:
        return cls(id=ex.id, fields=dict(ex.fields), gold=ex.gold)

    @property
    def annotated(self) -> bool:
        """True when the teacher produced a parsed label and rationale."""
        return self.teacher_label is not None and self.teacher_rationale is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["extra"]:
            d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Annotation:
        """Build from a parsed JSON object; unknown keys raise KeyError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise KeyError(", ".join(sorted(unknown)))
        return cls(**d)
