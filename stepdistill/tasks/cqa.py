"""CommonsenseQA with CoS-E rationales: five-way multiple choice, label = the chosen answer's text.

Teacher completions look like "... Of the above choices, only X fits. So the answer is (c) X." and
then often continue with the next few-shot exemplar ("\n\nQ: ..."). Parsing follows the official
distilling-step-by-step code, which gives PaLM 540B 943/1221 on the test split.
"""

from __future__ import annotations

import re
from typing import Any

from stepdistill.schema import Example
from stepdistill.tasks.base import Parsed, RecordError, Task, record_id, require, split_at_answer

N_CHOICES = 5
LETTERS = "abcde"
# "(x)" for any single character, as in the official parser: the label is the text after it.
_CHOICE_MARK = re.compile(r"\(.\)")


class CQATask(Task):
    name = "cqa"
    labels = None  # the label space differs per question: its five choices
    answer_phrase = "So the answer is"

    def example_from_record(self, record: dict[str, Any], index: int) -> Example:
        question = require(record, "question")
        choices = require(record, "choices", list)
        if len(choices) != N_CHOICES or not all(isinstance(c, str) for c in choices):
            raise RecordError("choices", f"expected {N_CHOICES} strings, got {choices!r}"[:200])
        gold = record.get("answer")
        if gold is not None and not isinstance(gold, str):
            raise RecordError("answer", f"expected str, got {type(gold).__name__}")
        if gold is not None and all(self.normalize(gold) != self.normalize(c) for c in choices):
            raise RecordError("answer", f"{gold!r} is not one of the choices {choices!r}"[:200])
        fields = {"question": question, "choices": list(choices)}
        return Example(id=record_id(record, self.name, index), fields=fields, gold=gold)

    def candidates(self, fields: dict[str, Any]) -> tuple[str, ...]:
        """The question's own five choices."""
        return tuple(fields["choices"])

    def format_input(self, fields: dict[str, Any]) -> str:
        lines = [fields["question"], "Answer Choices:"]
        lines += [f"({letter}) {choice}" for letter, choice in zip(LETTERS, fields["choices"])]
        return "\n".join(lines)

    def parse_completion(self, text: str) -> Parsed:
        split = split_at_answer(text, "Q:", self.answer_phrase)
        if split is None:
            return Parsed(None, None, f"no '{self.answer_phrase}'")
        rationale, after = split
        parts = _CHOICE_MARK.split(after)
        if len(parts) < 2:
            return Parsed(rationale, None, "no '(x)' choice marker after the answer phrase")
        label = parts[1].strip()
        if label.endswith("."):
            label = label[:-1]
        if not label:
            return Parsed(rationale, None, "empty answer after the choice marker")
        return Parsed(rationale, label)
