"""What the students learned from of the teacher's rationales, and how the teacher's vote grows
with the number of samples: two tables for the report, from metrics.json train.* (written by
training/formatting.py) and annotations/summary.json vote_by_k (written by annotate.py)."""

from __future__ import annotations

from typing import Any

from stepdistill.report.collect import RunData, Training


def _cell(x: Any, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def kept_table(trainings: list[Training]) -> tuple[list[str], list[list[str]]] | None:
    """Per rationale-trained student: examples with 0, 1, 2... rationales, rows, share, token lengths."""
    rows = []
    for t in trainings:
        train = t.metrics.get("train") or {}
        per_example = train.get("rationales_per_example")
        if not per_example:
            continue  # label-only methods, or a run from before these counts
        tokens = train.get("rationale_tokens") or {}
        spread = " / ".join(f"{k}: {v}" for k, v in sorted(per_example.items(), key=lambda kv: int(kv[0])))
        rows.append([
            t.variant, str(t.seed), spread, _cell(train.get("rationale_rows")),
            _pct(train.get("rationale_share")), _cell(tokens.get("median")), _cell(tokens.get("p90")),
            _cell(train.get("rationales_over_max_tokens")), _pct(train.get("vote_agreement")),
        ])  # fmt: skip
    if not rows:
        return None
    headers = ["method", "seed", "examples by rationales (n: examples)", "rationale rows",
               "with a rationale %", "median tokens", "p90 tokens", "over max_tokens", "vote agreement %"]  # fmt: skip
    return headers, rows


def vote_table(runs: list[RunData]) -> tuple[list[str], list[list[str]]] | None:
    """Per annotated split with samples: the vote's accuracy and pass@j against j samples."""
    rows, seen = [], set()
    for run in runs:
        if run.annotation_path in seen and run.annotation_path is not None:
            continue
        seen.add(run.annotation_path)
        per_split = (run.annotation or {}).get("splits", {})
        for split, s in per_split.items():
            by_k = s.get("vote_by_k") if isinstance(s, dict) else None
            for k, v in sorted((by_k or {}).items(), key=lambda kv: int(kv[0])):
                rows.append([run.path.name, split, k, _pct(v.get("accuracy")), _pct(v.get("any_correct")),
                             _cell(v.get("n"))])  # fmt: skip
    if not rows:
        return None
    return ["run", "split", "samples j", "vote accuracy %", "some sample right %", "examples"], rows
