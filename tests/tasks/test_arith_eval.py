"""The safe arithmetic evaluator: exact values, precedence, and refusal of anything that is not arithmetic."""

from __future__ import annotations

import pytest

from stepdistill.tasks.arith_eval import ArithError, evaluate, same_value, try_evaluate


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("( 84.0 / 2.0 )", 42.0),
        ("( 10.0 - ( 6.0 + 3.0 ) )", 1.0),
        ("4 - 2 - 1", 1.0),  # left associative
        ("2 + 3 * 4", 14.0),  # precedence
        ("(2 + 3) * 4", 20.0),
        ("8 / 4 / 2", 1.0),
        ("-3 + 5", 2.0),
        ("-(2 - 7)", 5.0),
        ("--4", 4.0),
        ("3 * -2", -6.0),
        ("+.5", 0.5),
        ("1.5e2", 150.0),
        ("7.", 7.0),
        ("  12  ", 12.0),
    ],
)
def test_evaluate_values(text, value):
    assert evaluate(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "__import__('os')",
        "os.system('ls')",
        "2 ** 10",  # no power operator: huge exponents are impossible
        "9 ** 9 ** 9",
        "1e999",  # overflows to inf
        "1e999 * 0",
        "1 / 0",
        "5 / (3 - 3)",
        "23 + x",
        "some - 551",
        "7x = 14",
        "(95 * 118) + (11,210 / 84)",
        "((491 - 21",
        "(1 + 2))",
        "1 +",
        "* 3",
        "()",
        "2 3",
        "١٢",  # non-ASCII digits are not numbers here
        "(29/2) and (30/2)",
    ],
)
def test_evaluate_refuses(text):
    with pytest.raises(ArithError):
        evaluate(text)
    assert try_evaluate(text) is None


def test_long_and_deep_inputs_are_refused_quickly():
    assert try_evaluate("1+" * 400 + "1") == 401.0  # long but within bounds
    assert try_evaluate("1+" * 1000 + "1") is None  # over the length bound
    assert try_evaluate("(" * 100 + "1" + ")" * 100) is None  # too deep for the recursion bound
    assert try_evaluate("-" * 200 + "1") is None
    assert try_evaluate("(" * 10 + "1" + ")" * 10) == 1.0


def test_same_value_tolerance():
    assert same_value(evaluate("10 / 3 * 3"), 10.0)
    assert not same_value(3.33, evaluate("10 / 3"))
    assert same_value(1e9, 1e9 + 0.5)  # relative tolerance for large values
    assert not same_value(None, None)
    assert not same_value(1.0, None)
