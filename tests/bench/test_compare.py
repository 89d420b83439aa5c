"""Benchmark comparisons: paired when cells carry per-example outcomes, else a labelled approximation."""

from __future__ import annotations

import math

import pytest
from compare import approximate_interval, compare_cells, comparison_table


def _cell(method: str, seed: int, right: list[int]) -> dict:
    ids = [f"t{i}" for i in range(len(right))]
    return {
        "task": "svamp",
        "method": method,
        "seed": seed,
        "fraction": 1.0,
        "test_accuracy": sum(right) / len(right),
        "n_test": len(right),
        "test_correct": dict(zip(ids, right)),
    }


def test_paired_when_outcomes_are_recorded():
    a = [_cell("a", 0, [1] * 30 + [0] * 10)]
    b = [_cell("b", 0, [1] * 20 + [0] * 15 + [1] * 5)]
    r = compare_cells(a, b, ("A", "B"))
    assert r["how"] == "paired bootstrap over 40 test rows, 1 seed(s)"
    assert (r["a"], r["b"]) == (0.75, 0.625)
    assert r["ci"].lo == pytest.approx(-0.05) and r["ci"].hi == pytest.approx(0.30)
    assert r["mcnemar"] == "s0: 10/5, p=0.302"  # 2 * P(Bin(15, 1/2) <= 5) = 2 * 4944 / 32768
    assert r["verdict"] == "no difference shown (the interval includes 0)"


def test_approximate_without_outcomes():
    # three seeds each: difference of means 0.1 ± 1.96 * sqrt(se_a^2 + se_b^2)
    ci, how = approximate_interval([0.2, 0.3, 0.4], [0.2, 0.2, 0.2], None)
    se_a = math.sqrt(0.01 / 3)
    assert ci.diff == pytest.approx(0.1) and ci.lo == pytest.approx(0.1 - 1.96 * se_a)
    assert how == "approximate: unpaired, from the spread of 3 and 3 seeds"
    # one seed each: two proportions of n rows (the KD benchmark: 55/60 vs 49/60)
    ci, how = approximate_interval([55 / 60], [49 / 60], 60)
    se = math.sqrt((55 / 60) * (5 / 60) / 60 + (49 / 60) * (11 / 60) / 60)
    assert (ci.lo, ci.hi) == (pytest.approx(0.1 - 1.96 * se), pytest.approx(0.1 + 1.96 * se))
    assert ci.lo < 0 < ci.hi and "two proportions of 60 rows" in how
    assert approximate_interval([0.5], [0.4], None) is None


def test_table_says_which_interval_it_shows():
    cells = [_cell("a", 0, [1] * 40), _cell("b", 0, [0] * 40)]
    cells.append({**_cell("c", 0, [1] * 20 + [0] * 20), "test_correct": None})
    rows = comparison_table(["svamp"], cells, (("a", "b"), ("a", "c")), {"a": "A", "b": "B", "c": "C"})
    assert rows[2].startswith("| svamp | A | B | 100.00 | 0.00 | +100.0 [+100.0, +100.0] | paired")
    assert rows[2].endswith("| s0: 40/0, p=1.82e-12 | A beats B |")
    assert "| approximate: unpaired, two proportions of 40 rows (1 seed) |" in rows[3]
    assert rows[3].endswith("| A beats C |")
