"""The study grid: (task, fraction) settings, and its report (convergence and matched-compute
comparisons with paired intervals, the learning-curve figure) from a results file."""

from __future__ import annotations

from quality import cell_config, grid, load_spec
from study_report import study_figure, study_markdown

from stepdistill.report.paired import paired_bootstrap


def _cell(method, seed, bits_by_step, flops_per_step, test):
    curve = [
        {"step": s, "examples_seen": 8 * s, "train_flops": flops_per_step * s,
         "valid_accuracy": b.count("1") / len(b), "valid_correct": b}
        for s, b in bits_by_step
    ]  # fmt: skip
    return {
        "task": "svamp", "method": method, "seed": seed, "fraction": 1.0, "cell_wall_s": 60.0,
        "test_accuracy": sum(test.values()) / len(test), "test_correct": test, "n_test": len(test),
        "steps": curve[-1]["step"], "best_step": curve[-1]["step"], "stopped_early": True,
        "train_flops": curve[-1]["train_flops"], "curve": curve,
    }  # fmt: skip


def test_study_config_crosses_settings_with_methods_and_seeds():
    spec = load_spec("study")
    cells = grid(spec)
    assert spec["tasks"] == ["svamp", "cqa"]
    assert len(cells) == 3 * len(spec["methods"]) * len(spec["seeds"])
    assert {(c.task, c.fraction) for c in cells} == {("svamp", 1.0), ("cqa", 0.125), ("cqa", 0.25)}


def test_study_cells_take_the_task_overrides(tmp_path):
    spec = load_spec("study")
    cqa = next(c for c in grid(spec) if c.task == "cqa" and c.method == "sbs_ramp")
    cfg = cell_config(spec, cqa, tmp_path, smoke=False)
    assert cfg.train.max_steps == 480 and cfg.data.valid_fraction == 0.03 and cfg.data.train_fraction == 0.125
    assert (cfg.train.alpha_schedule, cfg.train.patience_metric) == ("linear", "accuracy_or_loss")
    assert cfg.student.keep_layers == [0, 4, 8, 12, 16, 20, 24, 29]
    assert cfg.eval.label_decoding == "rank"  # CQA's five choices are ranked
    svamp = next(c for c in grid(spec) if c.task == "svamp")
    assert cell_config(spec, svamp, tmp_path, smoke=False).eval.label_decoding == "generate"


def test_gpu_study_trains_the_full_student_on_all_of_both_tasks_with_the_same_methods(tmp_path):
    cpu, gpu = load_spec("study"), load_spec("study-gpu")
    assert gpu["methods"] == cpu["methods"]  # the same six methods, variants included
    cells = grid(gpu)
    assert {(c.task, c.fraction) for c in cells} == {("svamp", 1.0), ("cqa", 1.0)}
    assert len(cells) == 2 * len(gpu["methods"]) * 3
    for key in ("eval_schedule", "eval_growth", "patience", "patience_metric"):  # the same stopping rule
        assert gpu["train"][key] == cpu["train"][key]
    cqa = cell_config(gpu, next(c for c in cells if c.task == "cqa"), tmp_path, smoke=False)
    assert cqa.student.keep_layers is None and cqa.train.max_steps == 2000 and cqa.train.precision == "bf16"


def test_report_compares_at_convergence_and_at_matched_compute(tmp_path):
    spec = {
        "name": "s", "settings": [{"task": "svamp", "fraction": 1.0}], "seeds": [0],
        "methods": {"standard": {}, "sbs_gold": {}},
        "train": {"batch_size": 8, "lr": 1e-4, "eval_every": 10, "max_steps": 40},
    }  # fmt: skip
    test_a = {f"t{i}": int(i < 3) for i in range(4)}  # 75% on test
    test_b = {f"t{i}": int(i == 0) for i in range(4)}  # 25%
    results = {"cells": {
        "a": _cell("sbs_gold", 0, [(10, "0000"), (20, "1110")], 2.0e15, test_a),  # 40 PFLOPs at the end
        "b": _cell("standard", 0, [(10, "1000"), (20, "1000"), (40, "1001")], 1.0e15, test_b),
    }}  # fmt: skip
    text = study_markdown(spec, results, {"svamp": 74.0}, "cmd", None)
    assert (
        "| step-by-step, gold labels + PaLM rationales | 75.0 (1 seed) | 20 (20) | yes | 40.00 | 1 |" in text
    )
    # at convergence, paired over the 4 test rows; at the common 40 PFLOPs: sbs at step 20, standard at 40
    conv = paired_bootstrap([1, 1, 1, 0], [1, 0, 0, 0])
    matched = paired_bootstrap([1, 1, 1, 0], [1, 0, 0, 1])
    assert f"{100 * conv.diff:+.1f} [{100 * conv.lo:+.1f}, {100 * conv.hi:+.1f}]" in text
    assert (
        f"40.000 / 40.000: 75.0 vs 50.0, {100 * matched.diff:+.1f} [{100 * matched.lo:+.1f}, {100 * matched.hi:+.1f}] (20 / 40)"
        in text
    )
    png = study_figure(spec, results, tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_setting_without_a_complete_pair_says_so_instead_of_an_empty_table():
    spec = {
        "name": "s", "settings": [{"task": "svamp", "fraction": 1.0}], "seeds": [0, 1],
        "methods": {"standard": {}, "sbs_gold": {}},
        "train": {"batch_size": 8, "lr": 1e-4, "eval_every": 10, "max_steps": 40},
    }  # fmt: skip
    test = {f"t{i}": int(i < 2) for i in range(4)}
    results = {"cells": {  # the pair's methods ran, but never on the same seed
        "a": _cell("standard", 0, [(10, "1000")], 1.0e15, test),
        "b": _cell("sbs_gold", 1, [(10, "1100")], 2.0e15, test),
    }}  # fmt: skip
    text = study_markdown(spec, results, {"svamp": 74.0}, "cmd", None)
    assert "| standard fine-tuning (gold labels) | 50.0 (1 seed) |" in text
    assert "No comparison yet: no compared pair has both its methods run on a common seed." in text
    assert "| A | B |" not in text
