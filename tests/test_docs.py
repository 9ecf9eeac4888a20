"""Every relative link and image in README.md and docs/ points at a file of the repository."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

markdown_it = pytest.importorskip("markdown_it", reason="parses the Markdown: the test extra's markdown-it-py")

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_targets(page: Path) -> list[str]:
    """The link and image targets of a Markdown page that name a place in the repository (no URL, no #anchor)."""
    targets = []
    tokens = markdown_it.MarkdownIt().parse(page.read_text(encoding="utf-8"))
    for token in (child for block in tokens for child in (block.children or [])):
        target = token.attrGet("href") if token.type == "link_open" else token.attrGet("src") if token.type == "image" else None
        if target and not urlparse(target).scheme and not target.startswith("#"):
            targets.append(target)
    return targets


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_and_image_resolves(page):
    missing = [t for t in relative_targets(page) if not (page.parent / unquote(t.partition("#")[0])).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_the_checker_sees_links_and_images(tmp_path):
    """The check can fail: a page with a broken link and a broken image yields both targets."""
    page = tmp_path / "page.md"
    page.write_text("See [the guide](docs/none.md#x), ![a plot](images/none.png) and [a site](https://example.org).\n",
                    encoding="utf-8")
    assert relative_targets(page) == ["docs/none.md#x", "images/none.png"]
