"""The package's floor plan (issue 30): folders that name the concerns, imports that only point down, no circles.

Read from the source with ``ast`` (nothing is imported). ``python tests/test_layout.py`` prints the counts the
issue's note gives: modules at the package root, import circles, in-function imports, the longest module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "gradft"

# Lower layers never import higher ones (same layer: allowed, circles caught below). A module takes the layer of
# its longest matching prefix.
LAYERS = {
    "gradft": 0, "gradft.config": 0, "gradft.stopping": 0,                   # torch-free: the CLI's 2-second check
    "gradft.gradients": 1, "gradft.forward": 1, "gradft.metrics": 1,         # flat gradients, logits, metrics
    "gradft.data": 2,                                                        # examples, prompts, batches
    "gradft.models": 3, "gradft.methods": 3, "gradft.tracking": 3,           # backbones, methods, results out
    "gradft.guidance": 4, "gradft.evaluate": 4, "gradft.train": 4, "gradft.trained.save": 4,
    "gradft.run": 5, "gradft.api": 5, "gradft.hf": 5, "gradft.trained.predict": 5,   # one run; the Python API
    "gradft.experiments": 6, "gradft.bench": 6, "gradft.__main__": 6,       # many runs, benchmarks, the CLI
    "gradft.report": 7,                                                      # reads results only
}
# In-function imports of gradft's own modules, each kept for a reason (the rest import at the top).
LAZY = {
    ("gradft.__main__", "gradft.run"): "the CLI checks the config in ~2 s before torch loads",
    ("gradft.__main__", "gradft.tracking"): "the CLI checks the config in ~2 s before wandb loads",
    ("gradft.experiments.sweep", "gradft.run"): "a sweep that met its budget exits at once without torch (test_sweep: "
                                                 "test_a_sweep_that_met_its_budget_exits_0_at_once_...)",
    ("gradft.experiments.sweep", "gradft.train"): "as above (NonFiniteError)",
}
# In-function imports of other libraries, each kept for a reason: (module, function) -> why.
LAZY_LIBRARIES = {
    ("gradft", "__getattr__"): "the public API (Guidance, GuidedTrainer) loads torch only when first named",
    ("gradft.data.sources", "quiet_datasets"): "datasets (pyarrow, pandas: seconds) only on the hub path",
    ("gradft.experiments.eta", "estimate"): "torch only for a device name; grids plan and dry-run without it",
    ("gradft.experiments.launch", "set_worker_threads"): "torch loads after a worker's thread count is set",
    ("gradft.stopping", "restore"): "torch-free module: sweeps and grids import it before torch",
    ("gradft.tracking", "hardware"): "torch, transformers versions: the report and a finished sweep import tracking",
    ("gradft.tracking", "__init__"): "wandb only when a run logs to it (logger.mode=disabled: never)",
}


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _target(mod: str, node: ast.ImportFrom | ast.Import, is_pkg: bool, known: dict[str, Path]) -> list[str]:
    """The gradft modules an import statement loads (a name that is a submodule counts as that submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "gradft"]
    base = node.module or ""
    if node.level:
        pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join(pkg + ([node.module] if node.module else []))
    if base.split(".")[0] != "gradft":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def imports() -> list[tuple[str, str, bool, int]]:
    """(importer, imported, inside a function, line) for every import of a gradft module."""
    known, rows = modules(), []
    for mod, path in known.items():
        tree = ast.parse(path.read_text())
        inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for n in ast.walk(tree):
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                for t in _target(mod, n, path.name == "__init__.py", known):
                    if t != mod:
                        rows.append((mod, t, id(n) in inner, n.lineno))
    return rows


def in_function_imports() -> list[tuple[str, str, str]]:
    """(module, function, imported module) for every import statement inside a function, of any library."""
    out = []
    for mod, path in modules().items():
        for f in ast.walk(ast.parse(path.read_text())):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out += [(mod, f.name, x.module if isinstance(x, ast.ImportFrom) else x.names[0].name)
                        for x in ast.walk(f) if isinstance(x, (ast.Import, ast.ImportFrom))]
    return out


def defined_names(path: Path) -> set[str]:
    """Names a module defines itself (def, class, assignment at the top level), not those it imports."""
    out = set()
    for n in ast.parse(path.read_text()).body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, (ast.Assign, ast.AnnAssign)):
            for t in n.targets if isinstance(n, ast.Assign) else [n.target]:
                out |= {x.id for x in ast.walk(t) if isinstance(x, ast.Name)}
        elif isinstance(n, (ast.If, ast.Try)):  # names defined under a guard
            out |= {x.name for x in ast.walk(n) if isinstance(x, (ast.FunctionDef, ast.ClassDef))}
    return out


# Package facades: their __init__ names the package's public API (docs/api.md; gradft/data/__init__.py).
FACADES = {"gradft", "gradft.data"}


def reexports() -> list[str]:
    """``from gradft.x import name`` where x only re-exports name (a shim): callers must import it from its home."""
    known, out = modules(), []
    for mod, path in known.items():
        for n in ast.walk(ast.parse(path.read_text())):
            if not isinstance(n, ast.ImportFrom) or n.level or not (n.module or "").startswith("gradft"):
                continue
            if n.module in FACADES or n.module not in known:
                continue
            own = defined_names(known[n.module])
            out += [f"{mod}: {a.name} from {n.module}" for a in n.names
                    if a.name not in own and f"{n.module}.{a.name}" not in known]
    return out


def circles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over top-level and in-function imports."""
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for a, b, _, _ in imports():
        graph[a].add(b)
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def layer(mod: str) -> int:
    best = max((k for k in LAYERS if mod == k or mod.startswith(k + ".")), key=len)
    return LAYERS[best]


def root_modules() -> list[str]:
    return sorted(p.name for p in PKG.glob("*.py"))


def test_the_package_root_holds_at_most_14_modules_the_rest_live_in_folders_named_for_their_concern():
    assert len(root_modules()) <= 14, root_modules()


def test_every_module_opens_with_a_docstring_and_stays_under_400_lines():
    for mod, path in modules().items():
        text = path.read_text()
        assert ast.get_docstring(ast.parse(text)), f"{mod}: no module docstring"
        assert len(text.splitlines()) <= 400, f"{mod}: {len(text.splitlines())} lines"


def test_gradft_modules_import_each_other_without_a_circle():
    assert circles() == []


def test_every_import_points_to_the_same_or_a_lower_layer():
    up = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)}), line {n}"
          for a, b, _, n in imports() if layer(b) > layer(a)]
    assert up == []


def test_gradft_imports_inside_functions_are_only_the_clis_lazy_ones():
    lazy = sorted({(a, b) for a, b, inner, _ in imports() if inner} - set(LAZY))
    assert lazy == [], "import at the top, or add it to LAZY with the reason"


def test_every_name_is_imported_from_the_module_that_defines_it_no_shims():
    assert reexports() == []


def test_other_libraries_are_imported_inside_functions_only_for_a_stated_reason():
    lazy = sorted({(m, f) for m, f, lib in in_function_imports() if not lib.startswith("gradft")} - set(LAZY_LIBRARIES))
    assert lazy == [], "import at the top, or add it to LAZY_LIBRARIES with the reason"


def test_the_layer_map_names_every_module():
    for mod in modules():
        assert any(mod == k or mod.startswith(k + ".") for k in LAYERS), mod


if __name__ == "__main__":
    rows = imports()
    longest = max(modules().items(), key=lambda kv: len(kv[1].read_text().splitlines()))
    print(f"modules at the package root: {len(root_modules())} ({', '.join(root_modules())})")
    print(f"modules in all: {len(modules())}")
    print(f"import circles: {len(circles())} {circles()}")
    print(f"in-function imports of gradft modules: {sum(r[2] for r in rows)} "
          f"({len({(a, b) for a, b, i, _ in rows if i})} distinct pairs)")
    print(f"in-function imports of any library: {len(in_function_imports())}")
    print(f"re-exported names imported through a shim: {len(reexports())}")
    print(f"upward imports: {sum(layer(b) > layer(a) for a, b, _, _ in rows)}")
    print(f"longest module: {longest[0]} ({len(longest[1].read_text().splitlines())} lines)")
