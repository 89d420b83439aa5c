"""Natural language inference: e-SNLI and ANLI (round 1). Three labels, premise + hypothesis input.

Official records are JSON lines {"premise", "hypothesis", "label": 0|1|2, ...explanations}, with
0 = entailment, 1 = neutral, 2 = contradiction; label names are accepted too.

The student sees "Premise: {premise}\\nHypothesis: {hypothesis}". Teacher completions give the
rationale first and the label after "Answer: " (e-SNLI) or "So the answer is" (ANLI), then often run
on into the next few-shot exemplar, which starts with "Premise:"; the text is cut there.

Label normalisation: case, surrounding whitespace, quotes and punctuation are ignored, and the verb
and adjective forms ("entails", "contradicts", "contradictory") map to their label. "yes"/"no" are
NOT mapped: whether "yes" means entailment depends on how the prompt phrased its question, so such
completions are reported as parse errors rather than guessed.
"""

from __future__ import annotations

import re
from typing import Any

from stepdistill.schema import Example
from stepdistill.tasks.base import Parsed, RecordError, Task, record_id, require, split_at_answer

LABELS = ("entailment", "neutral", "contradiction")
_VARIANTS = {
    "entailment": "entailment",
    "entail": "entailment",
    "entails": "entailment",
    "entailed": "entailment",
    "neutral": "neutral",
    "contradiction": "contradiction",
    "contradict": "contradiction",
    "contradicts": "contradiction",
    "contradictory": "contradiction",
}
_WORD = re.compile(r"[a-z]+")
_NEGATIONS = {"not", "no", "neither", "nor", "isn", "doesn"}
NEXT_EXEMPLAR = "Premise:"


def normalize_label(text: str) -> str | None:
    """Map a free-text NLI answer to one of LABELS, or None when it does not name exactly one.

    "Contradiction." and "the hypothesis is neutral" are accepted; "neutral or contradiction" and
    "not entailment" (a negation flips the meaning) are not.
    """
    words = _WORD.findall(text.lower()[:500])
    found = {_VARIANTS[w] for w in words if w in _VARIANTS}
    if len(found) != 1 or _NEGATIONS.intersection(words):
        return None
    return found.pop()


class NLITask(Task):
    """Shared behaviour of e-SNLI and ANLI; subclasses set `name` and `answer_phrase`."""

    labels = LABELS

    def example_from_record(self, record: dict[str, Any], index: int) -> Example:
        premise = require(record, "premise")
        hypothesis = require(record, "hypothesis")
        gold = record.get("label")
        if gold is not None:
            gold = self._gold_label(gold)
        fields = {"premise": premise, "hypothesis": hypothesis}
        return Example(id=record_id(record, self.name, index), fields=fields, gold=gold)

    def _gold_label(self, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(LABELS):
            return LABELS[value]
        if isinstance(value, str) and value.strip().lower() in LABELS:
            return value.strip().lower()
        raise RecordError("label", f"expected 0, 1, 2 or one of {', '.join(LABELS)}; got {value!r}"[:200])

    def format_input(self, fields: dict[str, Any]) -> str:
        return f"Premise: {fields['premise']}\nHypothesis: {fields['hypothesis']}"

    def parse_completion(self, text: str) -> Parsed:
        split = split_at_answer(text, NEXT_EXEMPLAR, self.answer_phrase)
        if split is None:
            return Parsed(None, None, f"no '{self.answer_phrase}'")
        rationale, after = split
        answer = after.strip().split("\n", 1)[0]
        label = normalize_label(answer)
        if label is None:
            return Parsed(rationale, None, f"answer {answer[:80]!r} is not one of {', '.join(LABELS)}")
        return Parsed(rationale, label)

    def normalize(self, answer: str) -> str:
        label = normalize_label(answer)
        return label if label is not None else answer.strip().lower()


class ESNLITask(NLITask):
    name = "esnli"
    answer_phrase = "Answer:"


class ANLITask(NLITask):
    name = "anli"
    answer_phrase = "So the answer is"
