"""The numbers the report shows, computed from collected runs: pure functions, values in and out.

Accuracies stay fractions (0..1) here; the renderers turn them into percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stepdistill.report.collect import RunData, Training

# Display order: baselines first, then the paper's method and its ablations; others follow by name.
METHOD_ORDER = ("standard", "distill", "step_by_step", "single_task", "answer_first", "rationale_input")


def base_method(variant: str) -> str:
    """ "step_by_step (gold labels)" -> "step_by_step"."""
    return variant.split(" ", 1)[0]


def method_key(method: str) -> tuple[int, str]:
    """Sort key of a method or variant name: baselines, then the paper's method, then the rest."""
    base = base_method(method)
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


@dataclass(frozen=True)
class MeanSE:
    """Mean and standard error of the mean over n values (se is None for a single value)."""

    mean: float
    se: float | None
    n: int


def mean_se(values: list[float]) -> MeanSE:
    """Sample mean and standard error (sample standard deviation / sqrt(n))."""
    if not values:
        raise ValueError("mean_se of no values")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return MeanSE(mean, None, 1)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return MeanSE(mean, math.sqrt(var / n), n)


@dataclass
class AccuracyRow:
    """Accuracy of one (task, student, method variant, fraction) group over its seeds."""

    task: str
    method: str  # the variant name (Training.variant)
    fraction: float
    seeds: dict[int, float]  # seed -> accuracy
    stat: MeanSE
    teacher: float | None  # the teacher's accuracy on the same split, for reference
    params: int | None  # student parameters
    student: str = ""
    ms_per_example: float | None = None  # label-only latency, mean over seeds


def teacher_accuracy(trainings: list[Training], split: str) -> float | None:
    """The teacher's accuracy on `split` as recorded in the trainings' metrics (first that has it)."""
    for t in trainings:
        s = t.metrics.get("splits", {}).get(split) or {}
        if s.get("teacher_accuracy") is not None:
            return float(s["teacher_accuracy"])
    return None


def _latency(ts: list[Training]) -> float | None:
    ms = [(t.metrics.get("latency") or {}).get("ms_per_example") for t in ts]
    ms = [float(x) for x in ms if x is not None]
    return sum(ms) / len(ms) if ms else None


def accuracy_rows(trainings: list[Training], split: str = "test") -> list[AccuracyRow]:
    """One row per (task, student, variant, fraction): per-seed accuracies, mean and standard error."""
    groups: dict[tuple[str, str, str, float], list[Training]] = {}
    for t in trainings:
        if t.accuracy(split) is not None:
            groups.setdefault((t.task, t.student, t.variant, t.fraction), []).append(t)
    rows = []
    for (task, student, method, fraction), ts in groups.items():
        seeds = {t.seed: t.accuracy(split) for t in sorted(ts, key=lambda t: t.seed)}
        facts = ts[0].metrics.get("student") or {}
        rows.append(
            AccuracyRow(
                task=task,
                method=method,
                fraction=fraction,
                seeds=seeds,
                stat=mean_se(list(seeds.values())),
                teacher=teacher_accuracy(ts, split),
                params=facts.get("params"),
                student=student,
                ms_per_example=_latency(ts),
            )
        )
    rows.sort(key=lambda r: (r.task, r.params or 0, r.student, method_key(r.method), r.fraction))
    return rows


def splits_present(trainings: list[Training]) -> list[str]:
    """Split names with scores, test first (what the paper reports), then the rest by name."""
    names = {s for t in trainings for s in t.metrics.get("splits", {})}
    return sorted(names, key=lambda s: (s != "test", s))


def speed_rows(runs: list[RunData]) -> list[dict[str, Any]]:
    """Teacher chain-of-thought generation vs student label-only prediction, per example.

    Student rows: one per (task, method), the mean over its trainings of metrics.latency. Teacher
    rows: teacher_timing.json of each run. `speedup` is teacher ms / student ms on the same run.
    """
    rows: list[dict[str, Any]] = []
    timed: set[Any] = set()  # runs that trained on the same annotations share one teacher row
    for run in runs:
        timing = run.teacher_timing or {}
        teacher_ms = timing.get("ms_per_example")
        if teacher_ms is not None and (run.timing_path is None or run.timing_path not in timed):
            timed.add(run.timing_path)
            rows.append(
                {
                    "who": "teacher",
                    "name": str(timing.get("teacher_model", "teacher")),
                    "what": "chain of thought + label",
                    "params": timing.get("params"),
                    "ms_per_example": float(teacher_ms),
                    "examples_per_s": 1000.0 / float(teacher_ms) if teacher_ms else None,
                    "device": timing.get("device"),
                    "speedup": None,
                }
            )
        by_method: dict[tuple[str, str], list[Training]] = {}
        for t in run.trainings:
            if (t.metrics.get("latency") or {}).get("ms_per_example") is not None:
                by_method.setdefault((t.student, t.variant), []).append(t)
        for key in sorted(by_method, key=lambda k: (k[0], method_key(k[1]))):
            ts = by_method[key]
            ms = mean_se([float(t.metrics["latency"]["ms_per_example"]) for t in ts]).mean
            student = ts[0].metrics.get("student") or {}
            rows.append(
                {
                    "who": "student",
                    "name": f"{key[0]} ({key[1]})",
                    "what": "label only",
                    "params": student.get("params"),
                    "ms_per_example": ms,
                    "examples_per_s": 1000.0 / ms if ms else None,
                    "device": ts[0].metrics["latency"].get("device"),
                    "speedup": float(teacher_ms) / ms if teacher_ms and ms else None,
                }
            )
    return rows


def annotation_rows(runs: list[RunData]) -> list[dict[str, Any]]:
    """Per annotated split: tokens, cost, throughput and teacher quality (accuracy, failures)."""
    rows = []
    seen: set[Any] = set()  # the same annotation files read by several runs are shown once
    for run in runs:
        if run.annotation_path is not None:
            if run.annotation_path in seen:
                continue
            seen.add(run.annotation_path)
        summary = run.annotation or {}
        # annotate.py writes {"splits": {split: {...}}, "total": {...}}; a flat {split: {...}} is
        # accepted too.
        per_split = summary.get("splits", summary)
        for split, s in per_split.items():
            if not isinstance(s, dict) or "examples" not in s:
                continue
            failures = s.get("failures") or {}
            rows.append(
                {
                    "run": run.path.name,
                    "split": split,
                    **{k: s.get(k) for k in _ANNOTATION_KEYS},
                    "failures": sum(v for v in failures.values() if isinstance(v, (int, float))),
                    "failure_kinds": failures,
                }
            )
    return rows


_ANNOTATION_KEYS = (
    "teacher_model",
    "examples",
    "requests",
    "cache_hits",
    "retries",
    "parse_failures",
    "filtered",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "wall_s",
    "requests_per_s",
    "tokens_per_s",
    "teacher_accuracy",
    "teacher_correct",
    "teacher_n",
)


def sample_examples(trainings: list[Training], split: str, size: int) -> list[dict[str, Any]]:
    """Up to `size` examples of `split`, each with the teacher's output and every method's answer.

    The methods' answers come from each method's first seed at its largest training fraction, so
    the same examples are compared side by side. Examples are spread evenly over the split.
    """
    chosen: dict[str, Training] = {}

    def biggest_first(t: Training) -> tuple:
        return (-((t.metrics.get("student") or {}).get("params") or 0), -t.fraction, t.seed)

    for t in sorted(trainings, key=biggest_first):
        if split in t.predictions and t.variant not in chosen:
            chosen[t.variant] = t
    if not chosen or size <= 0:
        return []
    methods = sorted(chosen, key=method_key)
    by_id = {m: {row["id"]: row for row in chosen[m].predictions[split]} for m in methods}
    ids = [row["id"] for row in chosen[methods[0]].predictions[split]]
    step = max(1, len(ids) // size)
    out = []
    for ex_id in ids[::step][:size]:
        first = by_id[methods[0]][ex_id]
        answers = {}
        for m in methods:
            row = by_id[m].get(ex_id)
            if row is not None:
                answers[m] = {
                    "pred": row.get("pred"),
                    "correct": bool(row.get("correct")),
                    "rationale": row.get("student_rationale"),
                }
        out.append(
            {
                "id": ex_id,
                "input": first.get("input", ""),
                "gold": first.get("gold"),
                "teacher_label": first.get("teacher_label"),
                "teacher_rationale": first.get("teacher_rationale"),
                "teacher_correct": first.get("teacher_correct"),
                "answers": answers,
            }
        )
    return out
