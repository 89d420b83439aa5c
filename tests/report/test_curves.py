"""Learning curves at matched compute: the point within a budget, the common budget, the paired
comparison of per-row validation marks."""

from __future__ import annotations

import pytest

from stepdistill.report.curves import compare_at_budget, matched_budget, point_at
from stepdistill.report.paired import paired_bootstrap


def _pt(step, flops, bits, examples=None):
    return {"step": step, "train_flops": flops, "examples_seen": examples or 8 * step,
            "valid_accuracy": bits.count("1") / len(bits), "valid_correct": bits}  # fmt: skip


SBS = [_pt(10, 200.0, "0000"), _pt(20, 400.0, "1100"), _pt(30, 600.0, "1110")]  # ~2x per step
STD = [_pt(10, 100.0, "1000"), _pt(20, 200.0, "1000"), _pt(40, 400.0, "1001"), _pt(80, 800.0, "1011")]


def test_point_at_takes_the_last_evaluation_within_the_budget():
    assert point_at(STD, 400.0)["step"] == 40
    assert point_at(STD, 399.0)["step"] == 20
    assert point_at(SBS, 199.0) is None


def test_matched_budget_is_the_smallest_final_compute():
    assert matched_budget([SBS, STD]) == 600.0
    assert matched_budget([SBS, []]) is None


def test_compare_at_budget_pairs_rows_of_the_points_within_it():
    r = compare_at_budget([SBS], [STD], 600.0)
    assert (r["a_steps"], r["b_steps"]) == ([30], [40])  # SBS at 600 FLOPs; standard's last <= 600
    assert (r["a"], r["b"]) == (0.75, 0.5)
    want = paired_bootstrap([1, 1, 1, 0], [1, 0, 0, 1])
    assert r["ci"] == want and r["ci"].diff == pytest.approx(0.25)


def test_seeds_are_averaged_per_row_before_the_bootstrap():
    other = [_pt(10, 200.0, "0000"), _pt(30, 600.0, "0110")]
    r = compare_at_budget([SBS, other], [STD, STD], 600.0)
    assert r["a"] == pytest.approx((0.75 + 0.5) / 2)
    assert r["ci"] == paired_bootstrap([0.5, 1.0, 1.0, 0.0], [1, 0, 0, 1])


def test_missing_marks_or_no_point_in_budget_give_no_comparison():
    assert compare_at_budget([SBS], [STD], 150.0) is None  # SBS's first evaluation is at 200
    unmarked = [{**p, "valid_correct": None} for p in STD]
    assert compare_at_budget([SBS], [unmarked], 600.0) is None
