"""Soft-target KD vs hard-label training at equal steps, on the shipped arithmetic demo task.

    make bench-kd                         # = .venv/bin/python bench/kd.py  (~10 min on 2 CPU cores)
    .venv/bin/python bench/kd.py --smoke  # a few steps each, to check the plumbing (~3 min)

1. Teacher: the embedded SmolLM2-135M-Instruct (all 30 layers), fine-tuned on the demo task's gold
   equations (method standard) so that its distribution over answers is worth imitating.
2. Two students cut from that teacher (every other layer: 15 layers, weights copied from it), the
   same seed, the same data order and the same number of steps:
     hard  cross-entropy on the gold equations (method standard)
     kd    0.5 * CE + 0.5 * forward KL to the teacher's token distribution (T = 2), white-box online
3. Held-out test split: accuracy, agreement of the student's predicted equation with the teacher's,
   and teacher-forced KL(teacher || student) and top-1 token agreement over the gold targets.

Results go to bench/results/kd.json and to the <!-- bench:kd --> section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stepdistill.threads import sleep_idle_cpu_threads  # noqa: E402

sleep_idle_cpu_threads()  # before torch loads

import torch  # noqa: E402
from benchmarks_md import write_section  # noqa: E402
from compare import interval_cell  # noqa: E402

from stepdistill.config import config_from_dict  # noqa: E402
from stepdistill.data.io import iter_jsonl, write_json  # noqa: E402
from stepdistill.demo_data import generate_demo_data  # noqa: E402

OUT = ROOT / "runs" / "bench-kd"
SIZES = {"train": 120, "valid": 20, "test": 60}  # test: the held-out set of every number below
KEEP = list(range(0, 30, 2))  # every other of SmolLM2's 30 decoder layers
FULL = {"teacher_steps": 60, "student_steps": 60}  # ~4 epochs of 120 problems at batch 8
SMOKE = {"teacher_steps": 4, "student_steps": 4}


def base_config(name: str, model: str, steps: int, data: dict[str, str], **extra: Any):
    raw = {
        "name": name,
        "out_dir": str(OUT),
        "task": {"name": "arith"},
        "data": data,
        "student": {"model": model, "kind": "causal"},
        "train": {
            "method": "standard",
            "batch_size": 8,
            "lr": 3e-4,  # the demo's rate: cut students re-learn their layer links
            "max_steps": steps,
            "warmup_ratio": 0.05,
            "eval_every": steps,  # one selection point: both students are scored at the same step
            "log_every": 5,
            "max_input_length": 96,
            "max_target_length": 24,
            "precision": "fp32",
            "seed": 0,
        },
        "eval": {"batch_size": 32, "max_new_tokens": 16, "splits": ["test"]},
    }
    raw.update(extra)
    return config_from_dict(raw)


def timed_train(cfg) -> tuple[Path, float]:
    from stepdistill.train import train

    start = time.perf_counter()
    run = train(cfg)
    return run, time.perf_counter() - start


@torch.no_grad()
def heldout_kl(teacher_dir: Path, student_dir: Path, cfg) -> dict[str, float]:
    """Teacher-forced KL(teacher || student) and top-1 agreement over the test split's gold targets."""
    from stepdistill.data.splits import load_splits
    from stepdistill.kd.losses import dense_kd_loss
    from stepdistill.kd.whitebox import load_teacher, teacher_target_logits
    from stepdistill.tasks import get_task
    from stepdistill.training.batching import collate, encode_examples
    from stepdistill.training.formatting import build_pairs
    from stepdistill.training.models import load_saved_student
    from stepdistill.training.step import target_logits

    task = get_task(cfg.task)
    test = load_splits(cfg.data, task)["test"]
    student = load_saved_student(student_dir, kind="causal")
    student.model.eval()
    teacher, kind = load_teacher(str(teacher_dir))
    enc = encode_examples(student.tokenizer, build_pairs(task, test, cfg.train).examples, cfg.train, kind)
    kl_sum = agree = n = 0.0
    for start in range(0, len(enc), 16):
        batch = collate(enc[start : start + 16], student.tokenizer.pad_token_id, kind)
        at = target_logits(student.model, batch, kind)
        t = teacher_target_logits(teacher, batch.input_ids, batch.attention_mask, batch.labels, kind)
        kl_sum += float(dense_kd_loss(at.logits, t)) * len(t)
        agree += float((at.logits.argmax(-1) == t.argmax(-1)).sum())
        n += len(t)
    return {"heldout_kl": kl_sum / n, "token_agreement": agree / n, "target_tokens": int(n)}


def predictions(run: Path) -> dict[str, str | None]:
    return {r["id"]: r.get("pred") for _, r in iter_jsonl(run / "predictions" / "test.jsonl")}


def outcomes(run: Path) -> dict[str, int]:
    """Per test example: 1 when the student's answer is right (for the paired comparison)."""
    return {r["id"]: int(bool(r.get("correct"))) for _, r in iter_jsonl(run / "predictions" / "test.jsonl")}


def run_bench(steps: dict[str, int]) -> dict[str, Any]:
    paths = {s: str(OUT / "data" / f"{s}.jsonl") for s in SIZES}
    generate_demo_data(paths, SIZES, seed=0)
    results: dict[str, Any] = {}
    tag = f"{steps['teacher_steps']}-{steps['student_steps']}"
    from stepdistill.embedded import smollm2_converted

    smol = str(smollm2_converted())  # one float32 folder the teacher and both students start from
    tcfg = base_config(f"teacher-{tag}", smol, steps["teacher_steps"], paths)
    teacher_run, wall = timed_train(tcfg)
    teacher_dir = teacher_run / "best"
    metrics = json.loads((teacher_run / "metrics.json").read_text())
    results["teacher"] = {"accuracy": metrics["splits"]["test"]["accuracy"], "wall_s": wall}
    teacher_preds = predictions(teacher_run)
    student = {"keep_layers": KEEP}
    kd = {"teacher_model": str(teacher_dir), "loss": "forward_kl", "temperature": 2.0, "weight": 0.5}
    for name, extra in (("hard", {}), ("kd", {"kd": kd})):
        cfg = base_config(f"{name}-{tag}", str(teacher_dir), steps["student_steps"], paths, **extra)
        cfg.student.keep_layers = student["keep_layers"]
        run, wall = timed_train(cfg)
        m = json.loads((run / "metrics.json").read_text())
        preds = predictions(run)
        same = sum(preds[i] == teacher_preds.get(i) for i in preds)
        results[name] = {
            "accuracy": m["splits"]["test"]["accuracy"],
            "n_test": m["splits"]["test"]["n"],
            "pred_agreement": same / len(preds),
            "wall_s": wall,
            "params": m["student"]["params"],
            "test_correct": outcomes(run),
            **heldout_kl(teacher_dir, run / "best", cfg),
        }
        print(name, results[name], flush=True)
    return results


def accuracy_comparison(hard: dict[str, Any], kd: dict[str, Any]) -> dict[str, Any]:
    """Soft vs hard targets on the same test rows (bench/compare.py; unpaired for older results)."""
    from compare import compare_cells

    cells = [
        {
            "seed": 0,
            "test_accuracy": r["accuracy"],
            "n_test": r["n_test"],
            "test_correct": r.get("test_correct"),
        }
        for r in (kd, hard)
    ]
    return compare_cells(cells[:1], cells[1:], ("soft targets", "hard labels"))


def markdown(results: dict[str, Any], command: str, seconds: float, date: str | None = None) -> str:
    t, h, k = results["teacher"], results["hard"], results["kd"]
    rows = [
        "| student | test acc | agrees with teacher | held-out KL(T‖S) | token top-1 agreement | train wall |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in (("hard labels (CE)", h), ("soft targets (0.5 CE + 0.5 KL, T=2)", k)):
        rows.append(
            f"| {name} | {r['accuracy']:.3f} | {r['pred_agreement']:.3f} | {r['heldout_kl']:.3f} | "
            f"{r['token_agreement']:.3f} | {r['wall_s']:.0f} s |"
        )
    better_kl = k["heldout_kl"] < h["heldout_kl"]
    stats = accuracy_comparison(h, k)
    verdict = (
        f"Soft targets {'lower' if better_kl else 'do not lower'} the held-out KL to the teacher "
        f"({k['heldout_kl']:.3f} vs {h['heldout_kl']:.3f}; one seed, no interval). Test accuracy, soft "
        f"minus hard targets: {interval_cell(stats['ci'])} points (95% interval; {stats['how']}; "
        f"McNemar {stats['mcnemar']}): {stats['verdict']}. KD costs a teacher forward pass per step "
        f"({k['wall_s'] / max(h['wall_s'], 1e-9):.2f}x the hard-label wall time, evaluation included)."
    )
    return "\n".join(
        [
            "## Soft-target distillation (`make bench-kd`)",
            "",
            f"{date or dt.date.today().isoformat()} · {platform.machine()}, {os.cpu_count()} CPU cores (shared) · "
            f"`{command}` · total {seconds / 60:.1f} min",
            "",
            f"Teacher: SmolLM2-135M-Instruct fine-tuned on the arithmetic demo task (test accuracy "
            f"{t['accuracy']:.3f}). Students: 15 of its 30 layers, initialised from it, same seed and "
            "steps. Test split of 60 unseen problems.",
            "",
            *rows,
            "",
            verdict,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="a few steps each; results not written")
    p.add_argument("--report", action="store_true", help="rewrite the BENCHMARKS.md section from kd.json")
    args = p.parse_args(argv)
    if args.report:
        saved = json.loads((ROOT / "bench" / "results" / "kd.json").read_text())
        write_section("kd", markdown(saved["results"], "make bench-kd", saved["seconds"], saved.get("date")))
        return 0
    torch.manual_seed(0)
    start = time.perf_counter()
    results = run_bench(SMOKE if args.smoke else FULL)
    seconds = time.perf_counter() - start
    if args.smoke:
        print(json.dumps(results, indent=2))
        return 0
    write_json(
        ROOT / "bench" / "results" / "kd.json",
        {"steps": FULL, "results": results, "seconds": seconds, "date": dt.date.today().isoformat()},
    )
    write_section("kd", markdown(results, "make bench-kd", seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
