"""The package's modules import one another downwards only, and never in a circle.

The layers, lowest first (a module may import from its own layer and the layers below it):

    0  the package root (its version), _text, io, machine,  plain text, atomic files and figures, the CPU,
       options                                            typed configs as flags and YAML files
    1  checkpoint                                             reading and writing weight files safely
    2  models                                                 the student, the teachers, X3D
    3  data                                                   videos, datasets, SynthActions
    4  distill                                                teachers' targets, the loss, the teacher cache
    5  engine                                                 configs, the training loop, train / distill / evaluate
    6  inference                                              backends, prediction, streaming, export
    7  bench, demo                                            the speed benchmark, the method end to end
    8  cli, __main__                                          the ``dsn`` command

Every import counts: at module level, inside functions (imported late to save start-up time, which hides
a cycle rather than removing it) and under ``if TYPE_CHECKING:`` (a type is a dependency too). Within a
layer any import is allowed as long as no module reaches itself again. A module of a package that does
not appear above fails the test until it is given a layer here.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = "distilled_shufflenet"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# the first part of a module's name below the package -> its layer ("" is the package root itself)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("", "_text", "io", "machine", "options"),
    ("checkpoint",),
    ("models",),
    ("data",),
    ("distill",),
    ("engine",),
    ("inference",),
    ("bench", "demo"),
    ("cli", "__main__"),
)
LAYER = {part: level for level, parts in enumerate(LAYERS) for part in parts}

# Imports that break the rules today and are being removed; the test checks that each one still exists and
# still breaks a rule, so an entry must go as soon as its import is fixed. (importer, imported), names
# below the package.
KNOWN: frozenset[tuple[str, str]] = frozenset()


def module_name(path: Path, root: Path) -> str:
    """``root/engine/config.py`` -> ``engine.config``; a package's ``__init__.py`` is the package; the
    root's own ``__init__.py`` is ``""``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
    """Every module under ``root`` (the package's folder) -> the package's modules it imports.

    ``from package.a import b`` names the module ``a.b`` where that is a module, else ``a`` (``b`` is a
    name defined in ``a``); relative imports are resolved; imports of other packages are left out."""
    files = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}

    def resolve(name: str) -> str | None:
        """The package's module ``name`` (dotted, from the package) is, or lies in; None outside it."""
        if name != package and not name.startswith(package + "."):
            return None
        inner = name[len(package) + 1:]
        while inner not in files:
            if "." not in inner:
                return "" if inner else None
            inner = inner.rsplit(".", 1)[0]
        return inner

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        found: set[str | None] = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found.update(filter(None, (resolve(alias.name) for alias in node.names)))
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's own package upwards
                    here = [package, *module.split(".")] if module else [package]
                    base = here if is_package else here[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:  # `from package.a import b`: the module a.b if b is one, else a
                    submodule = f"{source}.{alias.name}"
                    found.add(submodule[len(package) + 1:] if submodule[len(package) + 1:] in files
                              and submodule.startswith(package + ".") else resolve(source))
        found.discard(None)
        found.discard(module)
        graph[module] = {name for name in found if name is not None}
    return graph


def layer_of(module: str) -> int:
    top = module.split(".", 1)[0]
    if top not in LAYER:
        raise AssertionError(
            f"{PACKAGE}.{module}: its part {top!r} has no layer; add it to LAYERS in {Path(__file__).name}, "
            f"below everything that imports it and above everything it imports")
    return LAYER[top]


def upward(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """The imports from a lower layer to a higher one."""
    return {(a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)}


def circular_groups(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of two or more modules that all reach one another through imports (Tarjan's strongly
    connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports per circular group, as ``a -> b -> ... -> a``, with the whole group."""
    return [" -> ".join(_circle(graph, group)) + (f" (all of {', '.join(sorted(group))} reach one another)"
                                                   if len(group) > 2 else "")
            for group in circular_groups(graph)]


def _circle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A path of imports inside ``group`` from its first module back to itself (breadth first)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no circle through {start} in {sorted(group)}")


def problems(graph: dict[str, set[str]], known: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    """What breaks the rules in ``graph`` once the ``known`` imports are set aside: one line per import
    from a lower layer to a higher one, and per circle of imports."""
    kept = {a: {b for b in targets if (a, b) not in known} for a, targets in graph.items()}
    lines = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)}), a higher layer"
             for a, b in sorted(upward(kept))]
    lines += [f"import cycle: {circle}" for circle in cycles(kept)]
    return lines


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(SOURCE)


def test_the_graph_sees_module_level_function_level_and_type_only_imports(graph: dict[str, set[str]]) -> None:
    assert "engine.runtime" in graph["engine.checkpointing"]  # module level
    assert "engine.plots" in graph["engine.runlog"]  # inside a method
    assert "models" in graph["engine.checkpointing"]  # under TYPE_CHECKING (and in a function)
    assert "" in graph["cli"]  # `from distilled_shufflenet import __version__`: the root package
    assert {"data.datasets", "data.factory"} <= graph["data"]  # a package's __init__ re-exporting


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    for module in graph:
        layer_of(module)


def test_imports_go_down_the_layers_and_never_in_a_circle(graph: dict[str, set[str]]) -> None:
    found = problems(graph, KNOWN)
    assert not found, "\n".join(found)


def test_the_known_exceptions_still_exist(graph: dict[str, set[str]]) -> None:
    """Each listed import is still there and still breaks a rule; a fixed one must leave ``KNOWN``."""
    groups = circular_groups(graph)
    for a, b in sorted(KNOWN):
        assert b in graph.get(a, set()), f"{a} no longer imports {b}: remove it from KNOWN"
        in_a_circle = any(a in group and b in group for group in groups)  # b imports its way back to a
        assert layer_of(b) > layer_of(a) or in_a_circle, \
            f"{a} -> {b} now goes down the layers and closes no circle: remove it from KNOWN"


def test_the_check_fails_on_a_back_import_and_on_a_cycle(tmp_path: Path) -> None:
    """The checker itself: on a copy of the package, one added import from a low module to a high one
    and one circle between two engine modules are both reported."""
    copy = tmp_path / PACKAGE
    shutil.copytree(SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = set(problems(import_graph(copy), KNOWN))
    with (copy / "models" / "fuse.py").open("a", encoding="utf-8") as f:
        f.write("\n\ndef _late():\n    from distilled_shufflenet.engine.config import TrainConfig  # noqa: F401\n")
    with (copy / "engine" / "runtime.py").open("a", encoding="utf-8") as f:
        f.write("\nfrom ..engine import loop  # noqa: E402,F401\n")
    found = set(problems(import_graph(copy), KNOWN)) - before
    assert "models.fuse (layer 2) imports engine.config (layer 5), a higher layer" in found, found
    assert any(line.startswith("import cycle:") and "engine.runtime" in line and "engine.loop" in line
               for line in found), found
