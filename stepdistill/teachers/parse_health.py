"""Parse health: stop an annotation run early when the teacher's answers do not parse.

A teacher prompted without exemplars, or with an answer phrase it does not use, answers every
example in a form the task's parser rejects; the run would pay for all of them and train on none.
`ParseHealth` watches the first `annotate.parse_check` answers of a run (cached ones first) and
raises ParseHealthError when more than `annotate.max_parse_failure_share` of them fail to parse,
showing three raw completions and the phrase the parser looks for. Answers already received stay in
the cache.
"""

from __future__ import annotations

from stepdistill.errors import TeacherError
from stepdistill.tasks.base import Task
from stepdistill.teachers.config import AnnotateConfig


class ParseHealthError(TeacherError):
    """Too many of the first teacher answers did not parse."""


def expected_form(task: Task) -> str:
    """What the parser looks for, in words: the answer phrase (and label set), or the user's regex."""
    pattern = getattr(task, "answer_pattern_text", None)
    if pattern:
        return f"a match of task.answer_pattern {pattern!r}"
    labels = f" (one of: {', '.join(task.labels)})" if task.labels else ""
    return f"'{task.answer_phrase.strip()} <answer>'{labels}"


class ParseHealth:
    """Feed answers with add(); raises ParseHealthError once the first `first` are in and too many failed."""

    def __init__(self, task: Task, cfg: AnnotateConfig, split: str, exemplars: str | None):
        self.task, self.split, self.exemplars = task, split, exemplars
        self.first, self.max_share = cfg.parse_check, cfg.max_parse_failure_share
        self.seen = 0
        self.failed: list[str] = []
        self.done = False

    def add(self, text: str | None) -> None:
        if self.done:
            return
        self.seen += 1
        if not self.task.parse_completion(text or "").ok:
            self.failed.append(text or "")
        if self.seen >= self.first:
            self.finish()

    def finish(self) -> None:
        """Judge the answers seen so far (the split may have fewer than `first`)."""
        if self.done or not self.seen:
            return
        self.done = True
        if len(self.failed) / self.seen > self.max_share:
            raise ParseHealthError(self.message())

    def message(self) -> str:
        n, bad = self.seen, len(self.failed)
        lines = [
            f"the teacher's answers do not parse: {bad} of the first {n} completions (split "
            f"'{self.split}'; {100 * bad / n:.0f}%, more than the "
            f"{100 * self.max_share:.0f}% allowed by annotate.max_parse_failure_share) lack "
            f"{expected_form(self.task)}. Three of them:"
        ]
        for i, text in enumerate(self.failed[:3], start=1):
            shown = " ".join(text.split())
            lines.append(f"  {i}. {shown[:200]!r}" + (" ..." if len(shown) > 200 else ""))
        fix = (
            f"check that the exemplars in {self.exemplars} end in that phrase"
            if self.exemplars
            else "give the teacher a few worked exemplars whose answers end in that phrase "
            "(teacher.exemplars: a JSON file, see README 'Your own task')"
        )
        lines.append(
            f"Fix: {fix}, or set task.answer_phrase / task.answer_pattern to what the teacher writes. "
            "The answers received are kept in the cache; --annotate.max_parse_failure_share 1 goes on anyway."
        )
        return "\n".join(lines)
