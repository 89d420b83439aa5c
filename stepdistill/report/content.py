"""What the report says, independent of format: sections of tables (cells already as text) and figures.

render_md.py and render_html.py only lay these out, so the Markdown and the HTML always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stepdistill.report import plots
from stepdistill.report.collect import RunData, all_trainings
from stepdistill.report.stats import (
    AccuracyRow,
    accuracy_rows,
    annotation_rows,
    sample_examples,
    speed_rows,
    splits_present,
)


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figure: str | None = None  # key into Report.figures


@dataclass
class Report:
    title: str
    runs: list[str]
    sections: list[Section]
    figures: dict[str, bytes]  # name -> PNG
    samples: list[dict[str, Any]]
    sample_split: str


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def pct_se(mean: float, se: float | None) -> str:
    return f"{100 * mean:.2f}" if se is None else f"{100 * mean:.2f} ± {100 * se:.2f}"


def num(x: Any, digits: int = 1) -> str:
    """Integers with thousands separators, floats with `digits` decimals, missing as a dash."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def params_text(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "–"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def _accuracy_section(rows: list[AccuracyRow], split: str) -> Section:
    seeds = sorted({s for r in rows for s in r.seeds})
    headers = ["task", "method", "train fraction", "student params", "seeds", f"{split} acc % (mean ± se)"]
    headers += [f"seed {s}" for s in seeds] + ["teacher %"]
    table = Table(headers, [])
    for r in rows:
        cells = [r.task, r.method, f"{r.fraction:g}", params_text(r.params), str(r.stat.n)]
        cells.append(pct_se(r.stat.mean, r.stat.se))
        cells += [pct(r.seeds.get(s)) for s in seeds]
        cells.append(pct(r.teacher))
        table.rows.append(cells)
    return Section(
        f"Accuracy ({split})",
        "Student accuracy per method, mean ± standard error over seeds; the teacher's accuracy on the "
        "same examples is the dashed reference line.",
        [table],
        figure=f"accuracy_{split}",
    )


def _speed_section(runs: list[RunData]) -> Section | None:
    rows = speed_rows(runs)
    if not rows:
        return None
    headers = [
        "",
        "model",
        "work per example",
        "params",
        "ms / example",
        "examples / s",
        "device",
        "speed-up",
    ]
    table = Table(headers, [])
    for r in rows:
        speedup = "–" if r["speedup"] is None else f"{r['speedup']:,.1f}×"
        table.rows.append(
            [
                r["who"],
                r["name"],
                r["what"],
                params_text(r["params"]),
                num(r["ms_per_example"], 2),
                num(r["examples_per_s"], 1),
                num(r["device"]),
                speedup,
            ]
        )
    return Section(
        "Cost and speed",
        "The student predicts the label alone; the teacher generates a chain of thought. Both timed "
        "on the machine that ran the report's runs (speed-up = teacher ms / student ms).",
        [table],
        figure="speed",
    )


def _annotation_section(runs: list[RunData]) -> Section | None:
    rows = annotation_rows(runs)
    if not rows:
        return None
    quality = Table(
        [
            "run",
            "split",
            "teacher",
            "examples",
            "teacher acc %",
            "correct / n",
            "parse failures",
            "filtered",
            "failures",
        ],
        [],
    )
    cost = Table(
        [
            "run",
            "split",
            "requests",
            "cache hits",
            "prompt tokens",
            "completion tokens",
            "cost $",
            "wall s",
            "tokens / s",
        ],
        [],
    )
    for r in rows:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(r["failure_kinds"].items()) if v)
        quality.rows.append(
            [
                r["run"],
                r["split"],
                num(r["teacher_model"]),
                num(r["examples"]),
                pct(r["teacher_accuracy"]),
                f"{num(r['teacher_correct'])} / {num(r['teacher_n'])}",
                num(r["parse_failures"]),
                num(r["filtered"]),
                f"{num(r['failures'])}" + (f" ({kinds})" if kinds else ""),
            ]
        )
        cost.rows.append(
            [
                r["run"],
                r["split"],
                num(r["requests"]),
                num(r["cache_hits"]),
                num(r["prompt_tokens"]),
                num(r["completion_tokens"]),
                num(r["cost_usd"], 4),
                num(r["wall_s"], 1),
                num(r["tokens_per_s"], 1),
            ]
        )
    return Section(
        "Teacher annotation",
        "Teacher quality against the gold labels (examples whose completion did not parse, or whose "
        "rationale was filtered out, are not used as rationale targets), then what annotating cost.",
        [quality, cost],
    )


def build_content(runs: list[RunData], sample_size: int = 20) -> Report:
    """Compute every section and figure of the report from collected runs."""
    trainings = all_trainings(runs)
    splits = splits_present(trainings)
    figures: dict[str, bytes | None] = {}
    sections: list[Section] = []
    for split in splits:
        rows = accuracy_rows(trainings, split)
        sections.append(_accuracy_section(rows, split))
        figures[f"accuracy_{split}"] = plots.accuracy_figure(rows, split)
        if split == splits[0]:
            figures["efficiency"] = plots.efficiency_figure(rows, split)
            if figures["efficiency"]:
                sections.append(
                    Section(
                        "Data efficiency",
                        f"{split} accuracy against the fraction of the training set used, per method.",
                        figure="efficiency",
                    )
                )
    figures["curves"] = plots.curves_figure(trainings)
    if figures["curves"]:
        sections.append(
            Section("Training curves", "Label loss, rationale loss and validation accuracy.", figure="curves")
        )
    speed = _speed_section(runs)
    if speed:
        figures["speed"] = plots.speed_figure(speed_rows(runs))
        sections.append(speed)
    annotation = _annotation_section(runs)
    if annotation:
        sections.append(annotation)
    sample_split = "test" if "test" in splits else (splits[0] if splits else "test")
    tasks = sorted({t.task for t in trainings})
    return Report(
        title=f"stepdistill report: {', '.join(tasks)}",
        runs=[str(r.path) for r in runs],
        sections=sections,
        figures={k: v for k, v in figures.items() if v},
        samples=sample_examples(trainings, sample_split, sample_size),
        sample_split=sample_split,
    )
