"""Which methods the report compares, and the paired statistics of each comparison.

The paper's two settings are compared within each (task, student, train fraction):

    gold labels:     standard fine-tuning   vs  a rationale method trained on the same gold labels
    teacher labels:  distillation           vs  a rationale method trained on the teacher's labels

and every student against the teacher that labelled its data ("can this student replace it?").
Each comparison pairs the two on the same test rows: per seed an exact McNemar test, over seeds the
mean ± standard error of the accuracy difference, and a paired bootstrap 95% interval of the
difference of the seed-averaged accuracies (rows resampled, fixed seed).

The same two settings are also compared at matched training compute (`at_matched_compute`): on the
validation rows, each training's last evaluation within the largest FLOP budget all of them reached,
and again at the compute the side whose evaluation fell earlier actually used (report/curves.py). A
step-by-step step costs about twice a label-only one, so this asks whether the rationales pay for
their compute, where the test comparison asks what each method reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stepdistill.report.collect import Training
from stepdistill.report.curves import compare_matched, matched_verdict
from stepdistill.report.paired import Interval, discordant, mcnemar_exact, paired_bootstrap, verdict
from stepdistill.report.stats import MeanSE, mean_se, method_key
from stepdistill.schema import FIXED_LABELS

TEACHER = "teacher"
SETTING = {"gold": "gold labels", "teacher": "teacher labels"}
BASELINE = {"gold": "standard", "teacher": "distill"}


@dataclass
class Comparison:
    """A (challenger) against B (baseline) on the same test rows of one split."""

    setting: str  # "gold labels", "teacher labels" or "vs teacher"
    task: str
    student: str
    fraction: float
    a: str
    b: str
    a_acc: MeanSE
    b_acc: MeanSE
    diff: MeanSE  # per-seed accuracy differences A - B
    ci: Interval  # paired bootstrap of the seed-averaged difference over rows
    mcnemar: list[tuple[int, int, int, float]]  # (seed, A only right, B only right, p) per seed
    verdict: str


def _outcomes(t: Training, split: str) -> dict[str, bool]:
    return {str(r["id"]): bool(r.get("correct")) for r in t.predictions.get(split, [])}


def _teacher_outcomes(t: Training, split: str) -> dict[str, bool]:
    rows = t.predictions.get(split, [])
    return {str(r["id"]): bool(r["teacher_correct"]) for r in rows if r.get("teacher_correct") is not None}


def compare_outcomes(
    a_runs: dict[int, dict[str, bool]], b_runs: dict[int, dict[str, bool]], names: tuple[str, str]
) -> tuple[MeanSE, MeanSE, MeanSE, Interval, list, str] | None:
    """Statistics of A vs B over the seeds both have, on the rows both scored; None if none."""
    seeds = sorted(set(a_runs) & set(b_runs))
    if not seeds:
        return None
    ids = sorted(set.intersection(*(set(a_runs[s]) & set(b_runs[s]) for s in seeds)))
    if not ids:
        return None
    per_seed, tests = [], []
    a_accs, b_accs = [], []
    for s in seeds:
        a = [a_runs[s][i] for i in ids]
        b = [b_runs[s][i] for i in ids]
        only_a, only_b = discordant(a, b)
        tests.append((s, only_a, only_b, mcnemar_exact(only_a, only_b)))
        a_accs.append(sum(a) / len(ids))
        b_accs.append(sum(b) / len(ids))
        per_seed.append(a_accs[-1] - b_accs[-1])
    a_rows = [sum(a_runs[s][i] for s in seeds) / len(seeds) for i in ids]
    b_rows = [sum(b_runs[s][i] for s in seeds) / len(seeds) for i in ids]
    ci = paired_bootstrap(a_rows, b_rows)
    return mean_se(a_accs), mean_se(b_accs), mean_se(per_seed), ci, tests, verdict(*names, ci)


def _groups(trainings: list[Training], split: str) -> dict[tuple[str, str, float], dict[str, list[Training]]]:
    """(task, student, fraction) -> variant -> its trainings (one per seed) scored on `split`."""
    groups: dict[tuple[str, str, float], dict[str, list[Training]]] = {}
    for t in trainings:
        if t.predictions.get(split):
            key = (t.task, t.student, t.fraction)
            groups.setdefault(key, {}).setdefault(t.variant, []).append(t)
    return groups


def _paper_pairs(variants: dict[str, list[Training]]) -> list[tuple[str, str, str]]:
    """(setting, challenger, baseline) for each rationale method whose baseline also ran."""
    pairs = []
    for v, ts in variants.items():
        if ts[0].method not in FIXED_LABELS:
            source = ts[0].label_source
            if BASELINE[source] in variants:
                pairs.append((SETTING[source], v, BASELINE[source]))
    return sorted(pairs, key=lambda p: (p[0], method_key(p[1])))


def comparisons(trainings: list[Training], split: str = "test") -> list[Comparison]:
    """The paper's comparisons present in `trainings`, then each student against the teacher."""
    out: list[Comparison] = []
    for (task, student, fraction), variants in sorted(_groups(trainings, split).items()):
        runs = {v: {t.seed: _outcomes(t, split) for t in ts} for v, ts in variants.items()}
        for setting, a, b in _paper_pairs(variants):
            stats = compare_outcomes(runs[a], runs[b], (a, b))
            if stats is not None:
                out.append(Comparison(setting, task, student, fraction, a, b, *stats))
        for v in sorted(variants, key=method_key):
            teacher = {t.seed: _teacher_outcomes(t, split) for t in variants[v]}
            stats = compare_outcomes(runs[v], teacher, (v, TEACHER))
            if stats is not None:
                out.append(Comparison("vs teacher", task, student, fraction, v, TEACHER, *stats))
    order = {"gold labels": 0, "teacher labels": 1}
    out.sort(key=lambda c: (order.get(c.setting, 2), c.task, -c.fraction, c.student))
    return out


@dataclass
class MatchedComparison:
    """A against B on validation at equal training compute (every seed): at the largest FLOP budget
    both reached, and again at the compute the side that used less actually used (curves.py)."""

    setting: str
    task: str
    student: str
    fraction: float
    a: str
    b: str
    points: list[dict[str, Any]]  # curves.compare_at_budget results: budget, a, b, ci, *_steps, *_flops
    verdict: str  # curves.matched_verdict over the points

    @property
    def budget(self) -> float:  # training FLOPs of the first (common) budget
        return self.points[0]["budget"]


def at_matched_compute(trainings: list[Training], split: str = "test") -> list[MatchedComparison]:
    """The paper's two comparisons at matched training compute, on the validation rows each
    evaluation marked; pairs whose logs lack the FLOP count or the per-row marks are left out."""
    out = []
    for (task, student, fraction), variants in sorted(_groups(trainings, split).items()):
        seeds = {v: {t.seed: t for t in ts} for v, ts in variants.items()}
        for setting, a, b in _paper_pairs(variants):
            common = sorted(set(seeds[a]) & set(seeds[b]))
            points = compare_matched(
                [seeds[a][s].eval_rows for s in common], [seeds[b][s].eval_rows for s in common]
            )
            if points:
                out.append(
                    MatchedComparison(
                        setting, task, student, fraction, a, b, points, matched_verdict(a, b, points)
                    )
                )
    return out
