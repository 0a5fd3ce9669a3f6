"""The shape of the package: no import cycle among privinf's modules, no module far over 400 lines."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "privinf"
MAX_LINES = 420  # "about 400": keep modules readable in one sitting


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the privinf modules it imports, at any depth (imports inside functions count: a
    lazy import that closes a cycle is still a cycle). Importing ``a.b.c`` also runs the package
    ``a.b``'s ``__init__``, so that counts too, unless the importer lives inside ``a.b``."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(mods)
                targets |= subs or {node.module}
                if len(subs) < len(node.names):
                    targets.add(node.module)  # names defined in the module itself
        edges = set()
        for t in targets:
            if not t.startswith("privinf"):
                continue
            while t not in mods:
                t = t.rpartition(".")[0]
            parts = t.split(".")
            for i in range(2, len(parts) + 1):  # the target and the packages above it
                pkg = ".".join(parts[:i])
                if pkg != name and not (name + ".").startswith(pkg + ".") and (pkg == t or pkg in mods):
                    edges.add(pkg)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    graph = import_graph()
    assert "privinf.emulator.hookpoints" in graph["privinf.blocks"]  # the graph sees real edges
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_about_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"
