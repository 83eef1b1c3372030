"""docs/*.md stay readable in an afternoon and true to the code.

No paragraph over 150 words (a block of text lines between blank lines, a list included, as README's test counts;
a table row and a code line count alone); every ``python -m gradft...`` command quoted in README.md, docs/*.md,
results/README.md, the Makefile or a conf/ comment names a module that runs as a command; and every
``gradft/<path>.py`` or ``gradft.<module>.<name>`` they name still exists (a module moved without its docs fails
here)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
TEXTS = [ROOT / "README.md", *DOCS]
# every text a user copies a command or a path from
REFERENCES = [*TEXTS, ROOT / "results" / "README.md", ROOT / "Makefile", *sorted((ROOT / "conf").rglob("*.yaml"))]
MAX_WORDS = 150
COMMAND = re.compile(r"python\s+-m\s+(gradft[\w.]*)")
FILE_PATH = re.compile(r"\bgradft/[\w/]+\.py\b")
DOTTED = re.compile(r"\b(gradft(?:\.\w+)+)")


def units(text: str) -> list[str]:
    """The pieces a reader takes in one go: a paragraph (text lines up to a blank line: a list without blank lines
    between its items is one piece), a table row, a heading, a line of a fenced code block (blank lines inside a
    fence do not end it)."""
    out: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            out.append(" ".join(current))
            current.clear()

    fenced = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            fenced = not fenced
        elif fenced:
            out.append(stripped)
        elif not stripped:
            flush()
        elif stripped.startswith(("|", "#")):
            flush()
            out.append(stripped)
        else:
            current.append(stripped)
    flush()
    return out


def test_units_cut_tables_and_fences_but_keep_a_paragraph_or_a_tight_list_whole():
    long_paragraph = "\n".join(["word " * 10] * 16)  # 160 words over 16 lines: one unit
    text = f"{long_paragraph}\n\n- a\n  b\n* c\n\n1. d\n\n| x | y |\n|---|---|\n\n```\none\n\ntwo\n```\n# Head"
    got = units(text)
    assert [len(u.split()) for u in got][:1] == [160]
    assert got[1:] == ["- a b * c", "1. d", "| x | y |", "|---|---|", "one", "", "two", "# Head"]


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_no_paragraph_is_over_150_words(path: Path):
    long = [f"{len(u.split())} words: {u[:80]}" for u in units(path.read_text()) if len(u.split()) > MAX_WORDS]
    assert not long, f"{path.name}: split these (lists, tables, shorter sentences): {long}"


def runnable(module: str) -> bool:
    """Whether ``python -m <module>`` would start: a package with a ``__main__.py``, or a module whose source has a
    ``__main__`` guard. Found with importlib.util.find_spec, which imports the parent packages (light ``__init__``
    files) but never the module itself."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return False
    if spec is None:
        return False
    if spec.submodule_search_locations is not None:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    source = Path(spec.origin).read_text()
    return re.search(r"""^if __name__ == ["']__main__["']:""", source, re.MULTILINE) is not None


def quoted_commands() -> dict[str, list[str]]:
    """module -> the files that quote ``python -m <module>``."""
    found: dict[str, list[str]] = {}
    for path in REFERENCES:
        for module in COMMAND.findall(path.read_text()):
            found.setdefault(module.rstrip("."), []).append(str(path.relative_to(ROOT)))
    return found


def test_runnable_tells_a_command_from_a_library_module():
    assert runnable("gradft") and runnable("gradft.report") and runnable("gradft.experiments.grid")
    assert not runnable("gradft.metrics")  # a module without a __main__ guard
    assert not runnable("gradft.experiments")  # a package without __main__.py
    assert not runnable("gradft.grid")  # moved to gradft.experiments.grid
    assert not runnable("gradft.nothing.here")


def test_every_quoted_command_names_a_runnable_module():
    found = quoted_commands()
    assert {"gradft", "gradft.bench.cell", "gradft.experiments.grid", "gradft.report"} <= found.keys()
    broken = {module: files for module, files in found.items() if not runnable(module)}
    assert not broken, f"python -m of a module that does not run as a command: {broken}"


def test_every_gradft_file_path_named_in_the_docs_exists():
    missing = sorted({(str(path.relative_to(ROOT)), named) for path in REFERENCES
                      for named in FILE_PATH.findall(path.read_text()) if not (ROOT / named).is_file()})
    assert not missing, f"paths that no longer exist: {missing}"


def defining_file(dotted: str) -> tuple[Path | None, list[str]]:
    """The longest module prefix of ``gradft.a.b.Name`` as a file on disk, and the names left after it. Read from the
    tree, not imported: a name under a torch-importing module stays cheap to check."""
    parts = dotted.split(".")
    found, rest = None, parts[1:]
    folder = ROOT / "gradft"
    if (folder / "__init__.py").is_file():
        found = folder / "__init__.py"
    for i, part in enumerate(parts[1:], start=1):
        if (folder / part / "__init__.py").is_file():
            folder = folder / part
            found, rest = folder / "__init__.py", parts[i + 1:]
        elif (folder / f"{part}.py").is_file():
            found, rest = folder / f"{part}.py", parts[i + 1:]
            break
        else:
            break
    return found, rest


def defined(dotted: str) -> bool:
    """Whether ``gradft.<module>.<name>`` names a module on disk and, if a name follows it, that module defines the
    name at its top level (a def, a class, an assignment, an import, or a key of gradft/__init__.py's lazy-import
    table)."""
    source, rest = defining_file(dotted)
    if source is None or not rest:
        return source is not None
    name = re.escape(rest[0])
    definition = (rf"^(?:def|class)\s+{name}\b|^{name}\s*[:=]|^from\s+\S+\s+import\s+(?:\([^)]*|[^\n]*)\b{name}\b"
                  rf"|^\s*[\"']{name}[\"']\s*:|[{{,]\s*[\"']{name}[\"']\s*:")
    return re.search(definition, source.read_text(), re.MULTILINE) is not None


def test_defined_tells_a_moved_name_from_a_present_one():
    assert defined("gradft.metrics.EXACT_UP_TO") and defined("gradft.train.Trainer.step")
    assert defined("gradft.GuidedTrainer") and defined("gradft.report.table1") and defined("gradft.tracking")
    assert defined("gradft.data.load_task")  # imported into the package from gradft/data/superglue.py
    assert not defined("gradft.grad_sketch.EXACT_UP_TO")  # merged into gradft.metrics
    assert not defined("gradft.metrics.NO_SUCH_NAME")


def test_every_dotted_gradft_name_in_the_docs_is_defined_where_it_says():
    wrong = sorted({(str(path.relative_to(ROOT)), dotted) for path in REFERENCES
                    for dotted in DOTTED.findall(path.read_text()) if not defined(dotted)})
    assert not wrong, f"names whose module moved or that it no longer defines: {wrong}"
