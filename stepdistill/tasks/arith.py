"""The shipped demo task: short arithmetic word problems answered with an equation.

    {"question": "Anne has 4 apples and gives Peter 2 and Thomas 1. How many apples has she left?",
     "answer": "4 - 2 - 1"}

The gold label is an equation (or a bare number); answers are scored by numeric value with the safe
evaluator of arith_eval.py, so "4 - 2 - 1", "(4 - 3)" and "1" are all correct above. Teacher
completions end "... The answer is 4 - 2 - 1." or "... The answer is (4 - 2 - 1)." or "... is 1."
"""

from __future__ import annotations

import re
from typing import Any

from stepdistill.schema import Example
from stepdistill.tasks.arith_eval import same_value, try_evaluate
from stepdistill.tasks.base import Parsed, RecordError, Task, record_id, require, split_at_answer

# Runs of arithmetic characters: digits, operators, parentheses, points and spaces. A plain character
# class keeps matching linear on adversarial input (no nested quantifiers to backtrack over).
_EXPR = re.compile(r"[-+*/().\d\s]+", re.ASCII)
# Teacher answers are one short line; longer text is cut before searching.
MAX_ANSWER_CHARS = 2000
# Thousands separators ("1,000") are the one non-arithmetic character worth accepting.
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)", re.ASCII)
GOLD_FIELDS = ("answer", "label")


def extract_expression(text: str) -> str | None:
    """The first arithmetic expression in `text` ("is $4 - 2." -> "4 - 2"), or None.

    Only evaluable candidates count: "4 - 2 - 1 = 1" gives "4 - 2 - 1" (the first run), while a
    run such as "(4" that does not evaluate is skipped in favour of a later one.
    """
    line = _THOUSANDS.sub("", text.strip()[:MAX_ANSWER_CHARS].split("\n", 1)[0])
    for m in _EXPR.finditer(line):
        candidate = m.group(0).strip().rstrip(".").strip()
        if any(ch.isdigit() for ch in candidate) and try_evaluate(candidate) is not None:
            return candidate
    return None


class ArithTask(Task):
    name = "arith"
    labels = None
    answer_phrase = "The answer is"

    def example_from_record(self, record: dict[str, Any], index: int) -> Example:
        question = require(record, "question")
        gold = next((record[k] for k in GOLD_FIELDS if record.get(k) is not None), None)
        if gold is not None:
            if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
                raise RecordError("answer", f"expected an equation or number, got {type(gold).__name__}")
            gold = str(gold)
        return Example(id=record_id(record, self.name, index), fields={"question": question}, gold=gold)

    def format_input(self, fields: dict[str, Any]) -> str:
        return fields["question"]

    def parse_completion(self, text: str) -> Parsed:
        split = split_at_answer(text, "Q:", self.answer_phrase)
        if split is None:
            return Parsed(None, None, f"no '{self.answer_phrase}'")
        rationale, after = split
        label = extract_expression(after)
        if label is None:
            return Parsed(rationale, None, "no arithmetic expression after the answer phrase")
        return Parsed(rationale, label)

    def normalize(self, answer: str) -> str:
        return " ".join(answer.split())

    def is_correct(self, pred: str | None, gold: str | None) -> bool:
        return same_value(try_evaluate(pred), try_evaluate(gold))
