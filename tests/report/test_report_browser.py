"""Open report.html in a real headless browser: every figure decodes and no report text runs as code."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from stepdistill.report.build import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Appended to a copy of the report (the report itself carries no scripts): after load, write each
# image's decoded width into the DOM, where --dump-dom can read it.
_PROBE = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = Array.from(document.images).map(i => i.complete + ":" + i.naturalWidth).join(" ");
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_every_image_loads_in_chromium(finished_run, tmp_path):
    html = build_report([finished_run]).read_text()
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", _PROBE + "</body>"))
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    probe = re.search(r'<pre id="probe">([^<]*)</pre>', dom)
    assert probe, f"probe did not run; chromium printed: {dom[:500]!r}"
    images = probe.group(1).split()
    assert len(images) == 5
    for img in images:
        complete, width = img.split(":")
        assert complete == "true" and int(width) > 100, images
    # The teacher's "<script>" text was shown, not executed.
    assert "<title>stepdistill report: arith</title>" in dom
    assert "&lt;script&gt;document.title" in dom
