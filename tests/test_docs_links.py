"""Every relative link in README.md and docs/*.md resolves: to a file of the repository and, when the
link names a heading (`page.md#anchor`), to a heading of that file, anchored the way GitHub anchors
headings (lowercase, punctuation dropped, spaces to hyphens, `-1`, `-2` for repeats)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~)")
# [text](target) and ![alt](target); a target ends at whitespace or ")" (no titles are used here).
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")


def prose_lines(text: str, *, keep_code: bool = False) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks; inline code spans blanked out unless kept
    (a heading's inline code is part of its anchor; a link shown as code is not a link)."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line if keep_code else INLINE_CODE.sub("", line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"<[^>]+>", "", heading)  # inline HTML
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters of any script, digits and _
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8"), keep_code=True):
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(page: Path) -> list[tuple[int, str]]:
    links = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            links.append((number, target))
    return links


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """'page:line: target (why)' for every relative link of `page` that does not resolve."""
    problems = []
    for number, target in relative_links(page):
        where = f"{page.relative_to(root)}:{number}: {target}"
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not dest.exists():
            problems.append(f"{where} (no such file)")
            continue
        if root not in dest.parents and dest != root:
            problems.append(f"{where} (outside the repository)")
            continue
        if anchor:
            if dest.suffix != ".md":
                problems.append(f"{where} (an anchor into a file that is not Markdown)")
            elif unquote(anchor) not in anchors(dest):
                problems.append(f"{where} (no heading with that anchor in {dest.relative_to(root)})")
    return problems


def test_the_pages_exist_and_link_somewhere():
    assert (ROOT / "docs").is_dir() and len(PAGES) > 5
    readme_links = {target.partition("#")[0] for _, target in relative_links(ROOT / "README.md")}
    # The README is the newcomer's page: every reference page is reachable from it.
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme_links, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_slugs_follow_github():
    assert slug("Which method should I use?") == "which-method-should-i-use"
    assert slug("Quality: `bench/quality.py`") == "quality-benchqualitypy"
    assert slug("Training speed: `bench/train_speed.py`") == "training-speed-benchtrain_speedpy"
    assert slug("End to end: `stepdistill run`, sweeps and the demo") == (
        "end-to-end-stepdistill-run-sweeps-and-the-demo"
    )


def test_a_broken_link_is_reported(tmp_path):
    """The check fails on a missing file, a missing heading and a heading inside a code block."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Real heading\n\n```\n## Not a heading\n```\n")
    page = tmp_path / "README.md"
    page.write_text(
        "See [a](docs/a.md#real-heading), [b](docs/b.md), [c](docs/a.md#no-such),\n"
        "[d](docs/a.md#not-a-heading), [e](#local), `[f](docs/f.md)` and [g](https://example.org).\n\n"
        "## Local\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "README.md:1: docs/b.md (no such file)",
        "README.md:1: docs/a.md#no-such (no heading with that anchor in docs/a.md)",
        "README.md:2: docs/a.md#not-a-heading (no heading with that anchor in docs/a.md)",
    ]
