"""Links between the Markdown pages lead somewhere: every relative link names a file of the
repository, and every ``#anchor`` a heading of its target page (GitHub's heading slugs)."""

from __future__ import annotations

import re
from pathlib import Path

from pdl_testing import REPO

PAGES = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def test_slug_matches_github() -> None:
    assert slug("Inference options") == "inference-options"
    assert slug("predict (training package)") == "predict-training-package"
    assert slug("No depth that was never learned") == "no-depth-that-was-never-learned"


def test_relative_links_and_anchors_resolve() -> None:
    assert len(PAGES) >= 10, [p.name for p in PAGES]
    broken = []
    for page in PAGES:
        for target in links(page):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked here
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(REPO)}: {target}"
            if not dest.exists():
                broken.append(f"{where}: no such file")
                continue
            if anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                broken.append(f"{where}: no heading #{anchor}")
    assert not broken, "\n".join(broken)
