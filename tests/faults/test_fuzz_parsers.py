"""Property-based fuzzing (hypothesis) of every task's completion parser and of the arithmetic
evaluator: teacher and student output is untrusted text, so any string must give a `Parsed` (or, for
the evaluator, a number or ArithError) and never another exception.

The time bound per input is generous (5 s where a normal input takes well under a millisecond): it
catches catastrophic regex backtracking or runaway recursion, not slowness from a loaded machine.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepdistill.config import TaskConfig
from stepdistill.tasks import get_task
from stepdistill.tasks.arith_eval import MAX_CHARS, ArithError, evaluate, try_evaluate
from stepdistill.tasks.base import Parsed

BOUND = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    derandomize=True,  # the same inputs on every run: a failure reproduces
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow],
)

GENERIC = {
    "name": "generic",
    "input_template": "{text}",
    "label_field": "label",
    "labels": ["positive", "negative"],
    "answer_pattern": r"answer is\s*(?P<label>\w+)",
}
TASKS = [{"name": n} for n in ("cqa", "svamp", "esnli", "anli", "arith")] + [
    GENERIC,
    {"name": "generic", "input_template": "{text}", "label_field": "label", "metric": "numeric"},
]

# Pieces a teacher completion is made of, glued together in any order: answer phrases, exemplar
# markers, choice letters, equations, brackets, long runs and control characters.
PIECES = st.sampled_from(
    [
        "So the answer is", "The answer is", "Answer:", "Q:", "Premise:", "(a)", "(e)", "(",
        ")", "( 84.0 / 2.0 )", "1e999", "-", "/ 0", "entailment", "contradicts", "positive",
        ".", "\n", "\x00", "\u202e", "((((((((((", "9" * 400, " " * 50, "answer is", "<script>",
    ]
)  # fmt: skip
COMPLETIONS = st.one_of(
    st.text(max_size=400),
    st.lists(st.one_of(PIECES, st.text(max_size=20)), max_size=40).map("".join),
)


@pytest.mark.parametrize("spec", TASKS, ids=lambda s: s.get("metric", s["name"]))
def test_every_parser_returns_parsed_for_any_text(spec):
    task = get_task(TaskConfig(**spec))

    @BOUND
    @given(COMPLETIONS)
    def check(text):
        parsed = task.parse_completion(text)
        assert isinstance(parsed, Parsed)
        # a parse either names its label or says why it has none
        assert (parsed.label is not None) or parsed.error
        if parsed.label is not None:
            task.is_correct(parsed.label, parsed.label)  # scoring the parsed label does not raise

    check()


@pytest.mark.parametrize("spec", TASKS, ids=lambda s: s.get("metric", s["name"]))
def test_parsers_survive_huge_adversarial_completions(spec):
    task = get_task(TaskConfig(**spec))
    phrase = task.answer_phrase
    for text in (
        f"{phrase} " + "(" * 100_000,
        f"{phrase} " + "1 + " * 50_000 + "1",
        ("x " * 200_000) + phrase + " positive",
        (phrase + " ") * 20_000,
    ):
        assert isinstance(task.parse_completion(text), Parsed)


EXPRESSIONS = st.recursive(
    st.one_of(
        st.integers(-(10**30), 10**30).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(["1e999", ".5", "0", "1e-400", "007"]),
    ),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", " / ", "**"]), inner).map("".join),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"-{e}"),
    ),
    max_leaves=60,
)


@BOUND
@given(st.one_of(EXPRESSIONS, st.text(alphabet="0123456789+-*/(). eE", max_size=2 * MAX_CHARS), st.text()))
def test_arith_evaluator_returns_a_finite_number_or_its_documented_error(text):
    try:
        value = evaluate(text)
    except ArithError:
        assert try_evaluate(text) is None
    else:
        assert value == value and abs(value) != float("inf")  # finite, never NaN
        assert try_evaluate(text) == value


def test_arith_evaluator_bounds_nesting_and_length():
    with pytest.raises(ArithError, match="nested deeper"):
        evaluate("-" * 500 + "1")
    with pytest.raises(ArithError, match="nested deeper"):
        evaluate("(" * 300 + "1" + ")" * 300)
    with pytest.raises(ArithError, match="longer than"):
        evaluate("1+" * MAX_CHARS + "1")
    assert evaluate("(" * 60 + "2" + ")" * 60) == 2.0
