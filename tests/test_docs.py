"""The documentation: the CLI reference is up to date, links resolve, each page names its reader."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from cogapp import Cog

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CLI_REFERENCE = DOCS / "cli-reference.md"
PAGES = sorted(DOCS.glob("*.md"))

_FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_CODE = re.compile(r"`[^`]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)


def _prose(text: str) -> str:
    """Return a Markdown text without its code blocks and HTML comments."""
    return _COMMENT.sub("", _FENCED.sub("", text))


def _anchors(text: str) -> set[str]:
    """Return the anchors GitHub gives the headings of a Markdown text."""
    anchors: set[str] = set()
    for heading in _HEADING.findall(_prose(text)):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def _links(text: str) -> list[str]:
    """Return the targets of the Markdown links of a text, outside code."""
    return _LINK.findall(_CODE.sub("", _prose(text)))


def test_docs_cli_reference_is_up_to_date() -> None:
    out, err = io.StringIO(), io.StringIO()
    cog = Cog()
    cog.set_output(stdout=out, stderr=err)
    status = cog.main(
        ["cog", "--check", "--diff", "--check-fail-msg", "run make docs", str(CLI_REFERENCE)]
    )
    assert status == 0, out.getvalue() + err.getvalue()


def test_docs_anchors_follow_github() -> None:
    text = "# A page\n## `convsum run`\n## Spark: beyond one machine\n## A page\n```\n# not\n```\n"
    assert _anchors(text) == {"a-page", "convsum-run", "spark-beyond-one-machine", "a-page-1"}


@pytest.mark.parametrize("doc", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_docs_relative_links_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in _links(text):
        if re.match(r"^[a-z]+:", target):
            continue  # an absolute URL
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif (
            anchor
            and linked.suffix == ".md"
            and anchor not in _anchors(linked.read_text(encoding="utf-8"))
        ):
            broken.append(f"{target}: no such heading")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_page_starts_with_its_reader(page: Path) -> None:
    title, blank, first, *rest = page.read_text(encoding="utf-8").splitlines()
    assert title.startswith("# ") and not blank, page.name
    assert first.startswith("For "), f"{page.name}: {first!r}"
    if len(rest) > 150:  # a long page lists its sections before the first one
        opening = rest[: next(i for i, line in enumerate(rest) if line.startswith("## "))]
        toc = [line for line in opening if re.match(r"^- \[.*\]\(#", line)]
        assert len(toc) >= 2, f"{page.name} has no table of contents"
