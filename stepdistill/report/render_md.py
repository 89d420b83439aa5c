"""Render a report as Markdown; figures are PNG files beside report.md, linked relatively."""

from __future__ import annotations

from stepdistill.report.content import Report, Table


def _cell(text: str) -> str:
    # A pipe would end the cell and a newline the row; both appear in model output.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table_md(table: Table) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in table.headers) + " |"]
    lines.append("|" + "---|" * len(table.headers))
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _mark(correct: object) -> str:
    if correct is None:
        return ""
    return "✓" if correct else "✗"


def _samples_md(report: Report) -> list[str]:
    out = [f"## Sample of {report.sample_split} examples", ""]
    for ex in report.samples:
        out.append(f"### {_cell(str(ex['id']))}")
        out.append("")
        out.append("```text\n" + str(ex["input"]).replace("```", "'''") + "\n```")
        out.append("")
        out.append(f"- gold: `{_cell(str(ex['gold']))}`")
        out.append(
            f"- teacher: `{_cell(str(ex['teacher_label']))}` {_mark(ex['teacher_correct'])}"
            f" — {_cell(str(ex['teacher_rationale'] or ''))}"
        )
        for method, ans in ex["answers"].items():
            line = f"- {method}: `{_cell(str(ans['pred']))}` {_mark(ans['correct'])}"
            if ans.get("rationale"):
                line += f" — {_cell(str(ans['rationale']))}"
            out.append(line)
        out.append("")
    return out


def render_md(report: Report, figure_files: dict[str, str]) -> str:
    """Markdown text; `figure_files` maps figure names to paths relative to report.md."""
    out = [f"# {report.title}", ""]
    for paragraph in report.summary:
        out += [paragraph, ""]
    out += ["Runs: " + ", ".join(f"`{r}`" for r in report.runs), ""]
    for section in report.sections:
        out += [f"## {section.title}", ""]
        if section.intro:
            out += [section.intro, ""]
        if section.figure in figure_files:
            out += [f"![{section.title}]({figure_files[section.figure]})", ""]
            if section.caption:
                out += [f"*{section.caption}*", ""]
        for table in section.tables:
            out += [table_md(table), ""]
    if report.samples:
        out += _samples_md(report)
    return "\n".join(out).rstrip() + "\n"
