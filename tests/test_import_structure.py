"""The package's structure: no import cycle, no private name imported across modules, imports
that go down the layers, no function over 120 lines.

Read from the source with :mod:`ast` (nothing is imported): every ``import`` and ``from ... import``
statement counts, at module level and inside functions, except those under ``if TYPE_CHECKING:``
(they never run). A package's ``__init__`` is a module of its own: ``from ..training import fit``
depends on ``tem_keras/training/__init__.py``, and that on what it imports. Names imported lazily
through ``importlib.import_module("...")`` strings are not statements and do not count.

A private name is one with a leading underscore (not a dunder) that is not a module:
``from tem_keras.inference.compiled import _traced`` is one, ``from tem_keras import _env`` (a
private module of the package) is not. Checked in ``tem_keras/``, ``tests/`` and ``benchmarks/``;
what another module needs becomes public and documented.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "tem_keras"


def _modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package __init__)}`` for every module of the package."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_init else parts)] = (path, is_init)
    return found


def _absolute(current: str, is_init: bool, level: int, module: str | None) -> str:
    """The absolute module of ``from <level dots><module> import ...`` written in ``current``."""
    if level == 0:
        return module or ""
    base = current.split(".") if is_init else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, outside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports(path: Path, current: str, is_init: bool, modules):
    """``(dependencies, private imports)`` of one file.

    dependencies: ``{(module, line)}`` of package modules it imports; private imports:
    ``[(line, module, name)]`` of private non-module names it takes from another package module.
    """
    deps, private = set(), []
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    deps.add((alias.name, node.lineno))
            continue
        source = _absolute(current, is_init, node.level, node.module)
        if not (source == PACKAGE or source.startswith(PACKAGE + ".")):
            continue
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            if submodule in modules:
                deps.add((submodule, node.lineno))
                continue
            deps.add((source, node.lineno))
            name = alias.name
            if name.startswith("_") and not name.startswith("__") and source != current:
                private.append((node.lineno, source, name))
    return deps, private


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """``{module: {imported package module: first line}}`` of the package."""
    modules = _modules(root)
    graph = {}
    for name, (path, is_init) in modules.items():
        deps, _ = _imports(path, name, is_init, modules)
        edges = {}
        for target, line in sorted(deps, key=lambda d: d[1]):
            if target in modules and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def strongly_connected(graph: dict[str, dict]) -> list[list[str]]:
    """Components of more than one module (Tarjan, iterative): each holds an import cycle."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def cycles(root: Path = ROOT) -> list[str]:
    """One line per cycle: its modules and the import statements (file:line) that close it."""
    graph = import_graph(root)
    modules = _modules(root)
    lines = []
    for component in strongly_connected(graph):
        members = set(component)
        edges = [f"{modules[a][0].relative_to(root)}:{line} imports {b}"
                 for a in component for b, line in graph[a].items() if b in members]
        lines.append(" <-> ".join(component) + " (" + "; ".join(edges) + ")")
    return lines


def private_imports(root: Path = ROOT) -> list[str]:
    """``file:line: from module import _name`` for every private name taken across modules."""
    modules = _modules(root)
    found = []
    files = [(path, name, is_init) for name, (path, is_init) in modules.items()]
    for folder in ("tests", "benchmarks"):
        files += [(path, f"{folder}.{path.stem}", False) for path in sorted((root / folder).rglob("*.py"))]
    for path, name, is_init in files:
        _, private = _imports(path, name, is_init, modules)
        found += [f"{path.relative_to(root)}:{line}: from {source} import {private_name}"
                  for line, source, private_name in sorted(private)]
    return found


# ---------------------------------------------------------------------------------------------
# The rules
# ---------------------------------------------------------------------------------------------

def test_no_import_cycle():
    found = cycles()
    assert not found, "import cycles (module- or function-level):\n" + "\n".join(found)


def test_no_private_name_imported_across_modules():
    found = private_imports()
    assert not found, f"{len(found)} private names imported across modules:\n" + "\n".join(found)


# ---------------------------------------------------------------------------------------------
# The checker finds what it must (so that the rules above can fail)
# ---------------------------------------------------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in ("tests", "benchmarks"):
        (root / folder).mkdir(exist_ok=True)
    return root


def test_checker_finds_function_level_and_package_cycles(tmp_path):
    root = _write(tmp_path, {
        f"{PACKAGE}/__init__.py": "",
        f"{PACKAGE}/a.py": "from .b import g\n",
        f"{PACKAGE}/b.py": "def g():\n    from .c import h\n    return h\n",
        f"{PACKAGE}/c.py": "import os\n\ndef h():\n    from tem_keras import a\n",
        f"{PACKAGE}/pkg/__init__.py": "from .inner import f\n",
        f"{PACKAGE}/pkg/inner.py": "from . import helper\n\ndef f():\n    from ..pkg import VALUE\n",
        f"{PACKAGE}/pkg/helper.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .inner import f\n",
        f"{PACKAGE}/d.py": "from . import a, c\n",
    })
    found = cycles(root)
    assert len(found) == 2, found
    assert found[0].startswith(f"{PACKAGE}.a <-> {PACKAGE}.b <-> {PACKAGE}.c (")
    assert f"{PACKAGE}/c.py:4 imports {PACKAGE}.a" in found[0]
    assert found[1].startswith(f"{PACKAGE}.pkg <-> {PACKAGE}.pkg.inner (")
    graph = import_graph(root)
    assert f"{PACKAGE}.pkg.inner" not in graph[f"{PACKAGE}.pkg.helper"]  # TYPE_CHECKING only
    assert set(graph[f"{PACKAGE}.d"]) == {f"{PACKAGE}.a", f"{PACKAGE}.c"}
    # without the function-level import in c.py, no cycle remains there
    (root / PACKAGE / "c.py").write_text("def h():\n    return 1\n")
    assert [line for line in cycles(root) if line.startswith(f"{PACKAGE}.a")] == []


def test_checker_finds_private_names_from_other_modules(tmp_path):
    root = _write(tmp_path, {
        f"{PACKAGE}/__init__.py": "from . import _env\n",
        f"{PACKAGE}/_env.py": "",
        f"{PACKAGE}/a.py": "_x = 1\n__all__ = []\n\ndef f():\n    from .b import _y\n",
        f"{PACKAGE}/b.py": "from .a import __all__, f\nfrom tem_keras import _env\n_y = 2\n",
        "tests/test_a.py": "from tem_keras.a import _x\nfrom os.path import _get_sep\n",
        "benchmarks/bench.py": "from tem_keras import a\nfrom tem_keras.b import _y as y\n",
    })
    assert private_imports(root) == [
        f"{PACKAGE}/a.py:5: from {PACKAGE}.b import _y",
        "tests/test_a.py:1: from tem_keras.a import _x",
        "benchmarks/bench.py:2: from tem_keras.b import _y",
    ]


# --------------------------------------------------------------------------------------------
# The layer rule of docs/architecture.md
# --------------------------------------------------------------------------------------------

#: imports that go up a layer on purpose (docs/architecture.md says why)
UPWARD_EXCEPTIONS = {
    ("tem_keras.inference.masks", "tem_keras.export.predict_script"),
    ("tem_keras.inference.onnx_engine", "tem_keras.export.predict_script"),
    ("tem_keras.inference.sources", "tem_keras.export.predict_script"),
    ("tem_keras.inference.predict", "tem_keras.distributed.cluster"),
}


def layer_table(doc: Path = ROOT / "docs" / "architecture.md") -> dict[str, int]:
    """``{top-level package or module: layer}`` from the ```` ```layers ```` block of the doc."""
    text = doc.read_text(encoding="utf-8")
    block = text.split("```layers", 1)[1].split("```", 1)[0]
    layers = {}
    for line in block.strip().splitlines():
        number, *names = line.split()
        for name in names:
            layers[name] = int(number)
    return layers


def _unit(module: str) -> str:
    """The top-level package or module of ``tem_keras.a.b`` (``a``), ``""`` for the package face."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(root: Path = ROOT, layers: dict[str, int] | None = None) -> list[str]:
    """Every import from a unit to one of the same or a higher layer, outside the exceptions."""
    layers = layer_table() if layers is None else layers
    graph = import_graph(root)
    found = []
    for module, edges in graph.items():
        here = _unit(module)
        for target, line in edges.items():
            there = _unit(target)
            if here == there or "" in (here, there) or (module, target) in UPWARD_EXCEPTIONS:
                continue
            missing = [u for u in (here, there) if u not in layers]
            if missing:
                found.append(f"{module}:{line} -> {target}: {missing} not in the layer table")
            elif layers[there] >= layers[here]:
                found.append(f"{module}:{line} -> {target} (layer {layers[here]} imports layer "
                             f"{layers[there]})")
    return found


def test_every_import_goes_down_the_layers():
    assert upward_imports() == []


def test_the_layer_rule_finds_a_planted_upward_import(tmp_path):
    package = tmp_path / PACKAGE
    for name in ("io", "training"):
        (package / name).mkdir(parents=True)
        (package / name / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "io" / "readers.py").write_text("def read():\n    from ..training import fit\n")
    (package / "training" / "fit.py").write_text("from ..io.readers import read\n")
    found = upward_imports(tmp_path, {"io": 2, "training": 7})
    assert found == ["tem_keras.io.readers:2 -> tem_keras.training.fit (layer 2 imports layer 7)"]
    (package / "io" / "readers.py").write_text("def read():\n    from ..nowhere import x\n")
    (package / "nowhere.py").write_text("")
    assert upward_imports(tmp_path, {"io": 2, "training": 7}) == [
        "tem_keras.io.readers:2 -> tem_keras.nowhere: ['nowhere'] not in the layer table"]


#: the longest a function of the package may be, docstring included
MAX_FUNCTION_LINES = 120


def long_functions(root: Path = ROOT, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``module:line name (n lines)`` for every function or method longer than ``limit`` lines."""
    found = []
    for module, (path, _) in _modules(root).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{module}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_the_limit():
    assert long_functions() == []


def test_the_length_rule_counts_a_long_function(tmp_path):
    (tmp_path / PACKAGE).mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / PACKAGE / "long.py").write_text(f"\n\ndef short():\n    pass\n\n\ndef long():\n{body}")
    assert long_functions(tmp_path) == [f"tem_keras.long:7 long ({MAX_FUNCTION_LINES + 1} lines)"]
