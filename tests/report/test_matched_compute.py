"""The report's comparisons at matched training compute: each training's last evaluation within the
largest FLOP budget all compared trainings reached, paired on the validation rows."""

from __future__ import annotations

import json
from pathlib import Path

from stepdistill.report.build import build_report
from stepdistill.report.collect import collect
from stepdistill.report.compare import at_matched_compute
from stepdistill.report.paired import interval_text, paired_bootstrap


def _set_curve(folder: Path, flops_per_step: float, marks: dict[int, str]) -> None:
    """Replace the training's evaluations by ones with FLOP counts and per-row validation marks."""
    log = folder / "train_log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    rows = [r for r in rows if "valid_accuracy" not in r]
    for step, bits in marks.items():
        rows.append(
            {"step": step, "valid_accuracy": bits.count("1") / len(bits), "valid_n": len(bits),
             "valid_correct": bits, "examples_seen": 8 * step, "train_flops": flops_per_step * step}
        )  # fmt: skip
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_step_by_step_is_compared_where_both_spent_the_same_flops(finished_run, tmp_path):
    for seed in (0, 1):
        _set_curve(finished_run / f"distill-f1-s{seed}", 1e12, {10: "1100", 20: "1110"})
        # twice the FLOPs per step: within distill's final 20 TFLOPs it reached only step 10
        _set_curve(finished_run / f"step_by_step-f1-s{seed}", 2e12, {10: "0000", 20: "1111"})

    [m] = at_matched_compute(collect([finished_run])[0].trainings)
    assert (m.setting, m.a, m.b, m.fraction) == (
        "teacher labels",
        "step_by_step (teacher labels)",
        "distill",
        1.0,
    )
    [p] = m.points  # both sides used exactly 20 TFLOPs: one comparison
    assert m.budget == 2e13 and (p["a_steps"], p["b_steps"]) == ([10, 10], [20, 20])
    assert (p["a"], p["b"]) == (0.0, 0.75)
    ci = paired_bootstrap([0, 0, 0, 0], [1, 1, 1, 0])
    assert p["ci"] == ci and ci.hi < 0 and m.verdict == "distill beats step_by_step (teacher labels)"

    md = (build_report([finished_run], tmp_path / "report").with_name("report.md")).read_text()
    section = md.split("## Comparisons at matched training compute (validation)\n", 1)[1].split("\n## ")[0]
    row = (
        f"| teacher labels | tiny-llama | 1 | step_by_step (teacher labels) | distill | 20.0 / 20.0 | 0.00 | 75.00 | "
        f"-75.0 [{100 * ci.lo:+.1f}, {100 * ci.hi:+.1f}] | 10/10 / 20/20 | distill beats step_by_step (teacher labels) |"
    )
    assert row in section
    opening = md.split("## ", 1)[0]
    assert (
        "**At equal training compute** (validation examples, each training at its last evaluation within "
        "20.0 TFLOPs; a step-by-step step costs about twice a label-only one): teacher labels: "
        f"step-by-step (teacher labels) 0.0% against 75.0% for distillation, {interval_text(ci)}; "
        "distillation beats step-by-step on this run." in " ".join(opening.split())
    )


def test_a_pair_whose_evaluations_fall_apart_is_compared_at_both_sides_compute(finished_run, tmp_path):
    for seed in (0, 1):
        # distill reaches 30 TFLOPs; step-by-step's last evaluation within them is step 10 (20 TFLOPs)
        _set_curve(finished_run / f"distill-f1-s{seed}", 1e12, {10: "1000", 20: "1100", 30: "1111"})
        _set_curve(finished_run / f"step_by_step-f1-s{seed}", 2e12, {10: "1100", 20: "1111"})

    [m] = at_matched_compute(collect([finished_run])[0].trainings)
    first, second = m.points
    # at the common 30 TFLOPs distill had 1.5x step-by-step's compute; at the 20 step-by-step used,
    # distill falls back to step 20
    assert (first["budget"], first["a_steps"], first["b_steps"]) == (3e13, [10, 10], [30, 30])
    assert (second["budget"], second["a_steps"], second["b_steps"]) == (2e13, [10, 10], [20, 20])
    assert first["ci"] == paired_bootstrap([1, 1, 0, 0], [1, 1, 1, 1])
    assert second["ci"] == paired_bootstrap([1, 1, 0, 0], [1, 1, 0, 0])
    assert m.verdict == "no difference shown (the interval includes 0)"

    md = (build_report([finished_run], tmp_path / "report").with_name("report.md")).read_text()
    section = md.split("## Comparisons at matched training compute (validation)\n", 1)[1].split("\n## ")[0]
    assert "| step_by_step (teacher labels) | distill | 20.0 / 30.0 | 50.00 | 100.00 |" in section
    assert (
        "| step_by_step (teacher labels) | distill | 20.0 / 20.0 | 50.00 | 50.00 | +0.0 [+0.0, +0.0] |"
        in section
    )


def test_logs_without_flops_or_row_marks_give_no_matched_comparison(finished_run, tmp_path):
    assert at_matched_compute(collect([finished_run])[0].trainings) == []  # the fixture's logs have neither
    md = (build_report([finished_run], tmp_path / "report").with_name("report.md")).read_text()
    assert "matched training compute" not in md
