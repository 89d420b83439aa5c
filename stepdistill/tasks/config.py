"""Task section of the config: which task family, and for `generic` how to read the user's data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

# The keys a `generic` task spec (YAML file named by `spec`, or written inline) may set.
GENERIC_KEYS = (
    "input_template",
    "label_field",
    "id_field",
    "labels",
    "answer_pattern",
    "answer_phrase",
    "exemplar_marker",
    "metric",
)


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # cqa, svamp, esnli, anli (the paper's four), arith (the shipped demo task), generic (YAML-declared)
    name: Literal["cqa", "svamp", "esnli", "anli", "arith", "generic"]
    # The task's own name in reports and messages; default: the spec file's stem, else `name`.
    title: str | None = None
    # generic only: path to a task YAML (see README "Your own task"), or the same keys inline below;
    # keys written inline win over the file's.
    spec: str | None = None
    input_template: str | None = None  # e.g. "Review: {text}"; {field} placeholders name record fields
    label_field: str | None = None  # record field holding the gold label
    id_field: str | None = None  # record field holding a unique id; default "generic-<row index>"
    labels: list[str] | None = None  # closed label set; teacher answers outside it are parse errors
    # Regex with a named group `label`, searched in teacher completions; the rationale is the text
    # before the match. Default: the first line after `answer_phrase`.
    answer_pattern: str | None = None
    answer_phrase: str | None = None  # default "So the answer is"; also used by the few-shot prompts
    # Completions run on into the next few-shot exemplar; they are cut at this marker (default "Q:").
    exemplar_marker: str | None = None
    metric: Literal["exact", "normalized", "numeric"] | None = None  # generic: default "exact"
