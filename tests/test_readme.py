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
    """Each root module by file name; each module of a folder on that folder's lines (``  data/  tasks ...``)."""
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    folders: dict[str, set[str]] = {}
    current = None
    for line in layout.splitlines():
        m = re.match(r"  (\w+)/\s", line)
        current = m.group(1) if m else (current if line.startswith("   ") and current else None)
        if current:
            folders.setdefault(current, set()).update(re.findall(r"\w+", line))
    words = set(re.findall(r"[\w.]+", layout))
    missing = []
    for p in sorted((ROOT / "gradft").rglob("*.py")):
        rel = p.relative_to(ROOT / "gradft")
        if p.stem in ("__init__", "__main__") and len(rel.parts) > 1:
            continue
        named = p.name in words if len(rel.parts) == 1 else p.stem in folders.get(rel.parts[0], set())
        if not named:
            missing.append(str(rel))
    assert not missing, f"README layout does not name: {missing}"


def test_the_tuning_table_is_the_commands_output_for_every_finished_study(monkeypatch):
    """The first screen's tuning table is ``python -m gradft.report.tuning --brief sweeps/signal_minilm_*.yaml``
    over the committed studies: its header, and the row of each study that met its budget (a running study's row
    moves on, so only finished rows are pinned), verbatim."""
    from gradft.report.tuning import brief

    monkeypatch.chdir(ROOT)  # the specs' storages are relative to the repository root
    rows = brief(sorted(str(p) for p in (ROOT / "sweeps").glob("signal_minilm_*.yaml"))).splitlines()
    assert rows[0] in README.splitlines()
    finished = [r for r in rows[2:] if re.match(r"\| \w+ \| (\d+) / \1 \|", r)]
    assert finished, rows  # LoRA's study is committed finished
    for row in finished:
        assert row in README.splitlines(), row
