"""The packages of onceupon stand on floors, and an import only ever looks down or sideways.

A module may import from its own floor or the floors below, never from above, and no two
packages import each other, directly or round a circle (docs/development.md draws the floors). That keeps each part readable
without the ones above it: the run machinery knows nothing of students, the teacher nothing
of people's annotations, the stages nothing of the report.

Every ``import`` in the source counts, also one inside a function: an import deferred for
speed is still a dependency. A new top-level module or package has to be given a floor here.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "onceupon"

#: lowest first, as docs/development.md (Layers) draws them
FLOORS: list[set[str]] = [
    # what every stage stands on: errors, files, words, text, the config, progress
    {"errors", "files", "words", "config", "tracking", "preflight", "readability", "text"},
    # one schema and reader per file format onceupon reads
    {"schemas"},
    # the run machinery: lock, stop, RNG, precision, checkpoints, resume
    {"lifecycle"},
    # the data the student learns from (and the storyworld the teacher check borrows)
    {"corpus"},
    # the student; the teachers
    {"student", "teacher"},
    # interaction; people's ratings
    {"interact", "annotate"},
    # scores checkpoints and their stories (sampled as interaction samples them)
    {"evaluate"},
    # the report, from what the stages wrote
    {"analysis"},
    # the commands
    {"demo", "cli"},
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}

#: imports known to break the layering, each owned by work not finished yet:
#: (importing package, imported package) -> why it is still there
KNOWN: dict[tuple[str, str], str] = {}


def _unit(path: Path) -> str:
    """The top-level package (or module) a source file belongs to."""
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported(path: Path, node: ast.AST) -> list[str]:
    """The onceupon modules an import statement names, as dotted names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: resolve against the file's own package
        package = ["onceupon", *path.relative_to(SRC).parent.parts]
        base = package[: len(package) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module == "onceupon":  # from onceupon import preflight
        return [f"onceupon.{a.name}" for a in node.names]
    return [module]


def imports() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> where ("file:line"), over all of src/onceupon."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        unit = _unit(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for module in _imported(path, node):
                parts = module.split(".")
                if parts[0] != "onceupon" or len(parts) < 2 or parts[1] == unit:
                    continue
                where = f"{path.relative_to(SRC.parent).as_posix()}:{node.lineno}"
                found.setdefault((unit, parts[1]), []).append(where)
    return found


def test_every_package_has_a_floor():
    units = {_unit(p) for p in SRC.rglob("*.py")} - {"__init__", "__main__"}
    missing = sorted(units - FLOOR.keys())
    assert not missing, f"give {missing} a floor in tests/test_layers.py (what may it import, and who imports it?)"


def test_no_import_from_a_higher_floor():
    upward = {
        pair: where
        for pair, where in imports().items()
        if pair[1] in FLOOR and pair[0] in FLOOR and FLOOR[pair[1]] > FLOOR[pair[0]] and pair not in KNOWN
    }
    assert not upward, "imports from a higher floor:\n" + "\n".join(
        f"  {a} -> {b}: {', '.join(w)}" for (a, b), w in sorted(upward.items())
    )


def test_no_circle_between_packages():
    edges: dict[str, set[str]] = {}
    for a, b in imports():
        if (a, b) not in KNOWN:
            edges.setdefault(a, set()).add(b)
    circles = []

    def visit(unit: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(unit, ())):
            if nxt == path[0]:
                circles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > path[0]:  # each circle once, from its smallest name
                visit(nxt, [*path, nxt])

    for unit in sorted(edges):
        visit(unit, [unit])
    where = imports()
    assert not circles, "packages importing each other:\n" + "\n".join(
        f"  {c}  ({'; '.join(f'{a} -> {b}: ' + ', '.join(where[(a, b)]) for a, b in zip(c.split(' -> '), c.split(' -> ')[1:]))})"
        for c in circles
    )


def _module(path: Path) -> str:
    """A source file's dotted module name (a package's ``__init__.py``: the package)."""
    parts = ["onceupon", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports() -> dict[str, dict[str, str]]:
    """module -> {onceupon module it imports: where}, over all of src/onceupon. Every import
    counts, also one under ``if TYPE_CHECKING:``: a module that needs another's types to be
    read is as tied to it as one that calls it. ``from package import name`` counts the
    package and, where ``name`` is a module, that module."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    found: dict[str, dict[str, str]] = {}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = _imported(path, node)
            if isinstance(node, ast.ImportFrom):
                targets += [f"{targets[0]}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    found.setdefault(name, {}).setdefault(target, f"{path.relative_to(SRC.parent).as_posix()}:{node.lineno}")
    return found


def module_circles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """The groups of modules that import each other round a circle (strongly connected
    components of more than one module, Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


def test_no_circle_between_modules_including_type_checking_imports():
    """Within a package too, no two modules import each other, directly or round a circle,
    counting imports made only for type checking: a module is read (and changed) together
    with all it imports, so a circle makes one part out of several."""
    edges = module_imports()
    circles = module_circles(edges)
    assert not circles, "modules importing each other:\n" + "\n".join(
        "  " + ", ".join(f"{a} -> {b} ({edges[a][b]})" for a in group for b in group if b in edges.get(a, {}))
        for group in circles
    )


def test_the_module_check_sees_a_type_checking_circle():
    """A circle closed only by an import under ``if TYPE_CHECKING:`` is found."""
    a = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from onceupon.interact.b import B\n")
    targets = [m for node in ast.walk(a) for m in _imported(SRC / "interact" / "a.py", node)]
    assert targets == ["typing", "onceupon.interact.b"]
    edges = {"onceupon.interact.a": {"onceupon.interact.b": "a:3"}, "onceupon.interact.b": {"onceupon.interact.a": "b:1"}}
    assert module_circles(edges) == [["onceupon.interact.a", "onceupon.interact.b"]]


def test_the_check_finds_what_it_looks_for():
    """The walk sees imports inside functions and relative imports (a check that saw nothing
    would pass on any code)."""
    source = SRC / "teacher" / "rate.py"
    tree = ast.parse("def f():\n    from onceupon.annotate import agreement\nfrom ..files import read_jsonl\n")
    names = [m for node in ast.walk(tree) for m in _imported(source, node)]
    assert sorted(names) == ["onceupon.annotate", "onceupon.files"]
