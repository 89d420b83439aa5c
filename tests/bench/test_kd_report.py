"""bench/kd.py's BENCHMARKS.md section from recorded runs: the label-only and step-by-step variants,
their pairs, each variant judged against its own teacher's ceiling, and what is missing."""

from __future__ import annotations

import kd as bench


def _run(variant: str, seed: int, right: int, flops: float = 1e13) -> dict:
    n = 60
    marks = [1] * right + [0] * (n - right)
    curve = [
        {"step": s, "examples_seen": 8 * s, "train_flops": flops * s / 30,
         "valid_accuracy": min(1.0, s / 30), "valid_correct": "1" * min(40, 4 * s // 3) + "0" * max(0, 40 - 4 * s // 3)}
        for s in (10, 20, 30)
    ]  # fmt: skip
    return {
        "variant": variant, "seed": seed, "test_accuracy": right / n, "n_test": n,
        "test_correct": {f"t{i}": m for i, m in enumerate(marks)}, "agrees_with_teacher": right / n,
        "steps": 30, "best_step": 30, "stopped_early": True, "train_flops": flops, "train_wall_s": 100.0,
        "wall_s": 110.0, "on_policy": None, "curve": curve, "heldout_kl": 0.02, "token_agreement": 0.99,
    }  # fmt: skip


def _teacher(right: int, **extra) -> dict:
    probe = [{"input": "explain: Anne has 3 apples.", "output": extra.pop("says", "3 + 1")}]
    return {"test_accuracy": right / 60, "test_n": 60, "train_accuracy": 1.0, "train_wall_s": 200.0,
            "labels": {"rows": 120, "no_answer": 0, "wrong": 2}, "explain_probe": probe, **extra}  # fmt: skip


def _results(runs: list[dict], sbs_teacher: dict | None) -> dict:
    out = {
        "runs": {f"{r['variant']}/{r['seed']}": r for r in runs},
        "commands": ["python bench/kd.py --seeds 0"],
        "schedule": bench.FULL,
        "teacher": _teacher(59),
        "date": "2026-12-04",
    }
    if sbs_teacher is not None:
        out["teacher_sbs"] = sbs_teacher
    return out


def test_step_by_step_rows_pairs_teacher_and_own_ceiling():
    # Every seed of sbs_kd reaches its teacher's 50/60 but not the label-only teacher's 59/60.
    runs = [_run(v, s, right) for s in (0, 1) for v, right in
            (("kd", 58), ("sft", 57), ("sbs_kd", 50), ("sbs_on_policy", 48))]  # fmt: skip
    why = "Anne has 3 apples and gets 1 more, so she has 4."
    text = bench.markdown(_results(runs, _teacher(50, rationale_words=12.0, says=why)), "cmd")
    assert "| step-by-step, off-policy KD (forward KL) | 83.3 / 83.3 | 83.3 | 0.0 |" in text
    assert "| step-by-step, on-policy (λ = 1, reverse KL) | 80.0 / 80.0 |" in text
    # the pairs with both sides run: within step-by-step, step-by-step against its twin, label-only
    pairs = [
        line.split(" | ")[:3] for line in text.splitlines() if line.startswith("| ") and " | 2 | " in line
    ]
    assert pairs == [
        ["| off-policy KD (forward KL)", "SFT on the teacher's outputs", "2"],
        ["| step-by-step, on-policy (λ = 1, reverse KL)", "step-by-step, off-policy KD (forward KL)", "2"],
        ["| step-by-step, off-policy KD (forward KL)", "off-policy KD (forward KL)", "2"],
    ]
    assert "50 of 60 test problems right (83.3%)" in text and "median 12 words" in text and why in text
    assert "Every seed of step-by-step, off-policy KD (forward KL) is at or above its teacher's" in text
    assert "No step-by-step cells" not in text
    missing = text.split("Not run yet: ")[1].split(" (")[0].split(", ")
    assert (
        "sbs_mixed s2" in missing and "kd s2" in missing and "kd s0" not in missing and len(missing) == 24 - 8
    )


def test_without_the_rationale_teacher_the_section_says_how_to_get_it():
    text = bench.markdown(_results([_run("kd", 0, 58), _run("sft", 0, 57)], None), "cmd")
    assert "No step-by-step cells yet" in text and "`--variants sbs_sft sbs_kd ...`" in text
    assert "step-by-step," not in text.split("No step-by-step cells yet")[0]
