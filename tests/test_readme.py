"""The README stays a first screen: at most ~120 lines, no paragraph over 150 words, and its layout names every
module of the package (a module added without a line there fails here)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_fits_a_first_screen_budget():
    assert len(README.splitlines()) <= 120
    prose = [p for p in re.split(r"\n\s*\n", README) if not p.lstrip().startswith(("```", "|", "#"))]
    longest = max(prose, key=lambda p: len(p.split()))
    assert len(longest.split()) <= 150, longest[:80]


def test_the_layout_names_every_module():
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    words = set(re.findall(r"[\w.]+", layout))
    modules = [p for p in (ROOT / "gradft").rglob("*.py") if p.stem not in ("__init__", "__main__")]
    missing = sorted(str(p.relative_to(ROOT)) for p in modules if p.stem not in words and p.name not in words)
    assert not missing, f"README layout does not name: {missing}"
