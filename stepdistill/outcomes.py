"""The one line each command ends with: what it did and where its files are.

    annotate: 36 train, 4 valid, 8 test examples; 46 annotated, 2 not parsed, 0 unanswered, teacher accuracy 80.43% -> runs/sentiment/annotations
    train: best validation accuracy 75.00% (step 40), test accuracy 62.50% -> runs/sentiment/standard
    evaluate: valid 75.00% (3/4), test 62.50% (5/8) -> runs/sentiment/standard/evaluation (metrics.json, predictions/)
    predict: 3 inputs, 3 labelled, 3 with a rationale -> runs/sentiment/standard/predictions-new.jsonl

Formatting of values the commands already hold (the train and predict lines read the files written).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stepdistill.data.io import iter_jsonl


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def annotate_line(summary: dict[str, Any], out_dir: Path) -> str:
    """Examples per split, how many got a parsed label, failures, and the folder written."""
    per = summary["splits"]
    counts = [f"{s['examples']} {name}" for name, s in per.items()]
    carved = Path(out_dir) / "valid.jsonl"
    if "valid" not in per and carved.exists():
        counts.append(f"{sum(1 for _ in iter_jsonl(carved))} valid (carved from train, not annotated)")
    total = summary["total"]
    acc = total.get("teacher_accuracy")
    return (
        f"annotate: {', '.join(counts)} examples; {total['annotated']} annotated, "
        f"{total['parse_failures']} not parsed, {total['unanswered']} unanswered"
        + (f", teacher accuracy {_pct(acc)}" if acc is not None else "")
        + f" -> {out_dir}"
    )


def train_line(run_dir: Path) -> str:
    """Best validation accuracy (and its step), test accuracy, the run folder."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    splits = metrics.get("splits", {})
    valid = (splits.get("valid") or {}).get("accuracy")
    best = f"best validation accuracy {_pct(valid)}"
    if metrics.get("best_step") is not None:
        best += f" (step {metrics['best_step']})"
    parts = [best]
    parts += [f"{name} accuracy {_pct(s.get('accuracy'))}" for name, s in splits.items() if name != "valid"]
    return f"train: {', '.join(parts)} -> {run_dir}"


def evaluate_line(results: dict[str, dict[str, Any]], out_dir: Path) -> str:
    """Accuracy per split scored now, and where metrics and predictions went."""
    scores = [
        f"{name} {_pct(s.get('accuracy'))} ({s.get('correct', 0)}/{s.get('n', 0)})"
        for name, s in results.items()
    ]
    return f"evaluate: {', '.join(scores)} -> {out_dir} (metrics.json, predictions/)"


def predict_line(path: Path) -> str:
    """Rows written, how many got a label (and a rationale), accuracy where inputs had gold labels."""
    rows = [row for _, row in iter_jsonl(path)]
    labelled = sum(r.get("pred") is not None for r in rows)
    text = f"predict: {len(rows)} input{'' if len(rows) == 1 else 's'}, {labelled} labelled"
    if any("student_rationale" in r for r in rows):
        text += f", {sum(bool(r.get('student_rationale')) for r in rows)} with a rationale"
    scored = [r for r in rows if r.get("correct") is not None]
    if scored:
        text += f", accuracy {_pct(sum(bool(r['correct']) for r in scored) / len(scored))} on {len(scored)} with gold"
    return f"{text} -> {path}"
