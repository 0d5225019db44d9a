"""The README is a front door: short, and every page it and the docs link to exists (anchors included), every
console script is documented somewhere, every docs page says up front what it covers ("You are here") and stays a
manual (at most 300 lines apart from reference tables), the experiment record lives in docs/notes/ and is linked,
every `disam-*` command shown in a code block exists with the options it is given, and no page speaks of sessions."""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import itertools
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CHANGELOG = REPO / "CHANGELOG.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
NOTES = sorted((REPO / "docs" / "notes").glob("*.md"))
PAGES = [README, *DOCS]
ALL_PAGES = [README, CHANGELOG, *DOCS, *NOTES]
MAX_README_LINES = 150
MAX_PAGE_LINES = 300
# A reference-table row: a markdown table row whose first cell is one `name` in backticks (parameters, topics,
# console scripts); such rows do not count towards a page's length.
REFERENCE_ROW = re.compile(r"^\s*\|\s*`[^`|]+`\s*\|")

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def without_code(text: str) -> str:
    """The text with fenced code blocks and inline code removed (links inside code are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def relative_links(page: Path, anchors: bool = False) -> list[str]:
    """Relative link targets of a page, without their #anchor unless `anchors`; http(s), mailto and pure anchors
    left out (unless `anchors`: then a pure anchor comes as '#anchor')."""
    out = []
    for target in LINK.findall(without_code(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue
        if target.startswith("#") and not anchors:
            continue
        out.append(target if anchors else target.split("#", 1)[0])
    return out


def github_slug(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation (anything but letters, digits, '_', '-', ' ') dropped,
    spaces to '-'. Markdown around the text (backticks, emphasis, links) is dropped first."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title.strip())
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def headings(text: str) -> list[str]:
    """ATX headings outside fenced code blocks, in order."""
    return [m.group(1) for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", text), re.M)]


@cache
def anchors_of(page: Path) -> frozenset[str]:
    """Every anchor GitHub gives the page's headings (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for title in headings(page.read_text()):
        slug = github_slug(title)
        n = seen.get(slug, 0)
        out.add(slug if n == 0 else f"{slug}-{n}")
        seen[slug] = n + 1
    return frozenset(out)


def counted_lines(page: Path) -> int:
    """Lines of a page that count towards its length: all but the reference-table rows."""
    return sum(1 for line in page.read_text().splitlines() if not REFERENCE_ROW.match(line))


def console_scripts() -> list[str]:
    """Names before ' = ' in setup.py's CONSOLE_SCRIPTS list, read from the source (setup.py is not run)."""
    return list(entry_points())


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


@pytest.mark.parametrize("page", ALL_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_existing_files(page):
    broken = [t for t in relative_links(page) if t and not (page.parent / t).exists()]
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"


@pytest.mark.parametrize("page", ALL_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_link_anchors_match_a_heading(page):
    broken = []
    for target in relative_links(page, anchors=True):
        if "#" not in target:
            continue
        path, anchor = target.split("#", 1)
        dest = (page.parent / path) if path else page
        if dest.suffix == ".md" and dest.is_file() and anchor not in anchors_of(dest.resolve()):
            broken.append(target)
    assert not broken, (f"{page.relative_to(REPO)} links to anchors no heading of the target has (GitHub slugs): "
                        f"{broken}")


def test_readme_is_at_most_150_lines():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): move detail into docs/"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_docs_page_is_a_manual_not_a_notebook(page):
    n = counted_lines(page)
    assert n <= MAX_PAGE_LINES, (
        f"{page.relative_to(REPO)} has {n} lines besides reference-table rows (at most {MAX_PAGE_LINES}): move "
        f"the record of how figures were reached into docs/notes/<topic>.md and link it")


def test_notes_exist_and_are_linked():
    assert NOTES, "docs/notes/*.md is empty: the experiment record belongs there"
    linked = {(page.parent / target).resolve() for page in PAGES for target in relative_links(page) if target}
    unlinked = [str(n.relative_to(REPO)) for n in NOTES if n.resolve() not in linked]
    assert not unlinked, f"notes linked from no page of README.md or docs/*.md: {unlinked}"


@pytest.mark.parametrize("page", [README, CHANGELOG, *DOCS, *NOTES], ids=lambda p: str(p.relative_to(REPO)))
def test_no_page_speaks_of_sessions(page):
    hits = [f"{i}: {line.strip()[:80]}" for i, line in enumerate(page.read_text().splitlines(), 1)
            if "session" in line.lower()]
    assert not hits, f"{page.relative_to(REPO)} says 'session' (use dates and commit ids): {hits[:5]}"


# ---- commands shown in code blocks ---------------------------------------------------------------------------

FENCED = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
COMMAND = re.compile(r"^(?:.*/)?(disam-[a-z0-9-]+)$")
SEPARATORS = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "2>&1", "<"}


def shown_commands() -> list[tuple[str, str, list[str]]]:
    """(page, script, arguments) for every `disam-*` command in a fenced code block of README.md or docs/*.md:
    continuation lines joined, comments dropped, optional-argument brackets stripped, arguments up to the next
    shell separator (and, for the nodes, up to `--ros-args`: what follows is rcl's)."""
    out = []
    for page in PAGES:
        for block in FENCED.finditer(page.read_text()):
            text = block.group(2).replace("\\\n", " ")
            for line in text.splitlines():
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:
                    words = line.split("#", 1)[0].split()
                for i, word in enumerate(words):
                    m = COMMAND.match(word)
                    if not m:
                        continue
                    args = []
                    for w in words[i + 1:]:
                        if w in SEPARATORS or w == "--ros-args" or COMMAND.match(w):
                            break
                        args.append(w.strip("[]"))
                    out.append((str(page.relative_to(REPO)), m.group(1), args))
    return out


def entry_points() -> dict[str, str]:
    """Console script name -> 'module:function', from setup.py's CONSOLE_SCRIPTS source (setup.py is not run)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CONSOLE_SCRIPTS" for t in node.targets):
            return {k.strip(): v.strip() for k, v in (e.split(" = ", 1) for e in ast.literal_eval(node.value))}
    raise AssertionError("setup.py has no CONSOLE_SCRIPTS list")


class _Captured(BaseException):
    """Raised instead of parsing: carries the parser a CLI built (BaseException: no `except Exception` eats it)."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


@cache
def cli_parser(target: str, words: tuple[str, ...]) -> argparse.ArgumentParser | None:
    """The argparse parser a console script builds for these leading words (a subcommand or suite name), caught
    at its parse call so that nothing runs; None when it parses without argparse."""
    module, func = target.split(":")
    main = getattr(importlib.import_module(module), func)
    originals = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = argparse.ArgumentParser.parse_known_args = capture
    try:  # with --help last: a CLI that does not parse with argparse prints its help and returns, runs nothing
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main([*words, "--help"])
    except _Captured as caught:
        return caught.parser
    except (SystemExit, Exception):
        return None
    finally:
        argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args = originals
    return None


def accepted_options(parser: argparse.ArgumentParser, words: list[str]) -> set[str]:
    """Option strings the parser accepts, and those of the subcommand the words name (disam-bag to-folder)."""
    options = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in words:
                if word in action.choices:
                    options |= accepted_options(action.choices[word], [])
                    break
    return options


@cache
def help_text(target: str) -> str:
    module = target.split(":")[0]
    run = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60,
                         cwd=REPO)
    return run.stdout + run.stderr


def test_commands_in_code_blocks_exist_with_their_options():
    scripts = entry_points()
    commands = shown_commands()
    assert commands, "no disam-* command found in any code block"
    problems = []
    for page, script, args in commands:
        if script not in scripts:
            problems.append(f"{page}: {script} is no console script in setup.py")
            continue
        options = [a.split("=", 1)[0] for a in args if a.startswith("--") and len(a) > 2]
        if not options:
            continue
        leading = tuple(itertools.takewhile(lambda a: not a.startswith("-"), args[:2]))  # subcommand or suite
        # words before the first option (disam-bag to-folder, disam-bench retrieval accuracy)
        parser = cli_parser(scripts[script], leading)
        if parser is not None:
            known = accepted_options(parser, list(leading))
            problems += [f"{page}: {script} {' '.join(leading)} has no option {o}" for o in options if o not in known]
        else:
            text = help_text(scripts[script])
            problems += [f"{page}: {script} --help names no {o}" for o in options if o not in text]
    assert not problems, "commands shown in the docs that would not run:\n" + "\n".join(sorted(set(problems)))


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
