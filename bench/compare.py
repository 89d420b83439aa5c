"""Comparisons between benchmark cells with the report's statistics (stepdistill.report.paired).

With per-example outcomes (`test_correct`: {example id: 0/1} in each cell) a comparison is paired on
the same test rows: the bootstrap 95% interval of the seed-averaged accuracy difference and an exact
McNemar test per seed. Cells recorded before outcomes were kept get an approximate, unpaired interval
instead, and the table says which one it shows:

    seeds on both sides: mean difference ± 1.96 * sqrt(se_a^2 + se_b^2) from the seeds' spread
    one seed each:       two independent proportions, ± 1.96 * sqrt(pa(1-pa)/n + pb(1-pb)/n)

An unpaired interval is wider than the paired one would be when the two methods fail on the same
problems, so "A beats B" read off it is conservative.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from stepdistill.report.compare import compare_outcomes
from stepdistill.report.paired import Interval, verdict

Z95 = 1.96


def _spread(accs: list[float]) -> tuple[float, float | None]:
    m = statistics.fmean(accs)
    return m, (statistics.stdev(accs) / math.sqrt(len(accs)) if len(accs) > 1 else None)


def approximate_interval(a: list[float], b: list[float], n_test: int | None) -> tuple[Interval, str] | None:
    """Unpaired 95% interval of mean(a) - mean(b) (accuracies as fractions), and how it was made."""
    (ma, sa), (mb, sb) = _spread(a), _spread(b)
    if sa is not None and sb is not None:
        se, how = math.hypot(sa, sb), f"approximate: unpaired, from the spread of {len(a)} and {len(b)} seeds"
    elif n_test:
        se = math.sqrt(ma * (1 - ma) / n_test + mb * (1 - mb) / n_test)
        how = f"approximate: unpaired, two proportions of {n_test} rows (1 seed)"
    else:
        return None
    d = ma - mb
    return Interval(d, d - Z95 * se, d + Z95 * se, n_test or 0), how


def compare_cells(
    a_cells: list[dict[str, Any]], b_cells: list[dict[str, Any]], names: tuple[str, str]
) -> dict:
    """Statistics of method A's cells against B's (each a dict with seed, test_accuracy and, when
    recorded, test_correct and n_test)."""
    if all(c.get("test_correct") for c in a_cells + b_cells):
        a_runs = {c["seed"]: {k: bool(v) for k, v in c["test_correct"].items()} for c in a_cells}
        b_runs = {c["seed"]: {k: bool(v) for k, v in c["test_correct"].items()} for c in b_cells}
        stats = compare_outcomes(a_runs, b_runs, names)
        if stats is not None:
            a_acc, b_acc, _, ci, tests, words = stats
            mcnemar = "; ".join(f"s{s}: {x}/{y}, p={p:.3g}" for s, x, y, p in tests)
            how = f"paired bootstrap over {ci.n} test rows, {len(tests)} seed(s)"
            return {
                "a": a_acc.mean,
                "b": b_acc.mean,
                "ci": ci,
                "how": how,
                "mcnemar": mcnemar,
                "verdict": words,
            }
    n_test = next((c.get("n_test") for c in a_cells + b_cells if c.get("n_test")), None)
    a = [c["test_accuracy"] for c in a_cells]
    b = [c["test_accuracy"] for c in b_cells]
    approx = approximate_interval(a, b, n_test)
    if approx is None:
        return {
            "a": statistics.fmean(a),
            "b": statistics.fmean(b),
            "ci": None,
            "how": "no interval",
            "mcnemar": "-",
            "verdict": "no interval: run more seeds",
        }
    ci, how = approx
    return {
        "a": ci.diff + statistics.fmean(b),
        "b": statistics.fmean(b),
        "ci": ci,
        "how": how,
        "mcnemar": "- (per-example outcomes not recorded)",
        "verdict": verdict(*names, ci),
    }


def interval_cell(ci: Interval | None) -> str:
    if ci is None:
        return "-"
    return f"{100 * ci.diff:+.1f} [{100 * ci.lo:+.1f}, {100 * ci.hi:+.1f}]"


def comparison_table(
    tasks: list[str], cells: list[dict[str, Any]], pairs: tuple, titles: dict[str, str]
) -> list[str]:
    """Markdown rows comparing method A with B (each pair) on every task's full-training-set cells."""
    lines = [
        "| task | A | B | A % | B % | A − B [95% interval] | interval from | McNemar per seed | reading |"
    ]
    lines += ["|---|---|---|---:|---:|---:|---|---|---|"]
    for t in tasks:
        for a, b in pairs:
            group = {
                m: [c for c in cells if (c["task"], c["method"], float(c["fraction"])) == (t, m, 1.0)]
                for m in (a, b)
            }
            if not group[a] or not group[b]:
                continue
            r = compare_cells(group[a], group[b], (titles[a], titles[b]))
            lines.append(
                f"| {t} | {titles[a]} | {titles[b]} | {100 * r['a']:.2f} | {100 * r['b']:.2f} | "
                f"{interval_cell(r['ci'])} | {r['how']} | {r['mcnemar']} | {r['verdict']} |"
            )
    return lines
