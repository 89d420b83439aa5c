"""Render a report as ONE self-contained HTML file: inline CSS, figures as base64 PNG, no scripts.

Nothing is fetched when the page is viewed, so it can be mailed or archived as a single file. Every
piece of text, model output included, goes through html.escape.
"""

from __future__ import annotations

import base64
import re
from html import escape

from stepdistill.report.content import Report, Table

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 70rem;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2), th { text-align: left; }
img { max-width: 100%; display: block; margin: 0.8rem 0; }
.runs { color: #666; font-size: 0.85rem; }
.example { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 0.9rem; margin: 0.8rem 0; }
.example pre { white-space: pre-wrap; background: #f8f8f8; padding: 0.4rem; margin: 0.3rem 0; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
.why { color: #555; font-size: 0.9rem; }
.caption { color: #444; font-style: italic; font-size: 0.9rem; margin-top: -0.4rem; }
.summary { font-size: 1.02rem; }
"""


def _paragraph(text: str) -> str:
    """Escaped text with **bold** spans (the only markup the summary uses)."""
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escape(text))


def table_html(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(name: str, png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" data-figure="{escape(name)}" src="data:image/png;base64,{data}">'


def _mark(correct: object) -> str:
    if correct is None:
        return ""
    return '<span class="ok">✓ right</span>' if correct else '<span class="bad">✗ wrong</span>'


def _example_html(ex: dict) -> str:
    rows = [f"<tr><th>gold</th><td><code>{escape(str(ex['gold']))}</code></td><td></td></tr>"]
    rationale = ex.get("teacher_rationale") or ""
    rows.append(
        f"<tr><th>teacher</th><td><code>{escape(str(ex['teacher_label']))}</code> "
        f'{_mark(ex["teacher_correct"])}</td><td class="why">{escape(str(rationale))}</td></tr>'
    )
    for method, ans in ex["answers"].items():
        why = escape(str(ans.get("rationale") or ""))
        rows.append(
            f"<tr><th>{escape(method)}</th><td><code>{escape(str(ans['pred']))}</code> "
            f'{_mark(ans["correct"])}</td><td class="why">{why}</td></tr>'
        )
    return (
        f'<div class="example"><b>{escape(str(ex["id"]))}</b><pre>{escape(str(ex["input"]))}</pre>'
        f"<table>{''.join(rows)}</table></div>"
    )


def render_html(report: Report) -> str:
    """The whole page as a string."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        *(f'<p class="summary">{_paragraph(p)}</p>' for p in report.summary),
        '<p class="runs">Runs: ' + ", ".join(f"<code>{escape(r)}</code>" for r in report.runs) + "</p>",
    ]
    for section in report.sections:
        parts.append(f"<section><h2>{escape(section.title)}</h2>")
        if section.intro:
            parts.append(f"<p>{escape(section.intro)}</p>")
        if section.figure in report.figures:
            parts.append(_img(section.figure, report.figures[section.figure], section.title))
            if section.caption:
                parts.append(f'<p class="caption">{escape(section.caption)}</p>')
        parts += [table_html(t) for t in section.tables]
        parts.append("</section>")
    if report.samples:
        parts.append(f"<section><h2>Sample of {escape(report.sample_split)} examples</h2>")
        parts += [_example_html(ex) for ex in report.samples]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
