"""The package's shape, measured: import cycles, imports that go up a layer, long modules and functions, big folders.

    .venv/bin/python scripts/architecture.py [--verbose]

Every `import` in istpan/ counts, at module level or inside a function (a lazy import is still a dependency). The
layers, bottom-up, are LAYERS below (docs/architecture.md draws them); a module may import from its own layer and the
layers below it. The package façade `istpan/__init__.py` (lazy re-exports of the front doors) is the top.
Last line: `cycles=<n> upward=<n> modules_over_400=<n> functions_over_80=<n> largest_package=<n modules>`.
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "istpan"
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_PACKAGE_MODULES = 400, 80, 15

# bottom-up; a module belongs to the longest prefix listed
LAYERS: list[tuple[str, ...]] = [
    ("istpan._version", "istpan.errors", "istpan.modality", "istpan.runtime"),
    ("istpan.config",),
    ("istpan.data",),
    ("istpan.data.tools",),
    ("istpan.models", "istpan.losses"),
    ("istpan.viz",),
    ("istpan.files",),
    ("istpan.inference",),
    ("istpan.evaluation",),
    ("istpan.training",),
    ("istpan.experiments", "istpan.serve"),
    ("istpan.cli", "istpan.__main__"),
    ("istpan",),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best, level = -1, len(LAYERS) - 1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, level = len(p), i
    return level


def imports_of(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """istpan modules this module imports (a `from pkg import name` names the module pkg.name when it is one)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "istpan")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base]) if base else ".".join(up)
            if base.split(".")[0] != "istpan":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else base)
    found.discard(module)
    return {m for m in found if m in modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def long_functions(tree: ast.AST) -> list[tuple[str, int]]:
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true", help="list every edge that goes up a layer")
    args = parser.parse_args()
    files = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in files.items()}
    graph = {m: imports_of(t, m, files[m].name == "__init__.py", set(files)) for m, t in trees.items()}

    found = cycles(graph)
    for comp in found:
        print("cycle:", " <-> ".join(comp))
    upward = [(m, d) for m in sorted(graph) for d in sorted(graph[m]) if layer_of(d) > layer_of(m)]
    for m, d in upward:
        print(f"upward: {m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})")
    big = [(m, len(p.read_text().splitlines())) for m, p in files.items()]
    big = [(m, n) for m, n in big if n > MAX_MODULE_LINES]
    for m, n in big:
        print(f"module over {MAX_MODULE_LINES} lines: {m} ({n})")
    longs = [(m, name, n) for m, t in trees.items() for name, n in long_functions(t)]
    for m, name, n in longs:
        print(f"function over {MAX_FUNCTION_LINES} lines: {m}.{name} ({n})")
    per_folder: dict[Path, int] = defaultdict(int)
    for p in files.values():
        if p.name != "__init__.py":
            per_folder[p.parent] += 1
    folder, most = max(per_folder.items(), key=lambda kv: kv[1])
    if most > MAX_PACKAGE_MODULES or args.verbose:
        print(f"largest package folder: {folder.relative_to(ROOT.parent)} ({most} modules)")
    print(f"cycles={len(found)} upward={len(upward)} modules_over_400={len(big)} functions_over_80={len(longs)} "
          f"largest_package={most}")


if __name__ == "__main__":
    main()
