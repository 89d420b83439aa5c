"""The report's figures as PNG bytes (matplotlib's object API: no pyplot state, no display needed).

Each function returns None when there is nothing to draw, so renderers simply skip the figure.
"""

from __future__ import annotations

import io
import textwrap

from matplotlib.figure import Figure

from stepdistill.report.collect import Training
from stepdistill.report.stats import AccuracyRow, base_method, method_key

# One fixed colour per method so every figure of a report agrees.
_COLOURS = {
    "standard": "#7f7f7f",
    "distill": "#1f77b4",
    "step_by_step": "#d62728",
    "single_task": "#2ca02c",
    "answer_first": "#17becf",
    "rationale_input": "#9467bd",
}
# Rationale methods trained on gold labels: a darker shade of the method's colour.
_GOLD_COLOURS = {
    "step_by_step": "#8c1010",
    "single_task": "#145a14",
    "answer_first": "#0e6f78",
    "rationale_input": "#4b2c6f",
}
TEACHER_COLOUR = "#ff7f0e"


def colour(method: str) -> str:
    """Colour of a method or variant ("step_by_step (gold labels)")."""
    base = base_method(method)
    if "(gold labels" in method and base in _GOLD_COLOURS:
        return _GOLD_COLOURS[base]
    return _COLOURS.get(base, "#8c564b")


def _tick(name: str) -> str:
    return textwrap.fill(name, 16)


def _legend_outside(ax, **kw) -> None:
    """Legend to the right of the axes, so it never covers a bar or a line."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, borderaxespad=0.0, **kw)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return buf.getvalue()


def accuracy_figure(rows: list[AccuracyRow], split: str) -> bytes | None:
    """Bars: mean accuracy per method (largest fraction) with standard-error bars, seeds as dots."""
    panels = sorted({(r.task, r.student) for r in rows})
    if not panels:
        return None
    widest = max(sum(1 for r in rows if (r.task, r.student) == p) for p in panels)
    fig = Figure(figsize=(len(panels) * max(3.0, 1.1 * widest + 1.0) + 1.8, 3.8))
    for i, (task, student) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        full = max(r.fraction for r in rows if (r.task, r.student) == (task, student))
        group = sorted(
            (r for r in rows if (r.task, r.student) == (task, student) and r.fraction == full),
            key=lambda r: method_key(r.method),
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
            if i == len(panels):
                _legend_outside(ax)
        for x, r in zip(xs, group):  # the value above each bar, clear of its error bar
            top = 100 * (r.stat.mean + (r.stat.se or 0))
            ax.text(x, top + 1.5, f"{100 * r.stat.mean:.1f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs), [_tick(r.method) for r in group], fontsize=7)
        ax.set_ylabel(f"{split} accuracy (%)")
        title = task if len({p[1] for p in panels}) < 2 else f"{task}, {student}"
        ax.set_title(title if full == 1.0 else f"{title} (train fraction {full:g})", fontsize=10)
        ax.set_ylim(0, 110)  # room above a full bar for its value
        ax.set_yticks(range(0, 101, 20))
    return _png(fig)


def curves_figure(trainings: list[Training], teacher_valid: float | None = None) -> bytes | None:
    """Label loss, rationale loss and validation accuracy against step, one line per training, and
    validation accuracy against training FLOPs (the compute each method spent; a step-by-step step
    costs about two label-only steps) with the teacher's validation accuracy dashed."""
    if not any(t.train_rows or t.eval_rows for t in trainings):
        return None
    fig = Figure(figsize=(14, 3.2))
    panels = [
        ("label_loss", "label loss"),
        ("rationale_loss", "rationale loss"),
        ("valid_accuracy", "valid acc (%)"),
        ("valid_accuracy", "valid acc (%) against compute"),
    ]
    axes = [fig.add_subplot(1, 4, i) for i in (1, 2, 3, 4)]
    by_flops = axes[3]
    labelled: set[str] = set()
    for t in sorted(trainings, key=lambda t: (method_key(t.variant), t.student, t.fraction, t.seed)):
        for ax, (key, _) in zip(axes, panels):
            rows = t.eval_rows if key == "valid_accuracy" else t.train_rows
            x = "train_flops" if ax is by_flops else "step"
            pts = [(r[x], r[key]) for r in rows if r.get(key) is not None and r.get(x) is not None]
            if ax is by_flops:
                pts = [(f / 1e12, v) for f, v in pts]  # TFLOPs
            if not pts or (key == "rationale_loss" and not any(p[1] for p in pts)):
                continue  # methods without rationale rows log a rationale loss of exactly 0
            scale = 100.0 if key == "valid_accuracy" else 1.0
            name = t.variant if len({x.student for x in trainings}) < 2 else f"{t.student}: {t.variant}"
            label = name if name not in labelled else None
            labelled.add(name)
            ax.plot(
                [p[0] for p in pts],
                [scale * p[1] for p in pts],
                color=colour(t.variant),
                alpha=0.8,
                lw=1.2,
                marker="." if key == "valid_accuracy" else None,
                label=label,
            )
    if teacher_valid is not None:
        for ax in axes[2:]:
            ax.axhline(100 * teacher_valid, color="black", ls="--", lw=1, label="teacher")
    for ax, (_, title) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training TFLOPs" if ax is by_flops else "step")
    if labelled:
        handles, labels = axes[0].get_legend_handles_labels()
        for ax in axes[1:]:  # methods without a label loss still have curves elsewhere
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        axes[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
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
    _legend_outside(ax)
    return _png(fig)


def _size_axis(ax, label: str) -> None:
    """Log scale when the values span a factor of 10 or more; plain numbers (42.5M, 250) either way."""
    from matplotlib.ticker import EngFormatter, NullFormatter

    lo, hi = ax.get_xlim()
    if lo > 0 and hi / lo >= 10:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        label += " (log scale)"
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_xlabel(label)


def sizes_figure(rows: list[AccuracyRow], split: str, teacher: dict) -> bytes | None:
    """Accuracy against student parameters and against label-only ms per example, one line per
    method, the teacher's accuracy as a dashed reference line (and its own point where measured)."""
    rows = [r for r in rows if r.params]
    if len({r.student for r in rows}) < 2:
        return None
    fig = Figure(figsize=(10, 3.6))
    axes = [fig.add_subplot(1, 2, i) for i in (1, 2)]
    acc = next((r.teacher for r in rows if r.teacher is not None), None)
    for method in sorted({r.method for r in rows}, key=method_key):
        group = sorted((r for r in rows if r.method == method), key=lambda r: r.params)
        ys = [100 * r.stat.mean for r in group]
        err = [100 * (r.stat.se or 0) for r in group]
        style = dict(color=colour(method), marker="o", capsize=3, label=method)
        axes[0].errorbar([r.params for r in group], ys, yerr=err, **style)
        timed = [(r.ms_per_example, y, e) for r, y, e in zip(group, ys, err) if r.ms_per_example]
        if timed:
            axes[1].errorbar(*zip(*[(t[0], t[1]) for t in timed]), yerr=[t[2] for t in timed], **style)
    for ax, key, xlabel in (
        (axes[0], "params", "student parameters"),
        (axes[1], "ms_per_example", "label-only ms per example"),
    ):
        if acc is not None:
            ax.axhline(100 * acc, color=TEACHER_COLOUR, ls="--", label=f"teacher {100 * acc:.1f}%")
            if teacher.get(key):
                ax.plot([teacher[key]], [100 * acc], "*", color=TEACHER_COLOUR, ms=12, label="teacher itself")
        _size_axis(ax, xlabel)
        ax.set_ylabel(f"{split} accuracy (%)")
        ax.set_ylim(0, 100)
    _legend_outside(axes[1])
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
