"""The report's figures as PNG bytes (matplotlib's object API: no pyplot state, no display needed).

Each function returns None when there is nothing to draw, so renderers simply skip the figure.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure

from stepdistill.report.collect import Training
from stepdistill.report.stats import AccuracyRow, method_key

# One fixed colour per method so every figure of a report agrees.
_COLOURS = {
    "standard": "#7f7f7f",
    "distill": "#1f77b4",
    "step_by_step": "#d62728",
    "single_task": "#2ca02c",
    "rationale_input": "#9467bd",
}
TEACHER_COLOUR = "#ff7f0e"


def colour(method: str) -> str:
    return _COLOURS.get(method, "#8c564b")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return buf.getvalue()


def accuracy_figure(rows: list[AccuracyRow], split: str) -> bytes | None:
    """Bars: mean accuracy per method (largest fraction) with standard-error bars, seeds as dots."""
    tasks = sorted({r.task for r in rows})
    if not tasks:
        return None
    fig = Figure(figsize=(max(4.5, 2.2 * len(tasks) + 2.5), 3.4))
    for i, task in enumerate(tasks, start=1):
        ax = fig.add_subplot(1, len(tasks), i)
        full = max(r.fraction for r in rows if r.task == task)
        group = sorted(
            (r for r in rows if r.task == task and r.fraction == full), key=lambda r: method_key(r.method)
        )
        xs = range(len(group))
        ax.bar(
            xs,
            [100 * r.stat.mean for r in group],
            yerr=[100 * (r.stat.se or 0) for r in group],
            color=[colour(r.method) for r in group],
            capsize=4,
        )
        for x, r in zip(xs, group):
            ax.plot([x] * len(r.seeds), [100 * v for v in r.seeds.values()], "k.", ms=5)
        teacher = next((r.teacher for r in group if r.teacher is not None), None)
        if teacher is not None:
            ax.axhline(100 * teacher, color=TEACHER_COLOUR, ls="--", label=f"teacher {100 * teacher:.1f}%")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xticks(list(xs), [r.method for r in group], rotation=15, fontsize=8)
        ax.set_ylabel(f"{split} accuracy (%)")
        ax.set_title(task if full == 1.0 else f"{task} (train fraction {full:g})", fontsize=10)
        ax.set_ylim(0, 100)
    return _png(fig)


def curves_figure(trainings: list[Training]) -> bytes | None:
    """Label loss, rationale loss and validation accuracy against step, one line per training."""
    if not any(t.train_rows or t.eval_rows for t in trainings):
        return None
    fig = Figure(figsize=(11, 3.2))
    panels = [
        ("label_loss", "label loss"),
        ("rationale_loss", "rationale loss"),
        ("valid_accuracy", "valid acc (%)"),
    ]
    axes = [fig.add_subplot(1, 3, i) for i in (1, 2, 3)]
    labelled: set[str] = set()
    for t in sorted(trainings, key=lambda t: (method_key(t.method), t.fraction, t.seed)):
        for ax, (key, _) in zip(axes, panels):
            rows = t.eval_rows if key == "valid_accuracy" else t.train_rows
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and r.get("step") is not None]
            if not pts or (key == "rationale_loss" and not any(p[1] for p in pts)):
                continue  # methods without rationale rows log a rationale loss of exactly 0
            scale = 100.0 if key == "valid_accuracy" else 1.0
            label = t.method if t.method not in labelled else None
            labelled.add(t.method)
            ax.plot(
                [p[0] for p in pts],
                [scale * p[1] for p in pts],
                color=colour(t.method),
                alpha=0.8,
                lw=1.2,
                marker="." if key == "valid_accuracy" else None,
                label=label,
            )
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    if labelled:
        axes[0].legend(fontsize=8)
    return _png(fig)


def efficiency_figure(rows: list[AccuracyRow], split: str) -> bytes | None:
    """Accuracy against training-set fraction per method; only when more than one fraction ran."""
    if len({r.fraction for r in rows}) < 2:
        return None
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for method in sorted({r.method for r in rows}, key=method_key):
        group = sorted((r for r in rows if r.method == method), key=lambda r: r.fraction)
        ax.errorbar(
            [100 * r.fraction for r in group],
            [100 * r.stat.mean for r in group],
            yerr=[100 * (r.stat.se or 0) for r in group],
            color=colour(method),
            marker="o",
            capsize=3,
            label=method,
        )
    teacher = next((r.teacher for r in rows if r.teacher is not None), None)
    if teacher is not None:
        ax.axhline(100 * teacher, color=TEACHER_COLOUR, ls="--", label="teacher")
    ax.set_xlabel("training examples used (%)")
    ax.set_ylabel(f"{split} accuracy (%)")
    ax.legend(fontsize=8)
    return _png(fig)


def speed_figure(rows: list[dict]) -> bytes | None:
    """Milliseconds per example on a linear axis, each bar labelled with its value: teacher chain of
    thought vs student label-only."""
    rows = [r for r in rows if r.get("ms_per_example")]
    if not rows:
        return None
    fig = Figure(figsize=(6.5, 0.5 * len(rows) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    names = [f"{r['who']}: {r['name']}" for r in rows]
    colours = [TEACHER_COLOUR if r["who"] == "teacher" else "#1f77b4" for r in rows]
    values = [r["ms_per_example"] for r in rows]
    bars = ax.barh(range(len(rows)), values, color=colours)
    ax.bar_label(bars, labels=[f"{v:,.1f} ms" for v in values], padding=3, fontsize=8)
    ax.set_xlim(0, 1.25 * max(values))  # room for the labels of the longest bar
    ax.set_yticks(list(range(len(rows))), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per example")
    return _png(fig)
