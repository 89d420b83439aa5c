"""SVAMP arithmetic word problems: the label is an equation such as "( 84.0 / 2.0 )".

Teacher completions end "... The answer is (10 * 45)." and may run on into the next exemplar
("\n\nQ: ..."). The label is the parenthesised text after the phrase; answers are scored by the
numeric value of the equation, computed with the safe evaluator in arith_eval.py (never eval()).
With this parsing PaLM 540B scores 148/200 on the test split; 2 completions do not parse.
"""

from __future__ import annotations

import re
from typing import Any

from stepdistill.schema import Example
from stepdistill.tasks.arith_eval import same_value, try_evaluate
from stepdistill.tasks.base import Parsed, RecordError, Task, record_id, require, split_at_answer

# Greedy within one line, as in the official parser: "(a + (b - c))" is kept whole.
_PARENS = re.compile(r"\(.*\)")
# The answer is one short line; capping the searched text keeps the greedy search fast on garbage.
MAX_ANSWER_CHARS = 2000


class SVAMPTask(Task):
    name = "svamp"
    labels = None
    answer_phrase = "The answer is"

    def example_from_record(self, record: dict[str, Any], index: int) -> Example:
        text = require(record, "input")
        gold = record.get("label")
        if gold is not None and not isinstance(gold, str):
            if isinstance(gold, (int, float)) and not isinstance(gold, bool):
                gold = str(gold)
            else:
                raise RecordError("label", f"expected an equation string, got {type(gold).__name__}")
        return Example(id=record_id(record, self.name, index), fields={"input": text}, gold=gold)

    def format_input(self, fields: dict[str, Any]) -> str:
        return fields["input"]

    def parse_completion(self, text: str) -> Parsed:
        split = split_at_answer(text, "Q:", self.answer_phrase)
        if split is None:
            return Parsed(None, None, f"no '{self.answer_phrase}'")
        rationale, after = split
        m = _PARENS.search(after[:MAX_ANSWER_CHARS])
        if m is None:
            return Parsed(rationale, None, "no parenthesised equation after the answer phrase")
        return Parsed(rationale, m.group(0))

    def normalize(self, answer: str) -> str:
        return " ".join(answer.split())

    def is_correct(self, pred: str | None, gold: str | None) -> bool:
        """Equal numeric values; an answer that does not evaluate (names, "=", garbage) is wrong."""
        return same_value(try_evaluate(pred), try_evaluate(gold))
