"""`stepdistill report RUN_DIR...`: collect finished runs and write report.md + report.html.

    stepdistill report runs/demo                    # -> runs/demo/report/report.html
    stepdistill report runs/a runs/b --out cmp/     # combine runs into one report

The report folder holds report.html (self-contained), report.md and figures/*.png for the Markdown.
"""

from __future__ import annotations

import os
from pathlib import Path

from stepdistill.data.io import atomic_write_bytes, atomic_write_text
from stepdistill.report.collect import collect
from stepdistill.report.content import build_content
from stepdistill.report.render_html import render_html
from stepdistill.report.render_md import render_md


def _sample_size(config: dict | None, default: int = 20) -> int:
    value = ((config or {}).get("report") or {}).get("sample_size")
    return value if isinstance(value, int) else default


def build_report(
    run_dirs: list[str | os.PathLike], out: str | os.PathLike | None = None, sample_size: int | None = None
) -> Path:
    """Write the report of `run_dirs` into `out` (default <first run>/report); returns report.html.

    sample_size: examples shown in the sample (default: report.sample_size of the first run's config).
    """
    if not run_dirs:
        raise ValueError("build_report needs at least one run folder")
    runs = collect(list(run_dirs))
    out_dir = Path(out) if out is not None else Path(run_dirs[0]) / "report"
    size = sample_size if sample_size is not None else _sample_size(runs[0].config)
    report = build_content(runs, sample_size=size)
    files: dict[str, str] = {}
    for name, png in report.figures.items():
        atomic_write_bytes(out_dir / "figures" / f"{name}.png", png)
        files[name] = f"figures/{name}.png"
    atomic_write_text(out_dir / "report.md", render_md(report, files))
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, render_html(report))
    return html_path
