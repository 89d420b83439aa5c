"""The report's opening paragraph and its comparison and student-size sections.

The opening says in plain words what each of the paper's comparisons shows on these runs, with the
facts a reader needs to see why (how often the teacher is right, how many examples had a usable
rationale), and claims a winner only where the 95% interval of the difference excludes 0.
"""

from __future__ import annotations

from typing import Any

from stepdistill.report.collect import RunData, Training
from stepdistill.report.compare import Comparison, MatchedComparison
from stepdistill.report.curves import matched_outcome, matched_verdict
from stepdistill.report.paired import interval_text
from stepdistill.report.stats import AccuracyRow, base_method

NAMES = {
    "standard": "standard fine-tuning",
    "distill": "distillation",
    "step_by_step": "step-by-step",
    "single_task": "single-task (rationale then label)",
    "answer_first": "answer-first (label then rationale)",
    "rationale_input": "rationale-as-input",
    "teacher": "the teacher",
}


def plain(variant: str) -> str:
    return NAMES.get(base_method(variant), variant)


def p100(x: float) -> str:
    return f"{100 * x:.1f}%"


def _reading(c: Comparison) -> str:
    a, b = plain(c.a), plain(c.b)
    if c.ci.lo > 0:
        return f"{a} beats {b} on this run"
    if c.ci.hi < 0:
        return f"{b} beats {a} on this run"
    return f"the interval includes 0, so this run cannot tell {a} and {b} apart"


def _train_counts(trainings: list[Training], c: Comparison) -> tuple[int | None, int | None]:
    """(label examples, rationale examples) of the challenger's first training."""
    for t in trainings:
        if t.variant == c.a and t.student == c.student and t.fraction == c.fraction:
            train = t.metrics.get("train") or {}
            return train.get("label_examples", train.get("examples")), train.get("rationale_examples")
    return None, None


def train_teacher(runs: list[RunData]) -> dict[str, Any] | None:
    """The teacher's accuracy on the training split, from the first annotation summary that has it."""
    for run in runs:
        split = ((run.annotation or {}).get("splits") or run.annotation or {}).get("train")
        if isinstance(split, dict) and split.get("teacher_accuracy") is not None:
            return split
    return None


def _sentence(c: Comparison, trainings: list[Training], teacher_train: dict | None, many: bool) -> str:
    labels, rationales = _train_counts(trainings, c)
    n_test = c.ci.n
    who = f" ({c.student})" if many else ""
    rat = f" plus the teacher's rationales on {rationales} of them" if rationales is not None else ""
    diff = f"{interval_text(c.ci)} (95% interval, {n_test} test examples)"
    if c.setting == "gold labels":
        head = (
            f"**With gold labels**{who}, {plain(c.a)} (the same {labels} gold labels as standard "
            f"fine-tuning{rat}; only rationales whose answer matched gold are used)"
            if "filtered" in c.a
            else f"**With gold labels**{who}, {plain(c.a)} (the same {labels} gold labels{rat})"
        )
        return (
            f"{head} scored {p100(c.a_acc.mean)} against {p100(c.b_acc.mean)} for {plain(c.b)}: "
            f"{diff}; {_reading(c)}."
        )
    why = ""
    if teacher_train:
        right = teacher_train["teacher_accuracy"]
        why = (
            f" The teacher's labels are right on {p100(right)} of the training examples "
            f"({teacher_train.get('teacher_correct')} of {teacher_train.get('teacher_n')}), and both "
            "students are trained to reproduce them."
        )
    return (
        f"**Without gold labels**{who}, {plain(c.a)} (the teacher's labels{rat}) scored "
        f"{p100(c.a_acc.mean)} against {p100(c.b_acc.mean)} for {plain(c.b)}: {diff}; "
        f"{_reading(c)}.{why}"
    )


def _matched_paragraph(matched: list[MatchedComparison], full: float, many: bool) -> str | None:
    """One sentence per paper comparison at matched training compute, on the largest fraction."""
    found = [m for m in matched if m.fraction == full]
    if not found:
        return None
    parts = []
    for m in found:
        who = f" ({m.student})" if many else ""
        a, b = (plain(v) + v[len(base_method(v)) :] for v in (m.a, m.b))  # keeps "(teacher labels, ...)"
        first, *again = m.points
        text = f"{m.setting}{who}: {a} {p100(first['a'])} against {p100(first['b'])} for {b}, {interval_text(first['ci'])}"
        for p in again:  # the same pair where the side evaluated earlier is not short of compute
            text += (
                f"; at {p['budget'] / 1e12:,.1f} TFLOPs, the compute of the side evaluated earlier: "
                f"{p100(p['a'])} against {p100(p['b'])}, {interval_text(p['ci'])}"
            )
        parts.append(f"{text}; {_matched_reading(m)}")
    return (
        "**At equal training compute** (validation examples, each training at its last evaluation "
        f"within {found[0].budget / 1e12:,.1f} TFLOPs; a step-by-step step costs about twice a "
        "label-only one): " + "; ".join(parts) + "."
    )


def _matched_reading(m: MatchedComparison) -> str:
    """matched_outcome in the summary's words."""
    a, b = plain(m.a), plain(m.b)
    side, settled = matched_outcome(m.points)
    if side is None:
        return f"the interval includes 0, so this run cannot tell {a} and {b} apart"
    if settled:
        return f"{a} beats {b} on this run" if side == "a" else f"{b} beats {a} on this run"
    return matched_verdict(a, b, m.points)


def summary(
    runs: list[RunData],
    trainings: list[Training],
    comps: list[Comparison],
    matched: list[MatchedComparison] | None = None,
) -> list[str]:
    """The opening paragraphs: the paper's two settings on the largest training fraction (at the
    end of training on test, then at matched training compute on validation)."""
    paper = [c for c in comps if c.setting in ("gold labels", "teacher labels")]
    if not paper:
        return []
    full = max(c.fraction for c in paper)
    paper = sorted(
        (c for c in paper if c.fraction == full), key=lambda c: (c.setting != "gold labels", c.student)
    )
    teacher_train = train_teacher(runs)
    many = len({c.student for c in comps}) > 1
    out = [" ".join(_sentence(c, trainings, teacher_train, many) for c in paper)]
    at_compute = _matched_paragraph(matched or [], full, many)
    if at_compute:
        out.append(at_compute)
    vs_teacher = [c for c in comps if c.setting == "vs teacher" and c.fraction == full]
    if vs_teacher:
        best = max(vs_teacher, key=lambda c: c.a_acc.mean)
        who = best.a + (f" on {best.student}" if many else "")
        out.append(
            f"The teacher itself answers {p100(best.b_acc.mean)} of the same test examples with a chain "
            f"of thought; the best student, {who}, answers {p100(best.a_acc.mean)} "
            f"({interval_text(best.ci)} against the teacher; {_reading(best)}). Each number is one "
            "small run: the comparison table gives every interval and the per-seed McNemar tests."
        )
    return out


def size_rows(rows: list[AccuracyRow]) -> list[AccuracyRow]:
    """The rows of a student-size sweep (largest fraction), when more than one student ran."""
    if len({r.student for r in rows}) < 2:
        return []
    full = max(r.fraction for r in rows)
    return [r for r in rows if r.fraction == full]


def teacher_reference(runs: list[RunData]) -> dict[str, Any]:
    """The teacher's parameters and time per example (teacher_timing.json), when measured."""
    for run in runs:
        timing = run.teacher_timing or {}
        if timing.get("ms_per_example"):
            return {"params": timing.get("params"), "ms_per_example": float(timing["ms_per_example"])}
    return {}
