"""A task declared in YAML: the user's own records, an input template, a label field, a metric.

    # my_task.yaml
    input_template: "Review: {text}\\nIs this review positive or negative?"
    label_field: sentiment
    id_field: review_id          # optional
    labels: [positive, negative] # optional closed set
    answer_phrase: So the answer is
    metric: normalized           # exact | normalized | numeric

Teacher completions are cut at `exemplar_marker` (default "Q:"); the label is the `label` group of
`answer_pattern` (default: the rest of the line after `answer_phrase`, the phrase matched in any
case), the rationale the text before the match. Metrics: exact string match; normalized ignores
case, punctuation and spacing; numeric compares values of numbers or arithmetic expressions (safe
evaluator, never eval()).
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any

from stepdistill.errors import ConfigError
from stepdistill.schema import Example
from stepdistill.tasks.arith_eval import same_value, try_evaluate
from stepdistill.tasks.base import Parsed, RecordError, Task, cut_at, record_id, require

DEFAULT_PHRASE = "So the answer is"
DEFAULT_MARKER = "Q:"
METRICS = ("exact", "normalized", "numeric")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)", re.ASCII)
MAX_SEARCH_CHARS = 20000  # teacher completions longer than this are garbage; keeps regexes fast


def template_fields(template: str) -> list[str]:
    """The {field} names in an input template; attribute access, indexing and formats are refused."""
    names: list[str] = []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ConfigError(f"task.input_template: {err} in {template!r}") from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not _NAME.match(name) or spec or conversion:
            raise ConfigError(f"task.input_template: placeholder {{{name}}} must be a plain field name")
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError("task.input_template: needs at least one {field} placeholder")
    return names


def normalize_text(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: "  The Cat!" -> "the cat"."""
    kept = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return " ".join(kept.split())


class GenericTask(Task):
    """A task built from a validated spec; see the module docstring for the keys."""

    name = "generic"

    def __init__(
        self,
        input_template: str | None = None,
        label_field: str | None = None,
        id_field: str | None = None,
        labels: list[str] | None = None,
        answer_pattern: str | None = None,
        answer_phrase: str | None = None,
        exemplar_marker: str | None = None,
        metric: str = "exact",
    ):
        if not input_template:
            raise ConfigError("task.input_template: required for a generic task")
        if not label_field:
            raise ConfigError("task.label_field: required for a generic task")
        if metric not in METRICS:
            raise ConfigError(f"task.metric: '{metric}' is not one of {', '.join(METRICS)}")
        if labels is not None and (not labels or not all(isinstance(x, str) and x.strip() for x in labels)):
            raise ConfigError("task.labels: must be a non-empty list of non-empty strings")
        self.input_template = input_template
        self.input_fields = template_fields(input_template)
        self.label_field, self.id_field, self.metric = label_field, id_field, metric
        self.labels = tuple(labels) if labels else None
        self.answer_phrase = answer_phrase or DEFAULT_PHRASE
        self.exemplar_marker = exemplar_marker or DEFAULT_MARKER
        self.pattern = self._compile(answer_pattern)
        self.answer_pattern_text = answer_pattern  # shown in parse-health messages

    def _compile(self, answer_pattern: str | None) -> re.Pattern[str]:
        if answer_pattern is None:
            # The phrase in any case and spacing: "so the answer is positive" is the phrase too.
            words = r"\s+".join(re.escape(w) for w in self.answer_phrase.split())
            return re.compile(words + r"[ \t]*(?P<label>[^\n]*)", re.IGNORECASE)
        try:
            pattern = re.compile(answer_pattern)
        except re.error as err:
            raise ConfigError(f"task.answer_pattern: not a valid regex ({err})") from None
        if "label" not in pattern.groupindex:
            raise ConfigError("task.answer_pattern: needs a named group (?P<label>...)")
        return pattern

    def _closed_label(self, text: str) -> str | None:
        """The member of `labels` that `text` names (case and punctuation ignored), else None."""
        key = normalize_text(text)
        return next((lab for lab in self.labels or () if normalize_text(lab) == key), None)

    def example_from_record(self, record: dict[str, Any], index: int) -> Example:
        fields = {name: require(record, name, (str, int, float)) for name in self.input_fields}
        gold = record.get(self.label_field)
        if gold is not None and not (isinstance(gold, str) and not gold.strip()):
            if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
                raise RecordError(self.label_field, f"expected a string or number, got {type(gold).__name__}")
            gold = str(gold).strip()
            if self.labels is not None:
                closed = self._closed_label(gold)
                if closed is None:
                    raise RecordError(self.label_field, f"'{gold}' is not one of {', '.join(self.labels)}")
                gold = closed
        else:
            gold = None
        ex_id = record_id(record, self.name, index, key=self.id_field or "id")
        return Example(id=ex_id, fields=fields, gold=gold)

    def format_input(self, fields: dict[str, Any]) -> str:
        out = []
        for literal, name, _, _ in string.Formatter().parse(self.input_template):
            out.append(literal)
            if name is not None:
                out.append(str(fields[name]))
        return "".join(out)

    def parse_completion(self, text: str) -> Parsed:
        body = cut_at((text or "")[:MAX_SEARCH_CHARS], self.exemplar_marker)
        m = self.pattern.search(body)
        if m is None:
            return Parsed(None, None, "answer pattern not found")
        rationale = body[: m.start()].rstrip()
        label = (m.group("label") or "").strip()
        if label.endswith("."):
            label = label[:-1].rstrip()
        if not label:
            return Parsed(rationale, None, "empty answer")
        if self.labels is not None:
            closed = self._closed_label(label)
            if closed is None:
                return Parsed(
                    rationale, None, f"answer {label[:80]!r} is not one of {', '.join(self.labels)}"
                )
            label = closed
        return Parsed(rationale, label)

    def normalize(self, answer: str) -> str:
        return normalize_text(answer) if self.metric == "normalized" else answer.strip()

    def is_correct(self, pred: str | None, gold: str | None) -> bool:
        if pred is None or gold is None:
            return False
        if self.metric == "numeric":
            value = try_evaluate(_THOUSANDS.sub("", pred).strip().lstrip("$"))
            return same_value(value, try_evaluate(_THOUSANDS.sub("", gold).strip().lstrip("$")))
        return self.normalize(pred) == self.normalize(gold)
