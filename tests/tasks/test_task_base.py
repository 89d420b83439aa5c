"""split_at_answer: the completion splitting the CoT task parsers share."""

from __future__ import annotations

from stepdistill.tasks.base import split_at_answer


def test_first_phrase_splits_and_the_next_exemplar_is_cut_off():
    text = "Two and two make four.  The answer is (4). The answer is (5).\n\nQ: next question"
    assert split_at_answer(text, "Q:", "The answer is") == ("Two and two make four.", " (4). ")


def test_missing_phrase_or_phrase_only_in_the_next_exemplar_gives_none():
    assert split_at_answer("no answer here", "Q:", "The answer is") is None
    assert split_at_answer("thinking\nQ: x The answer is (1)", "Q:", "The answer is") is None
    assert split_at_answer(None, "Q:", "The answer is") is None
