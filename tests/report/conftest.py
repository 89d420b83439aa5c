"""A finished `stepdistill run` folder written by hand in the run-folder contract (no training needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepdistill.data.io import write_json, write_jsonl

# Test accuracies per (method, fraction, seed): correct answers out of N_TEST.
N_TEST = 8
CORRECT = {
    ("standard", 1.0, 0): 4,
    ("standard", 1.0, 1): 6,
    ("distill", 1.0, 0): 5,
    ("distill", 1.0, 1): 5,
    ("step_by_step", 1.0, 0): 7,
    ("step_by_step", 1.0, 1): 6,
    ("step_by_step", 0.5, 0): 3,
    ("step_by_step", 0.5, 1): 5,
}
TEACHER_CORRECT = 6  # of N_TEST
# Text a browser must show literally, never interpret.
NASTY = '<script>document.title="pwned"</script> & a | b'


def _predictions(method: str, correct: int) -> list[dict]:
    rows = []
    for i in range(N_TEST):
        gold = f"{i} + 1"
        ok = i < correct
        rows.append(
            {
                "id": f"arith-test-{i}",
                "input": f"Anne has {i} apples and gets 1 more. {NASTY if i == 0 else ''}",
                "gold": gold,
                "pred": gold if ok else f"{i} - 1",
                "correct": ok,
                "teacher_label": gold if i < TEACHER_CORRECT else "0",
                "teacher_rationale": f"She has {i} and gets 1. {NASTY if i == 0 else ''}",
                "teacher_correct": i < TEACHER_CORRECT,
                **({"student_rationale": f"{i} plus 1."} if method == "step_by_step" else {}),
            }
        )
    return rows


def write_training(folder: Path, method: str, fraction: float, seed: int, correct: int) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"name: {folder.name}\n")
    write_json(
        folder / "metrics.json",
        {
            "name": folder.name,
            "task": "arith",
            "method": method,
            "label_source": "gold" if method == "standard" else "teacher",
            "alpha": 0.5,
            "seed": seed,
            "train_fraction": fraction,
            "student": {"model": "tiny-llama", "kind": "causal", "params": 1_600_000},
            "best_step": 20,
            "train": {"steps": 20, "examples": 160, "wall_s": 3.0, "tokens_per_s": 900.0},
            "splits": {
                "test": {
                    "accuracy": correct / N_TEST,
                    "correct": correct,
                    "n": N_TEST,
                    "teacher_accuracy": TEACHER_CORRECT / N_TEST,
                    "teacher_correct": TEACHER_CORRECT,
                    "teacher_n": N_TEST,
                },
                "valid": {"accuracy": 0.5, "correct": 2, "n": 4},
            },
            "latency": {
                "ms_per_example": 4.0 if method != "step_by_step" else 5.0,
                "examples_per_s": 250.0,
                "batch_size": 8,
                "device": "cpu",
            },
        },
    )
    log = []
    for step in (5, 10, 15, 20):
        row = {
            "step": step,
            "epoch": step / 20,
            "loss": 2.0 / step,
            "label_loss": 1.5 / step,
            "rationale_loss": 2.5 / step if method == "step_by_step" else None,
            "lr": 1e-4,
            "tokens_per_s": 900.0,
            "examples_per_s": 50.0,
            "elapsed_s": step * 0.1,
        }
        log.append(row)
        if step % 10 == 0:
            log.append({"step": step, "valid_accuracy": step / 40, "valid_n": 4})
    write_jsonl(folder / "train_log.jsonl", log)
    write_jsonl(folder / "predictions" / "test.jsonl", _predictions(method, correct))


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """runs/demo with annotations/summary.json, teacher_timing.json and eight trainings."""
    run = tmp_path / "demo"
    run.mkdir()
    (run / "config.yaml").write_text("name: demo\nreport:\n  sample_size: 3\n")
    split = {
        "teacher_model": "hf_local:SmolLM2-135M-Instruct",
        "examples": 40,
        "requests": 40,
        "cache_hits": 0,
        "retries": 1,
        "failures": {"timeout": 2, "http_500": 0},
        "parse_failures": 3,
        "filtered": 1,
        "prompt_tokens": 12000,
        "completion_tokens": 2400,
        "cost_usd": 0.0,
        "wall_s": 60.0,
        "requests_per_s": 0.67,
        "tokens_per_s": 40.0,
        "teacher_accuracy": 0.5,
        "teacher_correct": 20,
        "teacher_n": 40,
    }
    write_json(
        run / "annotations" / "summary.json",
        {"splits": {"train": split}, "total": {**split, "teacher_model": "x"}},
    )
    write_json(
        run / "teacher_timing.json",
        {
            "teacher_model": "SmolLM2-135M-Instruct",
            "params": 134_515_008,
            "examples": 4,
            "ms_per_example": 800.0,
            "device": "cpu",
        },
    )
    for (method, fraction, seed), correct in CORRECT.items():
        write_training(run / f"{method}-f{fraction:g}-s{seed}", method, fraction, seed, correct)
    return run


@pytest.fixture
def training_writer():
    """write_training(folder, method, fraction, seed, correct) for tests that add their own trainings."""
    return write_training


@pytest.fixture
def nasty_text() -> str:
    return NASTY
