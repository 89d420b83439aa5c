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

import re
from collections.abc import Mapping
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


# Methods whose labels are fixed by what they are: standard learns gold labels, distill the teacher's.
FIXED_LABELS = {"standard": "gold", "distill": "teacher"}


def label_source(method: str, configured: str) -> str:
    """Which labels a method trains on: "gold" or "teacher" (`configured` is train.label_source)."""
    return FIXED_LABELS.get(method, configured)


def _folder_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-") or "student"


def student_folder(student: Mapping[str, Any]) -> str:
    """A short name for a student (the `student:` section, as a mapping) in reports and folder
    names: student.name, else the model's last path part plus its layer count when cut
    (embedded:smollm2 with 8 keep_layers -> smollm2-L8). `run` names folders with it and `report`
    names run folders' students with it, so both say the same."""
    if student.get("name"):
        return _folder_safe(student["name"])
    base = re.split(r"[/:]", str(student["model"]).rstrip("/"))[-1]
    layers = student.get("keep_layers") and len(student["keep_layers"])
    over = student.get("config_overrides") or {}
    layers = layers or over.get("num_hidden_layers") or over.get("num_layers") or over.get("n_layer")
    return _folder_safe(f"{base}-L{layers}" if layers else base)
