"""Per-task behaviour: record conversion, input format, parsing edge cases, scoring."""

from __future__ import annotations

import pytest

from stepdistill.tasks import BUILTIN, get_task
from stepdistill.tasks.arith import ArithTask, extract_expression
from stepdistill.tasks.base import RecordError
from stepdistill.tasks.config import TaskConfig
from stepdistill.tasks.cqa import CQATask
from stepdistill.tasks.nli import ANLITask, ESNLITask, normalize_label
from stepdistill.tasks.svamp import SVAMPTask

ADVERSARIAL = [
    "",
    "   \n\n ",
    "So the answer is",
    "The answer is",
    "Answer:",
    "So the answer is (",
    "The answer is ((((((((((((((((",
    "So the answer is So the answer is So the answer is",
    "The answer is The answer is (1 + 1) The answer is (2)",
    "Q: So the answer is (a) bank",
    "Premise: x Answer: entailment",
    "答案是 (a) 银行 😀 So the answer is (ä) ünïcödé.",
    "\x00\x01\x02 The answer is (\x00)",
    "x" * 200_000 + " So the answer is (a) " + "y" * 200_000,
    "(" * 100_000 + "The answer is " + "(" * 100_000,
    "The answer is " + " " * 100_000 + "x",
]


@pytest.mark.parametrize("name", sorted(BUILTIN))
@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_parsers_never_raise(name, text):
    p = BUILTIN[name]().parse_completion(text)
    assert p.ok == (p.label is not None)
    if p.ok:
        assert p.label.strip() and p.rationale is not None
    else:
        assert p.error


def test_multiple_phrases_take_the_first():
    p = SVAMPTask().parse_completion("A. The answer is (1 + 1). B. The answer is (3).")
    assert (p.rationale, p.label) == ("A.", "(1 + 1)")
    p = CQATask().parse_completion("A. So the answer is (a) cat. So the answer is (b) dog.")
    assert (p.rationale, p.label) == ("A.", "cat")


def test_cqa_record_and_input():
    rec = {"id": "q1", "question": "Where?", "choices": ["a1", "b1", "c1", "d1", "e1"], "answer": "c1"}
    ex = CQATask().example_from_record(rec, 3)
    assert (ex.id, ex.gold) == ("q1", "c1")
    assert (
        CQATask().format_input(ex.fields) == "Where?\nAnswer Choices:\n(a) a1\n(b) b1\n(c) c1\n(d) d1\n(e) e1"
    )
    assert CQATask().example_from_record({**rec, "id": None}, 3).id == "cqa-3"
    with pytest.raises(RecordError) as err:
        CQATask().example_from_record({**rec, "choices": ["a", "b"]}, 0)
    assert err.value.field == "choices"
    with pytest.raises(RecordError) as err:
        CQATask().example_from_record({"choices": rec["choices"]}, 0)
    assert err.value.field == "question"
    assert CQATask().is_correct(" bank ", "bank") and not CQATask().is_correct("Bank", "bank")


def test_svamp_parse_and_score():
    t = SVAMPTask()
    p = t.parse_completion("10 * 45 is 450. The answer is (10 * 45).\n\nQ: next The answer is (1)")
    assert (p.rationale, p.label) == ("10 * 45 is 450.", "(10 * 45)")
    assert t.is_correct("(10 * 45)", "( 10.0 * 45.0 )")
    assert t.is_correct("(450)", "( 10.0 * 45.0 )")
    assert not t.is_correct("(23 + x)", "( 23.0 + 1.0 )")
    assert not t.is_correct("(1 / 0)", "( 1.0 / 0.0 )")  # undefined on both sides is not a match
    assert not t.is_correct(None, "(1)")
    assert (
        t.parse_completion("The answer is 450.").error == "no parenthesised equation after the answer phrase"
    )
    ex = t.example_from_record({"input": "Body\nQuestion", "label": "( 1.0 + 2.0 )"}, 7)
    assert (ex.id, ex.fields, t.format_input(ex.fields)) == (
        "svamp-7",
        {"input": "Body\nQuestion"},
        "Body\nQuestion",
    )


@pytest.mark.parametrize(
    ("after", "expr"),
    [
        (" 4 - 2 - 1.", "4 - 2 - 1"),
        (" (4 - 2 - 1).", "(4 - 2 - 1)"),
        (" 1 apple.", "1"),
        (" $4.50.", "4.50"),
        (" 4 - 2 - 1 = 1.", "4 - 2 - 1"),
        (" 1,000 - 1 dollars", "1000 - 1"),
        (" (3 and 4)", None),  # neither "(3" nor "4)" is an expression: ambiguous, not guessed
        (" ((2 + 5)", None),
        (" none", None),
        ("\n 5\n 6", "5"),  # the first non-blank line only
    ],
)
def test_extract_expression(after, expr):
    assert extract_expression(after) == expr


def test_arith_task():
    t = ArithTask()
    q = "Anne has 4 apples and gives Peter 2 and Thomas 1. How many apples has she left?"
    ex = t.example_from_record({"question": q, "answer": "4 - 2 - 1"}, 0)
    assert (ex.id, ex.gold, t.format_input(ex.fields)) == ("arith-0", "4 - 2 - 1", q)
    assert t.example_from_record({"question": q, "answer": 1}, 1).gold == "1"
    p = t.parse_completion("She gives away 2 + 1 = 3. 4 - 3 = 1. The answer is 4 - 2 - 1.\n\nQ: Bob ...")
    assert (p.rationale, p.label) == ("She gives away 2 + 1 = 3. 4 - 3 = 1.", "4 - 2 - 1")
    assert t.is_correct(p.label, ex.gold) and t.is_correct("1", ex.gold) and t.is_correct("(4 - 3)", "1")
    assert not t.is_correct("4 - 2", ex.gold) and not t.is_correct("__import__('os')", ex.gold)


ESNLI_COMPLETION = (
    "A man playing a guitar on stage is performing, so the hypothesis follows.\n"
    "Answer: entailment\n\n"
    "Premise: A dog runs.\nHypothesis: A cat sleeps.\n"
    "A dog is not a cat.\nAnswer: contradiction"
)
ANLI_COMPLETION = (
    "The premise says nothing about the weather. So the answer is neutral.\n\n"
    "Premise: It rained.\nHypothesis: It was dry.\nSo the answer is contradiction."
)


def test_nli_official_style_completions():
    p = ESNLITask().parse_completion(ESNLI_COMPLETION)
    assert p.label == "entailment"
    assert p.rationale == "A man playing a guitar on stage is performing, so the hypothesis follows."
    p = ANLITask().parse_completion(ANLI_COMPLETION)
    assert (p.label, p.rationale) == ("neutral", "The premise says nothing about the weather.")
    assert (
        ESNLITask().parse_completion("No answer here.\n\nPremise: x Answer: neutral").error == "no 'Answer:'"
    )
    p = ANLITask().parse_completion("R. So the answer is yes.")
    assert p.label is None and "not one of" in p.error


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Entailment.", "entailment"),
        (" CONTRADICTION ", "contradiction"),
        ('"neutral"', "neutral"),
        ("the hypothesis contradicts the premise", "contradiction"),
        ("contradictory", "contradiction"),
        ("neutral or contradiction", None),
        ("not entailment", None),
        ("yes", None),
        ("", None),
    ],
)
def test_nli_normalize_label(text, label):
    assert normalize_label(text) == label


def test_nli_records():
    t = ESNLITask()
    ex = t.example_from_record({"premise": "P.", "hypothesis": "H.", "label": 2}, 4)
    assert (ex.id, ex.gold, t.format_input(ex.fields)) == (
        "esnli-4",
        "contradiction",
        "Premise: P.\nHypothesis: H.",
    )
    assert t.example_from_record({"premise": "P", "hypothesis": "H", "label": "Neutral"}, 0).gold == "neutral"
    for bad in (3, -1, True, "maybe"):
        with pytest.raises(RecordError) as err:
            t.example_from_record({"premise": "P", "hypothesis": "H", "label": bad}, 0)
        assert err.value.field == "label"
    assert t.is_correct("Entailment.", "entailment") and not t.is_correct("neutral", "entailment")
    assert ANLITask().answer_phrase == "So the answer is" and ESNLITask().answer_phrase == "Answer:"


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_registry_builds_every_builtin(name):
    task = get_task(TaskConfig(name=name))
    assert task.name == name and task.answer_phrase and task.format_target(" x ") == "x"
