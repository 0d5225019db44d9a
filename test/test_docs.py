"""The README is a front door: short, and every page it and the docs link to exists, every console script is
documented somewhere, and every docs page says up front what it covers ("You are here")."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 250

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def without_code(text: str) -> str:
    """The text with fenced code blocks and inline code removed (links inside code are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def relative_links(page: Path) -> list[str]:
    """Relative link targets of a page, without their #anchor; http(s), mailto and pure anchors left out."""
    out = []
    for target in LINK.findall(without_code(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0])
    return out


def console_scripts() -> list[str]:
    """Names before ' = ' in setup.py's CONSOLE_SCRIPTS list, read from the source (setup.py is not run)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CONSOLE_SCRIPTS" for t in node.targets):
            return [entry.split(" = ", 1)[0].strip() for entry in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no CONSOLE_SCRIPTS list")


def first_paragraph(page: Path, within: int = 10) -> str:
    """The first non-empty, non-heading paragraph that starts within the page's first `within` lines."""
    lines = page.read_text().split("\n")
    for i, line in enumerate(lines[:within]):
        if line.strip() and not line.lstrip().startswith("#"):
            paragraph = []
            for following in lines[i:]:
                if not following.strip() or following.lstrip().startswith("#"):
                    break
                paragraph.append(following.strip())
            return " ".join(paragraph)
    return ""


def test_there_are_docs_pages():
    assert DOCS, "docs/*.md is empty"


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move detail into docs/ (at most {MAX_README_LINES})"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files(page):
    broken = [t for t in relative_links(page) if t and not (page.parent / t).exists()]
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"


def test_every_console_script_is_documented():
    scripts = console_scripts()
    assert scripts, "no console scripts parsed from setup.py"
    text = "\n".join(p.read_text() for p in PAGES)
    undocumented = [s for s in scripts if not re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", text)]
    assert not undocumented, f"console scripts named in neither README.md nor docs/*.md: {undocumented}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_docs_pages_start_with_you_are_here(page):
    paragraph = first_paragraph(page)
    assert "you are here" in paragraph.lower(), (
        f"{page.relative_to(REPO)}: the first paragraph (within 10 lines) must say 'You are here' "
        f"(what the page covers, for whom, a link back to ../README.md); got {paragraph[:80]!r}")


def test_link_parser_sees_what_it_should():
    text = "[a](docs/x.md#y) [b](https://e.org) [c](#top) `[d](code.md)` ![e](img.png)\n```\n[f](fenced.md)\n```\n"
    assert LINK.findall(without_code(text)) == ["docs/x.md#y", "https://e.org", "#top", "img.png"]
