"""The shape of the code the issues asked for, checked so it stays that way."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipeline"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The pipeline modules `path` (module `name`) imports, at any depth (a function's lazy
    import counts)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    # importing a.b.c from outside a.b runs a/b/__init__ first: a cycle through a package's
    # __init__ is a cycle (inside a.b, the package is already being imported)
    out |= {parent for m in list(out) for i in range(2, m.count(".") + 1)
            if not name.startswith((parent := ".".join(m.split(".")[:i])) + ".")}
    return {m for m in out if m in known}


def test_when_pipeline_modules_import_each_other_then_there_is_no_cycle() -> None:
    """Tarjan's strongly connected components over every import, lazy ones included. The
    package's own `__init__` is left out: it names the public surface and imports nothing
    until an attribute is asked for."""
    known = _modules()
    graph = {m: _imports(m, p, known) - {"pipeline"} for m, p in known.items() if m != "pipeline"}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert cycles == []
