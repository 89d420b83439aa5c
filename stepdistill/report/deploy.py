"""The report's Deploy section: what `stepdistill export` measured (export/deploy.json of a training).

Pure functions over collected runs: one table row per exported file, preceded by the PyTorch student
it is compared with, and one sentence per training that reads the table.
"""

from __future__ import annotations

from typing import Any

from stepdistill.report.collect import RunData

HEADERS = [
    "student",
    "format",
    "size MB",
    "accuracy %",
    "Δ vs PyTorch, points [95% interval]",
    "McNemar p",
    "changed",
    "ms / example",
    "× cheaper than the teacher's chain of thought",
]


def _teacher_ms(run: RunData, deploy: dict[str, Any]) -> float | None:
    timing = run.teacher_timing or deploy.get("teacher") or {}
    ms = timing.get("ms_per_example")
    return float(ms) if ms else None


def _times(teacher_ms: float | None, ms: float | None) -> str:
    return "–" if not teacher_ms or not ms else f"{teacher_ms / ms:,.1f}×"


def deploy_rows(runs: list[RunData]) -> list[list[str]]:
    """Table cells (HEADERS) for every training with an export/deploy.json."""
    rows: list[list[str]] = []
    for run in runs:
        for t in run.trainings:
            d = t.deploy
            if not d:
                continue
            teacher = _teacher_ms(run, d)
            py = d["pytorch"]
            ms = py.get("ms_per_example")
            rows.append(
                [
                    f"{t.student} ({t.variant})",
                    f"PyTorch float32 ({py.get('device') or '?'}, batched)",
                    f"{py['size_bytes'] / 1e6:,.1f}",
                    f"{100 * py['accuracy']:.2f}",
                    "–",
                    "–",
                    "–",
                    "–" if ms is None else f"{ms:,.2f}",
                    _times(teacher, ms),
                ]
            )
            for r in d["formats"]:
                rows.append(
                    [
                        "",
                        f"{r['format']} GGUF (llama.cpp, {r['threads']} thread{'s' * (r['threads'] != 1)})",
                        f"{r['size_bytes'] / 1e6:,.1f}",
                        f"{100 * r['accuracy']:.2f}",
                        f"{100 * r['diff']:+.1f} [{100 * r['diff_lo']:+.1f}, {100 * r['diff_hi']:+.1f}]",
                        f"{r['mcnemar_p']:.3g}",
                        f"{r['changed']} / {r['n']}",
                        f"{r['ms_per_example']:,.2f}",
                        _times(teacher, r["ms_per_example"]),
                    ]
                )
    return rows


def format_reading(r: dict[str, Any], f16_bytes: int | None) -> str:
    """'q8_0 keeps accuracy within its interval (+0.0 points [-1.7, +1.7], 0 of 60 predictions
    changed) at 53% of the f16 size', or that it loses (gains) accuracy when the interval says so."""
    interval = f"{100 * r['diff']:+.1f} points [{100 * r['diff_lo']:+.1f}, {100 * r['diff_hi']:+.1f}]"
    if r["diff_hi"] < 0:
        verdict = f"loses accuracy ({interval})"
    elif r["diff_lo"] > 0:
        verdict = f"gains accuracy ({interval})"
    else:
        verdict = f"keeps accuracy within its interval ({interval}"
        verdict += f", {r['changed']} of {r['n']} predictions changed)"
    size = f" at {100 * r['size_bytes'] / f16_bytes:.0f}% of the f16 size" if f16_bytes else ""
    return f"{r['format']} {verdict}{size}"


def deploy_reading(runs: list[RunData]) -> str:
    """One sentence per exported training: each quantized format against the PyTorch student, and
    the fastest file's speed against the teacher's chain of thought."""
    sentences = []
    for run in runs:
        for t in run.trainings:
            d = t.deploy
            if not d:
                continue
            f16 = next((r["size_bytes"] for r in d["formats"] if r["format"] == "f16"), None)
            parts = [format_reading(r, f16) for r in d["formats"] if r["format"] != "f16"]
            if not parts:
                parts = [format_reading(r, None) for r in d["formats"]]
            fastest = min(d["formats"], key=lambda r: r["ms_per_example"])
            teacher = _teacher_ms(run, d)
            if teacher:
                parts.append(
                    f"served by llama.cpp ({fastest['format']}) the student answers "
                    f"{teacher / fastest['ms_per_example']:,.0f}× faster per example than the teacher's chain of thought"
                )
            sentences.append(f"{t.student} ({t.variant}): " + "; ".join(parts) + ".")
    return " ".join(sentences)
