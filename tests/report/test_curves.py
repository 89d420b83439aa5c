"""Learning curves at matched compute: the point within a budget, the common budget, the paired
comparison of per-row validation marks."""

from __future__ import annotations

import pytest

from stepdistill.report.curves import (
    compare_at_budget,
    compare_matched,
    matched_budget,
    matched_verdict,
    point_at,
)
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


def test_compare_matched_compares_again_at_the_compute_the_short_side_used():
    std = [*STD[:3], _pt(60, 600.0, "1111")]  # reaches 600 FLOPs with a point at 600
    sbs = [SBS[0], SBS[1], _pt(30, 700.0, "1110")]  # its last evaluation within 600 is step 20 (400)
    first, second = compare_matched([sbs], [std])
    assert (first["budget"], first["a_steps"], first["b_steps"]) == (600.0, [20], [60])
    assert (first["a_flops"], first["b_flops"]) == ([400.0], [600.0])
    assert (second["budget"], second["a_steps"], second["b_steps"]) == (400.0, [20], [40])
    assert second["ci"] == paired_bootstrap([1, 1, 0, 0], [1, 0, 0, 1])


def test_compare_matched_makes_one_comparison_when_both_used_the_same_compute():
    [only] = compare_matched([SBS], [STD[:3]])  # both end exactly at 400 FLOPs
    assert (only["a_steps"], only["b_steps"]) == ([20], [40])
    assert compare_matched([SBS], [[]]) == []


def _found(a_flops, b_flops, lo, hi):
    from stepdistill.report.paired import Interval

    return {"a_flops": [a_flops], "b_flops": [b_flops], "ci": Interval((lo + hi) / 2, lo, hi, 80)}


def test_matched_verdict_names_a_winner_only_when_both_alignments_agree():
    assert matched_verdict("A", "B", [_found(4, 6, -0.2, -0.05), _found(4, 3, -0.1, -0.01)]) == "B beats A"
    assert matched_verdict("A", "B", [_found(4, 6, 0.01, 0.2)]) == "A beats B"
    assert matched_verdict("A", "B", [_found(4, 6, -0.1, 0.1)]).startswith("no difference shown")
    # B wins only where it had 1.5x A's compute
    assert matched_verdict("A", "B", [_found(4, 6, -0.2, -0.05), _found(4, 3, -0.1, 0.02)]) == (
        "not settled: B beats A only where B had more of the compute"
    )
