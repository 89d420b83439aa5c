"""Render a report as ONE self-contained HTML file: inline CSS, figures as base64 PNG, no scripts.

Nothing is fetched when the page is viewed, so it can be mailed or archived as a single file. The
page is a jinja2 template with autoescape on: every piece of text, model output included, is
escaped unless the code marks it safe (only the summary's **bold** spans, built from escaped text).
"""

from __future__ import annotations

import base64
import re

from jinja2 import Environment
from markupsafe import Markup, escape

from stepdistill.report.content import Report

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


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ r.title }}</title><style>{{ css }}</style></head><body>
<h1>{{ r.title }}</h1>
{% for p in summary %}<p class="summary">{{ p }}</p>
{% endfor %}<p class="runs">Runs: {% for run in r.runs %}<code>{{ run }}</code>{{ ", " if not loop.last }}{% endfor %}</p>
{% for s in r.sections %}<section><h2>{{ s.title }}</h2>
{% if s.intro %}<p>{{ s.intro }}</p>
{% endif %}{% if s.figure in figures %}<img alt="{{ s.title }}" data-figure="{{ s.figure }}" \
src="data:image/png;base64,{{ figures[s.figure] }}">
{% if s.caption %}<p class="caption">{{ s.caption }}</p>
{% endif %}{% endif %}{% for t in s.tables %}{{ table(t) }}
{% endfor %}</section>
{% endfor %}{% if r.samples %}<section><h2>Sample of {{ r.sample_split }} examples</h2>
{% for ex in r.samples %}<div class="example"><b>{{ ex.id }}</b><pre>{{ ex.input }}</pre><table>\
<tr><th>gold</th><td><code>{{ ex.gold }}</code></td><td></td></tr>\
<tr><th>teacher</th><td><code>{{ ex.teacher_label }}</code> {{ mark(ex.teacher_correct) }}</td>\
<td class="why">{{ ex.teacher_rationale or "" }}</td></tr>\
{% for method, ans in ex.answers.items() %}<tr><th>{{ method }}</th><td><code>{{ ans.pred }}</code> \
{{ mark(ans.correct) }}</td><td class="why">{{ ans.rationale or "" }}</td></tr>{% endfor %}</table></div>
{% endfor %}</section>
{% endif %}</body></html>
"""

_TABLE = """<table><thead><tr>{% for h in t.headers %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>\
{% for row in t.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>"""

_ENV = Environment(autoescape=True, keep_trailing_newline=True)


def _paragraph(text: str) -> Markup:
    """Escaped text with **bold** spans (the only markup the summary uses)."""
    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", str(escape(text))))


def _mark(correct: object) -> Markup:
    if correct is None:
        return Markup("")
    return Markup('<span class="ok">✓ right</span>' if correct else '<span class="bad">✗ wrong</span>')


def table_html(table) -> Markup:
    return Markup(_ENV.from_string(_TABLE).render(t=table))


def render_html(report: Report) -> str:
    """The whole page as a string."""
    figures = {name: base64.b64encode(png).decode("ascii") for name, png in report.figures.items()}
    return _ENV.from_string(_PAGE).render(
        r=report, css=Markup(_CSS), summary=[_paragraph(p) for p in report.summary], figures=figures,
        table=table_html, mark=_mark,
    )  # fmt: skip
