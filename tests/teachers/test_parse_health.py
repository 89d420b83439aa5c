"""Parse health: the first answers of a run are judged before the rest is paid for; the generic
task's answer phrase matches in any case."""

from __future__ import annotations

import pytest


def test_parse_health_stops_early_with_three_raw_completions(tmp_path):
    """Zero-shot, the teacher writes "The answer is positive" where the task expects "So the answer
    is": the run stops after the first 10 answers instead of paying for all 30, writes no JSONL, and
    keeps what it received in the cache."""
    from collections.abc import AsyncIterator, Sequence

    from stepdistill.annotate import annotate
    from stepdistill.schema import Annotation
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig
    from stepdistill.teachers.base import Completion, Job, Sampling, Teacher
    from stepdistill.teachers.cache import ResponseCache
    from stepdistill.teachers.config import AnnotateConfig, TeacherConfig
    from stepdistill.teachers.parse_health import ParseHealthError

    class Sequential(Teacher):
        identity = "openai_http:m"

        def __init__(self):
            self.sent = 0

        async def stream(
            self, jobs: Sequence[Job], sampling: Sampling
        ) -> AsyncIterator[tuple[Job, Completion]]:
            for i, job in enumerate(jobs):
                self.sent += 1
                text = "So the answer is positive." if i % 5 == 0 else f"Review {i}. The answer is positive."
                yield job, Completion(text, 10, 5)

    task = get_task(TaskConfig(name="generic", input_template="Review: {text}", label_field="y"))
    rows = [Annotation(id=f"r{i}", fields={"text": f"text {i}"}, gold="positive") for i in range(30)]
    teacher = Sequential()
    tcfg = TeacherConfig(backend="openai_http", model="m")
    with pytest.raises(ParseHealthError) as err:
        annotate(
            task,
            rows,
            tcfg,
            AnnotateConfig(progress=False),
            tmp_path / "c.sqlite",
            tmp_path / "o.jsonl",
            teacher=teacher,
        )
    assert teacher.sent == 10 and not (tmp_path / "o.jsonl").exists()
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert len(cache) == 10
    assert str(err.value).splitlines() == [
        "the teacher's answers do not parse: 8 of the first 10 completions (split 'train'; 80%, more than "
        "the 20% allowed by annotate.max_parse_failure_share) lack 'So the answer is <answer>'. Three of them:",
        "  1. 'Review 1. The answer is positive.'",
        "  2. 'Review 2. The answer is positive.'",
        "  3. 'Review 3. The answer is positive.'",
        "Fix: give the teacher a few worked exemplars whose answers end in that phrase (teacher.exemplars: a "
        "JSON file, see README 'Your own task'), or set task.answer_phrase / task.answer_pattern to what the "
        "teacher writes. The answers received are kept in the cache; --annotate.max_parse_failure_share 1 "
        "goes on anyway.",
    ]
    # A re-run judges the cached answers first and stops again before sending anything.
    again = Sequential()
    with pytest.raises(ParseHealthError):
        annotate(
            task,
            rows,
            tcfg,
            AnnotateConfig(progress=False),
            tmp_path / "c.sqlite",
            tmp_path / "o.jsonl",
            teacher=again,
        )
    assert again.sent == 0
    # Under the threshold (here: allowed up to 100%) the run goes on and counts the failures.
    acfg = AnnotateConfig(progress=False, max_parse_failure_share=1.0)
    _, summary = annotate(
        task, rows, tcfg, acfg, tmp_path / "c.sqlite", tmp_path / "o.jsonl", teacher=Sequential()
    )
    assert (summary["cache_hits"], summary["requests"], summary["parse_failures"]) == (10, 20, 24)


def test_generic_answer_phrase_matches_in_any_case():
    from stepdistill.tasks import get_task
    from stepdistill.tasks.config import TaskConfig

    task = get_task(
        TaskConfig(name="generic", input_template="{t}", label_field="y", labels=["positive", "negative"])
    )
    for text in (
        "Nice. so the answer is positive.",
        "Nice. SO THE ANSWER IS Positive",
        "Nice. So  the\\tanswer is positive",
    ):
        parsed = task.parse_completion(text.replace("\\t", "\t"))
        assert (parsed.rationale, parsed.label, parsed.error) == ("Nice.", "positive", None)
    assert task.parse_completion("The answer is positive.").error == "answer pattern not found"
