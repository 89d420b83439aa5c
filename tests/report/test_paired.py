"""Paired statistics against hand computation, and the comparisons and opening paragraph of a report."""

from __future__ import annotations

import json
import math

import pytest

from stepdistill.report.build import build_report
from stepdistill.report.collect import collect
from stepdistill.report.compare import comparisons
from stepdistill.report.paired import Interval, discordant, mcnemar_exact, paired_bootstrap, verdict


def test_mcnemar_exact_against_hand_computed_tables():
    # b = 1, c = 6: n = 7, P(X <= 1) = (C(7,0) + C(7,1)) / 2^7 = 8/128, two-sided 16/128
    assert mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact(6, 1) == pytest.approx(0.125)
    # b = 2, c = 10: (1 + 12 + 66) / 4096 doubled
    assert mcnemar_exact(2, 10) == pytest.approx(158 / 4096)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    a = [True, True, False, True, False, False]
    b = [True, False, False, False, True, False]
    assert discordant(a, b) == (2, 1)  # rows 1 and 3 only A, row 4 only B
    with pytest.raises(ValueError, match="differ in length"):
        discordant(a, b[:-1])


def test_paired_bootstrap_with_a_fixed_seed():
    # Every row: A right, B wrong -> the difference is 1 in every resample.
    assert paired_bootstrap([1, 1, 1], [0, 0, 0]) == Interval(1.0, 1.0, 1.0, 3)
    # Differences [1, 0]: a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% percentiles of 10,000 resamples are 0 and 1.
    assert paired_bootstrap([1, 0], [0, 0]) == Interval(0.5, 0.0, 1.0, 2)
    # 40 rows: A only right on 10, B only right on 5 -> +12.5 points. Seed 0 gives [-5, +30]; the
    # normal approximation 0.125 ± 1.96 * sd / sqrt(40) is [-6.1, +31.1].
    a = [1] * 30 + [0] * 10
    b = [1] * 20 + [0] * 15 + [1] * 5
    ci = paired_bootstrap(a, b)
    assert (ci.diff, ci.n) == (0.125, 40)
    assert ci.lo == pytest.approx(-0.05) and ci.hi == pytest.approx(0.30)
    d = [x - y for x, y in zip(a, b)]
    sd = math.sqrt(sum((x - 0.125) ** 2 for x in d) / 40)
    assert abs(ci.lo - (0.125 - 1.96 * sd / math.sqrt(40))) < 0.02
    assert paired_bootstrap(a, b) == ci  # same seed, same interval
    assert verdict("A", "B", ci) == "no difference shown (the interval includes 0)"
    assert verdict("A", "B", Interval(0.1, 0.02, 0.2, 40)) == "A beats B"
    assert verdict("A", "B", Interval(-0.1, -0.2, -0.01, 40)) == "B beats A"


def _make_gold_variant(run, writer, correct: dict[int, int]) -> None:
    """step_by_step trained on gold labels with gold-filtered rationales, seeds 0 and 1."""
    for seed, n in correct.items():
        folder = run / f"step_by_step-gold-filtered-f1-s{seed}"
        writer(folder, "step_by_step", 1.0, seed, n)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["label_source"] = "gold"
        metrics["train"].update(label_examples=160, rationale_examples=70)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "config.yaml").write_text("train:\n  gold_filter: true\n")


def test_comparisons_pair_the_papers_settings(finished_run, training_writer):
    _make_gold_variant(finished_run, training_writer, {0: 8, 1: 8})
    comps = comparisons(collect([finished_run])[0].trainings)
    paper = [(c.setting, c.a, c.b) for c in comps if c.setting != "vs teacher"]
    gold = "step_by_step (gold labels, filtered rationales)"
    assert paper == [
        ("gold labels", gold, "standard"),
        ("teacher labels", "step_by_step (teacher labels)", "distill"),
    ]
    g, t = comps[0], comps[1]
    # standard gets rows 0..3 (seed 0) and 0..5 (seed 1) right; the gold variant all 8 in both.
    assert g.mcnemar == [(0, 4, 0, 0.125), (1, 2, 0, 0.5)]
    assert g.ci.diff == pytest.approx(0.375) and g.ci.lo > 0 and g.verdict == f"{gold} beats standard"
    assert (g.diff.mean, g.diff.se) == (pytest.approx(0.375), pytest.approx(0.125))
    # step_by_step 7 and 6 right, distill 5 and 5: per-row seed means differ on rows 5 (1) and 6 (0.5)
    assert t.mcnemar == [(0, 2, 0, 0.5), (1, 1, 0, 1.0)]
    assert t.ci.diff == pytest.approx(1.5 / 8) and t.ci.lo <= 0 <= t.ci.hi
    assert t.verdict == "no difference shown (the interval includes 0)"
    teacher = [c for c in comps if c.setting == "vs teacher" and c.a == gold][0]
    assert teacher.b_acc.mean == 0.75 and teacher.ci.diff == pytest.approx(0.25)


def test_report_opens_with_both_settings_and_their_intervals(finished_run, training_writer):
    _make_gold_variant(finished_run, training_writer, {0: 8, 1: 8})
    build_report([finished_run])
    md = (finished_run / "report" / "report.md").read_text()
    opening = md.split("\n\n")[1]
    assert opening.startswith("**With gold labels**, step-by-step (the same 160 gold labels as standard")
    assert "rationales on 70 of them" in opening
    assert "scored 100.0% against 62.5% for standard fine-tuning: +37.5 points [" in opening
    assert "step-by-step beats standard fine-tuning on this run." in opening
    assert (
        "**Without gold labels**, step-by-step (the teacher's labels) scored 81.2% against 62.5%" in opening
    )
    assert "this run cannot tell step-by-step and distillation apart" in opening
    assert "right on 50.0% of the training examples (20 of 40)" in opening
    table = md.split("## Comparisons (test, paired on the same examples)")[1]
    assert (
        "| gold labels | tiny-llama | 1 | step_by_step (gold labels, filtered rationales) | standard |"
        in table
    )
    assert "s0: 4/0, p=0.125; s1: 2/0, p=0.5" in table
    html = (finished_run / "report" / "report.html").read_text()
    assert '<p class="summary"><b>With gold labels</b>, step-by-step' in html
    assert html.count('<p class="caption">Read: ') == html.count("<img ")


def test_label_weight_variants_are_named_and_each_compared_with_distillation(finished_run, training_writer):
    for seed, n in {0: 8, 1: 8}.items():
        folder = finished_run / f"step_by_step-linear-f1-s{seed}"
        training_writer(folder, "step_by_step", 1.0, seed, n)
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics.update(alpha=0.5, alpha_schedule="linear", alpha_end=1.0)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        fixed = finished_run / f"step_by_step-alpha0.8-f1-s{seed}"
        training_writer(fixed, "step_by_step", 1.0, seed, n)
        (fixed / "config.yaml").write_text("train:\n  alpha: 0.8\n")  # metrics without alpha: from config
        metrics = json.loads((fixed / "metrics.json").read_text())
        metrics.pop("alpha", None)
        (fixed / "metrics.json").write_text(json.dumps(metrics))
    comps = comparisons(collect([finished_run])[0].trainings)
    teacher_setting = [(c.a, c.b) for c in comps if c.setting == "teacher labels"]
    assert teacher_setting == [
        ("step_by_step (teacher labels)", "distill"),
        ("step_by_step (teacher labels, α 0.5→1)", "distill"),
        ("step_by_step (teacher labels, α 0.8)", "distill"),
    ]


@pytest.mark.parametrize(
    "config, filtered",
    [
        ("train:\n  gold_filter: true\n", True),
        ("annotate:\n  gold_filter: true\n  gold_filter_splits: [train, valid]\n", True),
        ("annotate:\n  gold_filter: true\n  gold_filter_splits: [valid]\n", False),
        ("annotate:\n  gold_filter: false\ntrain:\n  gold_filter: false\n", False),
    ],
)
def test_a_run_filtered_when_annotating_is_labelled_filtered(finished_run, training_writer, config, filtered):
    folder = finished_run / "step_by_step-gold-f1-s0"
    training_writer(folder, "step_by_step", 1.0, 0, 8)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["label_source"] = "gold"
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(config)
    [training] = [t for t in collect([finished_run])[0].trainings if t.path == folder]
    expected = "step_by_step (gold labels, filtered rationales)" if filtered else "step_by_step (gold labels)"
    assert training.variant == expected
