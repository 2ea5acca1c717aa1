"""Docstrings keep two lines and point to docs/design.md for the reasoning: every such pointer
names a heading that exists there (a moved or renamed heading fails here, not a reader)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POINTER = re.compile(r"""docs/design\.md,?\s*(?:"([^"]+)"|'(.+?)'(?=[\s.,;:)]|$))""")


def _headings() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    return {line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")}


def _pointers() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "sidecar").rglob("*.py")):
        # A pointer may wrap: fold each line break, its indentation and a comment's "#".
        text = re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text(encoding="utf-8"))
        for match in POINTER.finditer(text):
            found.append((str(path.relative_to(ROOT)), match.group(1) or match.group(2)))
    return found


def test_the_code_points_to_docs_design_md_often() -> None:
    assert len(_pointers()) >= 30  # the parser still finds them


def test_every_pointer_to_docs_design_md_names_one_of_its_headings() -> None:
    headings = _headings()
    missing = [(where, name) for where, name in _pointers() if name not in headings]
    assert missing == []
