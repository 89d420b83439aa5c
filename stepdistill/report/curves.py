"""Learning curves compared at matched training compute: pure functions, values in and out.

A curve is one training's evaluations, in order: dicts with `step`, `examples_seen`, `train_flops`
(useful training FLOPs so far, training/flops.py), `valid_accuracy` and `valid_correct` (per-row
marks of the validation split, "1"/"0"/"-", evaluate.outcome_bits). Every method of a
study is validated on the same rows, so two curves can be compared row by row.

"At matched compute" means: each training's last evaluation at or below a FLOP budget; the budget is
the largest one every compared training reached (the smallest of their final `train_flops`). A
step-by-step step costs about twice a label-only step, so at matched compute it has seen about half
the examples. With several seeds, each row's correctness is averaged over seeds before the paired
bootstrap (report/paired.py), as for the test-set comparisons.

Evaluations fall at discrete steps (on a geometric schedule each is ~1.5 times the last), so within
a budget one side's last evaluation can come well before it: that side is compared with less
compute than the other. `compare_matched` therefore compares twice, at the common budget and at the
compute the short side actually used (where the other side now falls back to an earlier
evaluation), and `matched_verdict` names a winner only when both agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stepdistill.report.paired import Interval, paired_bootstrap

Curve = Sequence[dict[str, Any]]


def point_at(curve: Curve, budget: float) -> dict[str, Any] | None:
    """The last evaluation with train_flops <= budget (None when the first one came later)."""
    best = None
    for point in curve:
        flops = point.get("train_flops")
        if flops is not None and flops <= budget:
            best = point
    return best


def matched_budget(curves: Sequence[Curve]) -> float | None:
    """The largest FLOP budget every curve reached: the smallest final train_flops."""
    finals = [c[-1].get("train_flops") for c in curves if c]
    if not finals or len(finals) < len(curves) or any(f is None for f in finals):
        return None
    return float(min(finals))


def _row_means(points: Sequence[dict[str, Any]]) -> list[float] | None:
    """Per-row correctness averaged over seeds; None when a row is unscored or lengths differ."""
    marks = [p.get("valid_correct") for p in points]
    if not marks or any(not m for m in marks) or len({len(m) for m in marks}) != 1:
        return None
    if any("-" in m for m in marks):
        return None
    return [sum(m[i] == "1" for m in marks) / len(marks) for i in range(len(marks[0]))]


def compare_at_budget(a: Sequence[Curve], b: Sequence[Curve], budget: float) -> dict[str, Any] | None:
    """Method A's curves (one per seed) against B's at `budget` FLOPs: the points used, both
    seed-averaged validation accuracies and the paired interval of A - B. None when some seed has
    no evaluation within the budget or the per-row marks are missing."""
    pa = [point_at(c, budget) for c in a]
    pb = [point_at(c, budget) for c in b]
    if any(p is None for p in pa + pb):
        return None
    ra, rb = _row_means(pa), _row_means(pb)
    if ra is None or rb is None or len(ra) != len(rb):
        return None
    ci: Interval = paired_bootstrap(ra, rb)
    return {
        "budget": budget,
        "a": sum(ra) / len(ra),
        "b": sum(rb) / len(rb),
        "ci": ci,
        "a_steps": [p["step"] for p in pa],
        "b_steps": [p["step"] for p in pb],
        "a_flops": [p["train_flops"] for p in pa],  # the compute each side used, per seed
        "b_flops": [p["train_flops"] for p in pb],
        "a_examples": [p.get("examples_seen") for p in pa],
        "b_examples": [p.get("examples_seen") for p in pb],
    }


def compare_matched(a: Sequence[Curve], b: Sequence[Curve]) -> list[dict[str, Any]]:
    """A against B at matched compute from both sides of the evaluation grid: first at the common
    budget (matched_budget), then at the compute the side that used less actually used. In the
    first the short side has less compute than the other, in the second at least as much, so the
    two bracket an exact match. One comparison when both sides used the same compute or the other
    side has no evaluation within the second budget; none when the first cannot be made."""
    budget = matched_budget([*a, *b])
    first = compare_at_budget(a, b, budget) if budget is not None else None
    if first is None:
        return []
    used_a, used_b = sum(first["a_flops"]), sum(first["b_flops"])
    if used_a == used_b:
        return [first]
    short = first["a_flops"] if used_a < used_b else first["b_flops"]
    second = compare_at_budget(a, b, float(max(short)))
    return [first] if second is None or second == first else [first, second]


def matched_outcome(found: Sequence[dict[str, Any]]) -> tuple[str | None, bool]:
    """The side ("a" or "b") a resolved interval of compare_matched favours (None when every
    interval includes 0), and whether every comparison agrees with it."""
    cis = [f["ci"] for f in found]
    if all(ci.lo > 0 for ci in cis):
        return "a", True
    if all(ci.hi < 0 for ci in cis):
        return "b", True
    resolved = [ci for ci in cis if ci.lo > 0 or ci.hi < 0]
    if not resolved:
        return None, True
    return ("a" if resolved[0].lo > 0 else "b"), False


def matched_verdict(a: str, b: str, found: Sequence[dict[str, Any]]) -> str:
    """Words for the comparisons of compare_matched: a winner only when every interval excludes 0
    on the same side; where they disagree, which side won and with how much of the compute."""
    side, settled = matched_outcome(found)
    if side is None:
        return "no difference shown (the interval includes 0)"
    winner, loser = (a, b) if side == "a" else (b, a)
    if settled:
        return f"{winner} beats {loser}"
    won = next(f for f in found if f["ci"].lo > 0 or f["ci"].hi < 0)
    more = a if sum(won["a_flops"]) > sum(won["b_flops"]) else b
    return f"not settled: {winner} beats {loser} only where {more} had more of the compute"
