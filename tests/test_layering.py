"""Every import points down the layers, and no two modules import each other.

The package is read as installed (``fastsiren/``, ``kernels/`` as ``fastsiren.kernels``,
``reference/`` as ``fastsiren.reference``) and parsed, never imported: every import statement
counts, at module level, inside functions and under ``TYPE_CHECKING``, relative ones resolved
against their package. ``from P import name`` counts as an import of the module ``P.name`` when
there is one, else of ``P`` itself; a name re-exported by a package ``__init__`` counts as an
import of the module that ``__init__`` takes it from. Package ``__init__`` files are left out
as importers and as targets otherwise: they only re-export, and importing any submodule runs its
package's ``__init__`` anyway.

Three rules, each its own test:
- no cycle between modules (strongly connected components of the import graph);
- no import from a module to one in a higher layer of ``LAYERS``; a module that no entry of
  ``LAYERS`` covers fails too, so a new module is placed before it lands;
- a task (a module that ``TASKS`` in ``fastsiren/tasks/__init__.py`` registers) imports no other
  task: what tasks share lives in modules of the task layer that are not tasks themselves
  (``tasks.base``, ``tasks.common``).

docs/ARCHITECTURE.md explains the layers and where each kind of change goes.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Source folder -> the package it installs as (pyproject.toml's [tool.setuptools.package-dir]).
INSTALLED_AS = {"fastsiren": "fastsiren", "kernels": "fastsiren.kernels",
                "reference": "fastsiren.reference"}

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("fastsiren.errors", "fastsiren.env", "fastsiren.jet", "fastsiren._version",
              "fastsiren.io", "fastsiren.checkpoint", "fastsiren.deps", "fastsiren.data")),
    ("reference", ("fastsiren.reference",)),
    ("contract", ("fastsiren.jet_ops",)),
    ("backends", ("fastsiren.sine_jet", "fastsiren.fused_epilogues", "fastsiren.kernels")),
    ("functions", ("fastsiren.jet_function", "fastsiren.adjoint", "fastsiren.nested_autograd")),
    ("dispatch", ("fastsiren.selfcheck", "fastsiren.dispatch")),
    ("api", ("fastsiren.functional", "fastsiren.modules", "fastsiren.registry",
             "fastsiren.physics", "fastsiren.mesh", "fastsiren.mesh_metrics",
             "fastsiren.hypernet.models")),
    ("tasks", ("fastsiren.tasks", "fastsiren.hypernet.data")),
    ("fit loop", ("fastsiren.fit",)),
    ("front ends", ("fastsiren.cli", "fastsiren.benchmark", "fastsiren.__main__")),
)
"""The layers from the bottom up: (name, the modules in it). An entry covers the module of that
name and, for a package, every module below it; the longest entry that covers a module decides
its layer. A module may import from its own layer and the layers below it, never above:

base        errors, the one reader of environment variables, the Jet type, the version, file
            formats and checkpoint files: no SIREN maths.
reference   the plain SIREN and nested-autograd operators: the truth the tests compare with.
contract    what a backend provides (``JetOps``) and the registry of backends.
backends    the torch backend (``sine_jet``, ``fused_epilogues``) and the Triton kernels.
functions   the autograd Functions that chain a backend's ops: jet, adjoint, nested autograd.
dispatch    backend name -> the Function to run (and the one-time Triton self-check).
api         what users build on: functional API, modules, model registry, physics operators
            on jets, meshing and mesh metrics, the hypernetwork models.
tasks       one module per task, on ``tasks.base`` and ``tasks.common``; the hypernetwork data.
fit loop    the one training loop for every task.
front ends  the command line, the benchmark suite, ``python -m fastsiren``.
"""


def find_modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` under the installed source folders of ``root``."""
    modules = {}
    for folder, package in INSTALLED_AS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _existing(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules (``None`` for torch...)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name ``from ... import`` refers to, relative levels resolved."""
    if not node.level:
        return node.module or ""
    base = module if _is_package(path) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def _reexports(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Package -> {name it re-exports: the module it takes the name from}, from the plain
    ``from .x import name`` statements of its ``__init__``."""
    out: dict[str, dict[str, str]] = {}
    for package, path in modules.items():
        if not _is_package(path):
            continue
        names = out.setdefault(package, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(package, path, node)
                for alias in node.names:
                    target = _existing(f"{source}.{alias.name}", modules) or _existing(
                        source, modules)
                    if target is not None and target != package:
                        names[alias.asname or alias.name] = target
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules it imports (package ``__init__`` files left out on both sides)."""
    reexports = _reexports(modules)

    def targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [t for a in node.names if (t := _existing(a.name, modules))]
        source = _absolute(module, path, node)
        found = []
        for alias in node.names:
            target = _existing(f"{source}.{alias.name}", modules) or _existing(source, modules)
            for _ in range(len(reexports)):  # a name from a package __init__, to its source
                if target not in reexports or alias.name not in reexports[target]:
                    break
                target = reexports[target][alias.name]
            if target is not None:
                found.append(target)
        return found

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        if _is_package(path):
            continue
        edges = graph.setdefault(module, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(t for t in targets(module, path, node)
                             if t != module and not _is_package(modules[t]))
    return graph


def layer_of(module: str) -> int | None:
    """The index in ``LAYERS`` of the longest entry that covers ``module``."""
    best, best_len = None, -1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best_len:
                best, best_len = index, len(entry)
    return best


def unplaced_modules(graph: dict[str, set[str]]) -> list[str]:
    return sorted(m for m in graph if layer_of(m) is None)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer to a higher one, as readable lines."""
    lines = []
    for module, targets in sorted(graph.items()):
        low = layer_of(module)
        for target in sorted(targets):
            high = layer_of(target)
            if low is not None and high is not None and high > low:
                lines.append(f"{module} ({LAYERS[low][0]}) -> {target} ({LAYERS[high][0]})")
    return lines


def task_modules(modules: dict[str, Path]) -> set[str]:
    """The modules ``TASKS`` registers (its values are ``"module:Class"`` strings)."""
    tree = ast.parse(modules["fastsiren.tasks"].read_text())
    for node in ast.walk(tree):
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "TASKS":
            return {spec.split(":")[0] for spec in ast.literal_eval(node.value).values()}
    raise AssertionError("fastsiren/tasks/__init__.py defines no TASKS")


def sideways_task_imports(graph: dict[str, set[str]], tasks: set[str]) -> list[str]:
    """Every import from one task to another."""
    return [f"{module} -> {target}" for module, targets in sorted(graph.items())
            if module in tasks for target in sorted(targets) if target in tasks]


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(cycles)


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return find_modules(ROOT)


@pytest.fixture(scope="module")
def graph(modules) -> dict[str, set[str]]:
    return import_graph(modules)


def test_every_module_has_a_layer(graph):
    assert not unplaced_modules(graph), (
        "modules in no layer (add each to LAYERS in tests/test_layering.py and to "
        "docs/ARCHITECTURE.md): " + ", ".join(unplaced_modules(graph)))


def test_no_import_points_up(graph):
    upward = upward_imports(graph)
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_import_cycle(graph):
    cycles = import_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_task_imports_another_task(modules, graph):
    sideways = sideways_task_imports(graph, task_modules(modules))
    assert not sideways, "tasks importing other tasks:\n" + "\n".join(sideways)


# The checks themselves, on a small tree written for the purpose: each rule must fire.


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


FAKE_TREE = {
    "fastsiren/__init__.py": "from .modules import Siren\n",
    "fastsiren/errors.py": "class InputError(ValueError):\n    pass\n",
    # base -> api inside a function, under an absolute name: upward.
    "fastsiren/env.py": "def f():\n    from fastsiren.modules import Siren\n    return Siren\n",
    # reference -> base through a relative import: allowed.
    "reference/__init__.py": "",
    "reference/siren.py": "from ..errors import InputError\n",
    # api <-> api: a cycle, one side only under TYPE_CHECKING.
    "fastsiren/modules.py": "from . import functional\nclass Siren:\n    pass\n",
    "fastsiren/functional.py": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .modules import Siren\n"),
    # backends -> api through a name the package root re-exports: upward.
    "kernels/__init__.py": "",
    "kernels/sine_jet.py": "import torch\nfrom fastsiren import Siren\n",
    "fastsiren/tasks/__init__.py": (
        "TASKS: dict[str, str] = {'image': 'fastsiren.tasks.image:ImageTask',\n"
        "                         'video': 'fastsiren.tasks.video:VideoTask'}\n"),
    "fastsiren/tasks/base.py": "",
    "fastsiren/tasks/common.py": "from .base import *\n",
    "fastsiren/tasks/image.py": "from .base import *\nfrom .common import *\n",
    # a task on another task: sideways.
    "fastsiren/tasks/video.py": "from . import image\nfrom .base import *\n",
    "fastsiren/gadget.py": "",  # in no layer
}


def test_the_checks_fire_on_a_tree_that_breaks_each_rule(tmp_path):
    _write_tree(tmp_path, FAKE_TREE)
    modules = find_modules(tmp_path)
    graph = import_graph(modules)
    assert graph["fastsiren.reference.siren"] == {"fastsiren.errors"}
    assert graph["fastsiren.kernels.sine_jet"] == {"fastsiren.modules"}
    assert upward_imports(graph) == [
        "fastsiren.env (base) -> fastsiren.modules (api)",
        "fastsiren.kernels.sine_jet (backends) -> fastsiren.modules (api)",
    ]
    assert import_cycles(graph) == [["fastsiren.functional", "fastsiren.modules"]]
    assert task_modules(modules) == {"fastsiren.tasks.image", "fastsiren.tasks.video"}
    assert sideways_task_imports(graph, task_modules(modules)) == [
        "fastsiren.tasks.video -> fastsiren.tasks.image"]
    assert unplaced_modules(graph) == ["fastsiren.gadget"]


def test_the_checks_pass_a_tree_that_keeps_the_rules(tmp_path):
    kept = {k: v for k, v in FAKE_TREE.items()
            if k not in ("fastsiren/env.py", "kernels/sine_jet.py", "fastsiren/functional.py",
                         "fastsiren/tasks/video.py", "fastsiren/gadget.py")}
    _write_tree(tmp_path, kept)
    modules = find_modules(tmp_path)
    graph = import_graph(modules)
    assert graph["fastsiren.reference.siren"] == {"fastsiren.errors"}
    assert graph["fastsiren.tasks.image"] == {"fastsiren.tasks.base", "fastsiren.tasks.common"}
    assert not upward_imports(graph) and not import_cycles(graph)
    assert not sideways_task_imports(graph, task_modules(modules))
    assert not unplaced_modules(graph)
