"""What the report says, independent of format: sections of tables (cells already as text) and figures.

render_md.py and render_html.py only lay these out, so the Markdown and the HTML always agree.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from stepdistill.report import plots, rationales, story
from stepdistill.report.collect import RunData, all_trainings
from stepdistill.report.compare import Comparison, MatchedComparison, at_matched_compute, comparisons
from stepdistill.report.deploy import HEADERS, deploy_reading, deploy_rows
from stepdistill.report.stats import (
    AccuracyRow,
    accuracy_rows,
    annotation_rows,
    sample_examples,
    speed_rows,
    splits_present,
    teacher_accuracy,
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
    caption: str = ""  # one line under the figure: what to read in it


@dataclass
class Report:
    title: str
    runs: list[str]
    sections: list[Section]
    figures: dict[str, bytes]  # name -> PNG
    samples: list[dict[str, Any]]
    sample_split: str
    summary: list[str] = field(default_factory=list)  # opening paragraphs (**bold** allowed)


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
    headers = ["task", "student", "method", "train fraction", "student params", "seeds"]
    headers += [f"{split} acc % (mean ± se)"] + [f"seed {s}" for s in seeds] + ["teacher %"]
    table = Table(headers, [])
    for r in rows:
        cells = [r.task, r.student, r.method, f"{r.fraction:g}", params_text(r.params), str(r.stat.n)]
        cells.append(pct_se(r.stat.mean, r.stat.se))
        cells += [pct(r.seeds.get(s)) for s in seeds]
        cells.append(pct(r.teacher))
        table.rows.append(cells)
    return Section(
        f"Accuracy ({split})",
        "Student accuracy per method, mean ± standard error over seeds (a single seed has no error "
        "bar); the comparisons section says which differences the data can carry.",
        [table],
        figure=f"accuracy_{split}",
        caption="Read: bar height is accuracy, dots are single seeds, and the dashed line is the "
        "teacher on the same examples; bars closer than their intervals are not different.",
    )


def _comparison_section(comps: list[Comparison], split: str) -> Section | None:
    if not comps:
        return None
    headers = ["setting", "student", "train fraction", "A", "B", "A %", "B %"]
    headers += ["A − B, points [95% interval]", "A − B over seeds", "McNemar per seed", "reading"]
    table = Table(headers, [])
    for c in comps:
        tests = "; ".join(f"s{s}: {x}/{y}, p={p:.3g}" for s, x, y, p in c.mcnemar)
        table.rows.append(
            [
                c.setting,
                c.student,
                f"{c.fraction:g}",
                c.a,
                c.b,
                pct_se(c.a_acc.mean, c.a_acc.se),
                pct_se(c.b_acc.mean, c.b_acc.se),
                f"{100 * c.ci.diff:+.1f} [{100 * c.ci.lo:+.1f}, {100 * c.ci.hi:+.1f}]",
                f"{100 * c.diff.mean:+.1f}" + ("" if c.diff.se is None else f" ± {100 * c.diff.se:.1f}"),
                tests,
                c.verdict,
            ]
        )
    return Section(
        f"Comparisons ({split}, paired on the same examples)",
        "Each row pairs two methods on the same test examples. The interval is a paired bootstrap "
        "(10,000 resamples of the examples, fixed seed) of the accuracy difference averaged over "
        "seeds; 'A beats B' is written only when it excludes 0. McNemar: examples only A got right / "
        "only B got right, exact two-sided p, per seed. Over seeds: mean ± standard error of A − B.",
        [table],
    )


def _matched_section(found: list[MatchedComparison]) -> Section | None:
    if not found:
        return None
    headers = ["setting", "student", "train fraction", "A", "B", "training TFLOPs A / B", "A %", "B %"]
    headers += ["A − B, points [95% interval]", "steps A / B", "reading"]
    table = Table(headers, [])
    for m in found:
        for p in m.points:
            flops = (
                f"{statistics.fmean(p['a_flops']) / 1e12:,.1f} / {statistics.fmean(p['b_flops']) / 1e12:,.1f}"
            )
            ci = p["ci"]
            table.rows.append(
                [
                    m.setting,
                    m.student,
                    f"{m.fraction:g}",
                    m.a,
                    m.b,
                    flops,
                    pct(p["a"]),
                    pct(p["b"]),
                    f"{100 * ci.diff:+.1f} [{100 * ci.lo:+.1f}, {100 * ci.hi:+.1f}]",
                    f"{'/'.join(map(str, p['a_steps']))} / {'/'.join(map(str, p['b_steps']))}",
                    m.verdict,
                ]
            )
    return Section(
        "Comparisons at matched training compute (validation)",
        "The same pairs at equal training FLOPs, paired on the validation examples (seeds averaged per "
        "example, paired bootstrap 95% interval). First row of a pair: each training's last evaluation "
        "within the largest budget every one of them reached. Evaluations fall at discrete steps, so "
        "one side may then have used less compute than the other; the second row compares again at "
        "the compute that side used, where the other falls back to an earlier evaluation. A winner is "
        "named only when both rows agree. A step-by-step step costs about twice a label-only one, so "
        "at the same compute it has taken about half the steps (per seed, in the steps column).",
        [table],
    )


def _sizes_section(rows: list[AccuracyRow], split: str) -> Section | None:
    rows = story.size_rows(rows)
    if not rows:
        return None
    table = Table(
        ["student", "params", "method", f"{split} acc % (mean ± se)", "ms / example", "teacher %"], []
    )
    for r in rows:
        table.rows.append(
            [
                r.student,
                params_text(r.params),
                r.method,
                pct_se(r.stat.mean, r.stat.se),
                num(r.ms_per_example, 2),
                pct(r.teacher),
            ]
        )
    return Section(
        "Student size",
        "How small can the student be and still match the teacher? Accuracy of every student against "
        "its parameters and its label-only time per example.",
        [table],
        figure="sizes",
        caption="Read: where a method's line reaches the teacher's dashed line, that student size "
        "matches the teacher on these examples; the right panel shows what each size costs per example.",
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
        caption="Read: shorter bars are faster; the teacher's bar is the per-example cost a student replaces.",
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


def _rationale_sections(trainings, runs: list[RunData]) -> list[Section]:
    """What the students trained on of the rationales, and the teacher's vote against samples."""
    out = []
    kept = rationales.kept_table(trainings)
    if kept:
        out.append(Section(
            "Rationales trained on",
            "Per student: how many examples had 0, 1, 2, ... rationales (train.rationales), the rationale "
            "rows that made, the share of examples with one, their length in student tokens, and the "
            "mean agreement of the teacher's vote on the examples trained (teacher samples only).",
            [Table(*kept)],
        ))  # fmt: skip
    votes = rationales.vote_table(runs)
    if votes:
        out.append(Section(
            "Teacher vote against samples",
            "From one annotation with k samples per example: the majority vote of the first j samples "
            "scored against gold, and the share of examples with at least one right sample among them "
            "(the examples the gold-label setting can give a correct rationale).",
            [Table(*votes)],
        ))  # fmt: skip
    return out


def build_content(runs: list[RunData], sample_size: int = 20) -> Report:
    """Compute every section and figure of the report from collected runs."""
    trainings = all_trainings(runs)
    splits = splits_present(trainings)
    figures: dict[str, bytes | None] = {}
    sections: list[Section] = []
    comps = comparisons(trainings, splits[0]) if splits else []
    matched = at_matched_compute(trainings, splits[0]) if splits else []
    for split in splits:
        rows = accuracy_rows(trainings, split)
        sections.append(_accuracy_section(rows, split))
        figures[f"accuracy_{split}"] = plots.accuracy_figure(rows, split)
        if split == splits[0]:
            at_compute = _matched_section(matched)
            sections += [
                s for s in (_comparison_section(comps, split), at_compute, _sizes_section(rows, split)) if s
            ]
            figures["sizes"] = plots.sizes_figure(story.size_rows(rows), split, story.teacher_reference(runs))
            figures["efficiency"] = plots.efficiency_figure(rows, split)
            if figures["efficiency"]:
                sections.append(
                    Section(
                        "Data efficiency",
                        f"{split} accuracy against the fraction of the training set used, per method.",
                        figure="efficiency",
                        caption="Read: a line above another at the same fraction learns more from "
                        "the same examples; compare the gap with the error bars.",
                    )
                )
    figures["curves"] = plots.curves_figure(trainings, teacher_accuracy(trainings, "valid"))
    if figures["curves"]:
        sections.append(
            Section(
                "Training curves",
                "Label loss, rationale loss and validation accuracy against step, and validation "
                "accuracy against the training compute each method spent (dashed: the teacher).",
                figure="curves",
                caption="Read: validation accuracy should level off before the last step; if it is "
                "still rising, the students were stopped early. In the last panel, the higher line "
                "at the same compute is the better use of it.",
            )
        )
    speed = _speed_section(runs)
    if speed:
        figures["speed"] = plots.speed_figure(speed_rows(runs))
        sections.append(speed)
    deploy = deploy_rows(runs)
    if deploy:
        sections.append(
            Section(
                "Deploy",
                "The student exported by `stepdistill export` to GGUF and run by llama.cpp on the same "
                "test rows, one example at a time, with the student's label-only prompt and greedy "
                "decoding; Δ pairs each file with the PyTorch student on those rows (bootstrap 95% "
                "interval, exact McNemar p). Read: " + deploy_reading(runs),
                [Table(HEADERS, deploy)],
            )
        )
    annotation = _annotation_section(runs)
    if annotation:
        sections.append(annotation)
    sections += _rationale_sections(trainings, runs)
    sample_split = "test" if "test" in splits else (splits[0] if splits else "test")
    tasks = sorted({t.task for t in trainings})
    return Report(
        title=f"stepdistill report: {', '.join(tasks)}",
        runs=[str(r.path) for r in runs],
        sections=sections,
        figures={k: v for k, v in figures.items() if v},
        samples=sample_examples(trainings, sample_split, sample_size),
        sample_split=sample_split,
        summary=story.summary(runs, trainings, comps, matched),
    )
