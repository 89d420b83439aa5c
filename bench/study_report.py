"""The study grid's report (bench/configs/study.yaml): for each (task, train fraction) setting, the
test accuracy of every method when it stopped (patience or the step cap), the paper's comparisons and
the variants against their baselines with paired 95% intervals, at the end (test rows) and at matched training compute
(validation rows, report/curves.py), and a figure of validation accuracy against examples seen and
against training FLOPs.

Used by `bench/quality.py --config study` (and `--report`); reads only the results file and the
cells' run folders.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from compare import compare_cells, interval_cell

from stepdistill.report.curves import compare_matched, matched_verdict
from stepdistill.report.stats import mean_se

TITLES = {
    "standard": "standard fine-tuning (gold labels)",
    "sbs_gold": "step-by-step, gold labels + PaLM rationales",
    "distill": "distillation (PaLM labels)",
    "sbs_teacher": "step-by-step, PaLM labels + rationales",
    "sbs_ramp": "step-by-step, PaLM labels, alpha 0.5 -> 1",
    "answer_first": "answer-first (PaLM label, then rationale)",
}
# (A, B): with gold labels; without gold labels; the variants against distillation and step-by-step.
PAIRS = (
    ("sbs_gold", "standard"),
    ("sbs_teacher", "distill"),
    ("sbs_ramp", "distill"),
    ("answer_first", "distill"),
    ("sbs_ramp", "sbs_teacher"),
    ("answer_first", "sbs_teacher"),
)


def _settings(spec: dict[str, Any]) -> list[tuple[str, float]]:
    return [(s["task"], float(s.get("fraction", 1.0))) for s in spec["settings"]]


def _cells(results: dict[str, Any], task: str, fraction: float, method: str) -> list[dict[str, Any]]:
    cells = [
        c for c in results["cells"].values()
        if (c["task"], float(c["fraction"]), c["method"]) == (task, fraction, method)
    ]  # fmt: skip
    return sorted(cells, key=lambda c: c["seed"])


def _mean_se(values: list[float]) -> str:
    s = mean_se(values)
    if s.se is None:
        return f"{s.mean:.1f} (1 seed)"
    return f"{s.mean:.1f} ± {s.se:.1f} ({s.n} seeds)"


def _valid_teacher(cells: list[dict[str, Any]]) -> float | None:
    """The teacher's accuracy on the validation rows, from a cell's metrics.json."""
    for c in cells:
        path = Path(c.get("run_dir", "")) / "metrics.json"
        if path.is_file():
            acc = json.loads(path.read_text())["splits"].get("valid", {}).get("teacher_accuracy")
            if acc is not None:
                return 100 * acc
    return None


def _pflops(x: float | None) -> str:
    return "-" if x is None else f"{x / 1e15:.2f}"


def _matched_cell(p: dict[str, Any]) -> str:
    flops = f"{statistics.fmean(p['a_flops']) / 1e15:.3f} / {statistics.fmean(p['b_flops']) / 1e15:.3f}"
    steps = f"{'/'.join(map(str, p['a_steps']))} / {'/'.join(map(str, p['b_steps']))}"
    return f"{flops}: {100 * p['a']:.1f} vs {100 * p['b']:.1f}, {interval_cell(p['ci'])} ({steps})"


def setting_lines(spec, results, task: str, fraction: float, teacher_test: float | None) -> list[str]:
    methods = [m for m in spec["methods"] if _cells(results, task, fraction, m)]
    if not methods:
        return []
    lines = [
        "",
        f"#### {task.upper()}, {fraction:.1%} of the training set",
        "",
        f"Teacher ({spec.get('teacher_name', 'PaLM 540B')}) on test: {teacher_test:.1f}%."
        if teacher_test is not None
        else "",
        "",
        "| method | test accuracy % (checkpoint chosen on validation) | steps run (best at) | stopped by patience (else the cap) | "
        "train PFLOPs to the end | wall min |",
        "|---|---:|---|---|---:|---:|",
    ]
    for m in methods:
        cells = _cells(results, task, fraction, m)
        steps = ", ".join(f"{c['steps']} ({c.get('best_step')})" for c in cells)
        stops = ", ".join("yes" if c.get("stopped_early") else "no (cap)" for c in cells)
        flops = statistics.fmean([c.get("train_flops") or 0 for c in cells])
        wall = sum(c["cell_wall_s"] for c in cells) / 60
        lines.append(
            f"| {TITLES.get(m, m)} | {_mean_se([100 * c['test_accuracy'] for c in cells])} | {steps} | "
            f"{stops} | {_pflops(flops)} | {wall:.0f} |"
        )
    rows = []
    for a, b in spec.get("pairs", PAIRS):  # a study config may name its own (A, B) pairs
        ca, cb = _cells(results, task, fraction, a), _cells(results, task, fraction, b)
        seeds = sorted({c["seed"] for c in ca} & {c["seed"] for c in cb})
        ca, cb = [c for c in ca if c["seed"] in seeds], [c for c in cb if c["seed"] in seeds]
        if not seeds:
            continue
        names = (TITLES.get(a, a), TITLES.get(b, b))
        conv = compare_cells(ca, cb, names)
        curves_a, curves_b = [c.get("curve") or [] for c in ca], [c.get("curve") or [] for c in cb]
        points = compare_matched(curves_a, curves_b)
        at_budget = " · ".join(_matched_cell(p) for p in points) or "-"
        words = matched_verdict(*names, points) if points else "-"
        rows.append(
            f"| {names[0]} | {names[1]} | {interval_cell(conv['ci'])} | {conv['verdict']} | {at_budget} | {words} |"
        )
    if not rows:
        return lines + ["", "No comparison yet: no compared pair has both its methods run on a common seed."]
    head = (
        "| A | B | at the end of training: A − B on test [95% paired interval] | reading | at matched compute "
        "(validation): PFLOPs A / B, A % vs B %, A − B [95%] (steps A / B) | reading |"
    )
    return lines + ["", head, "|---|---|---:|---|---|---|", *rows]


def study_markdown(spec, results, teacher: dict[str, float], command: str, figure: str | None) -> str:
    tr = spec["train"]
    student = spec.get("student", {})
    layers = student.get("keep_layers")
    kept = f"({len(layers)} decoder layers kept of {student.get('model')})" if layers else "(every layer)"
    lines = [
        f"## When does step-by-step pay off? (config `{spec['name']}`)",
        "",
        f"Command: `{command}`. Student: {student.get('name') or student.get('model')} {kept}, "
        f"batch {tr['batch_size']}, "
        f"lr {tr['lr']}, evaluated on a geometric schedule from step {tr['eval_every']} (x{tr.get('eval_growth')}), "
        f"stopped after {tr.get('patience')} evaluations without progress ({tr.get('patience_metric', 'accuracy')}), "
        f"capped at {tr['max_steps']} steps (per task: {spec.get('task_train', {})}); per-task evaluation: "
        f"{spec.get('task_eval') or 'none'} (rank: the most likely of the question's choices). Test accuracy is the "
        "checkpoint chosen on validation. Intervals: paired bootstrap over rows (seeds averaged per row); "
        "'A beats B' only when the interval excludes 0. Matched compute: each method's last evaluation "
        "within the smallest training FLOPs any compared run reached (a step-by-step step costs about "
        "twice a label-only one); evaluations fall at discrete steps, so the side evaluated earlier may "
        "have used less compute: a second comparison (after ·) is made at the compute that side used, "
        "where the other falls back to an earlier evaluation, and a winner is named only when both agree.",
    ]
    if figure:
        lines += ["", f"![validation accuracy against examples seen and against training FLOPs]({figure})", "",
                  "*Read: top row, which method learned more from the same examples; bottom row, "
                  "which learned more for the same compute; the dashed line is the teacher on the "
                  "same rows.*"]  # fmt: skip
    for task, fraction in _settings(spec):
        lines += setting_lines(spec, results, task, fraction, teacher.get(task))
    return "\n".join(lines)


AXES = (  # (curve key, scale, x label): accuracy against data seen, then against compute spent
    ("examples_seen", 1.0, "training examples seen"),
    ("train_flops", 1e15, "training PFLOPs"),
)


def study_figure(spec, results, out: Path) -> Path | None:
    """Validation accuracy (%) against training examples seen (top row) and training PFLOPs
    (bottom row), one column per setting, one line per method and seed, the teacher's validation
    accuracy dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in _settings(spec) if any(_cells(results, *s, m) for m in spec["methods"])]
    if not settings:
        return None
    n = len(settings)
    fig, axes = plt.subplots(len(AXES), n, figsize=(5.2 * n + 2.2, 3.4 * len(AXES)), squeeze=False)
    colours = plt.get_cmap("tab10")
    for col, (task, fraction) in enumerate(settings):
        for row, (key, scale, xlabel) in enumerate(AXES):
            ax = axes[row][col]
            all_cells = []
            for i, m in enumerate(spec["methods"]):
                cells = _cells(results, task, fraction, m)
                for c in cells:
                    all_cells.append(c)
                    pts = [(p[key] / scale, 100 * p["valid_accuracy"]) for p in c.get("curve") or []
                           if p.get(key) is not None]  # fmt: skip
                    if pts:
                        first = c["seed"] == min(x["seed"] for x in cells)
                        ax.plot(*zip(*pts), marker=".", color=colours(i), alpha=0.85,
                                label=TITLES.get(m, m) if first else None)  # fmt: skip
            t = _valid_teacher(all_cells)
            if t is not None:
                ax.axhline(t, color="black", ls="--", lw=1, label="teacher (PaLM 540B)")
            ax.set_title(f"{task.upper()}, {fraction:.1%} of train", fontsize=10)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation accuracy (%)")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.80, 0.5), fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.79, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")  # the legend sits right of the panels
    plt.close(fig)
    tmp.replace(out)
    return out
