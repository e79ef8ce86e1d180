"""The shape of the code base (GUIDE rule 3 and the import direction): no import cycle inside
synthkit/, no module over 400 lines, no function over 100 lines, nothing outside the CLI imports
the CLI, imports go down the GUIDE's layers (cli -> jobs -> pipeline & co -> runtime & co), and
inference (``synthkit.pipeline``) never imports ``synthkit.training``: both import
``synthkit.runtime``.

The import graph is read with ``ast`` from every ``.py`` under ``synthkit/``, imports inside
functions included (they run, just later), imports under ``if TYPE_CHECKING:`` left out (they
never run). ``from pkg import name`` through a lazy package (``__getattr__`` over an ``_API``
dict, see ``synthkit._lazy``) is an edge to the module that defines ``name``, not to the
package, because that is what runs; an eager ``__init__`` that imports its sub-modules is an
edge like any other.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "synthkit"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 100  # end_lineno - lineno of the def (decorators not counted)

#: GUIDE.md's import direction, top layer first: a module may import its own package and the
#: packages of lower layers, never those of a higher layer. Packages the GUIDE does not place
#: (demo, augment, cache, ...) are not checked.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("synthkit.cli", "synthkit.__main__"),
    ("synthkit.jobs",),
    ("synthkit.privacy", "synthkit.segmentation", "synthkit.metrics", "synthkit.pipeline"),
    ("synthkit.training", "synthkit.runtime", "synthkit.diffusion", "synthkit.networks", "synthkit.masks",
     "synthkit.preprocess", "synthkit.io", "synthkit.config"),
)
#: Imports forbidden although they do not go up: (importer, imported) -> why.
NEVER: dict[tuple[str, str], str] = {
    ("synthkit.pipeline", "synthkit.training"): "inference never imports training; both import synthkit.runtime",
    ("synthkit.runtime", "synthkit.training"): "runtime is what training shares with inference: it sits below both",
}

# Exceptions, each with the reason it is the cleaner design. Keep it empty if you can; an entry
# that no longer matches anything fails test_allow_list_has_no_stale_entries.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}
ALLOWED_LONG_MODULES: dict[str, str] = {}  # "synthkit/x.py": reason
ALLOWED_LONG_FUNCTIONS: dict[str, str] = {}  # "synthkit/x.py::qualname": reason


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    is_package: bool
    lazy_api: dict[str, str] = field(default_factory=dict)


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _lazy_api(tree: ast.Module) -> dict[str, str]:
    """The ``_API = {name: module}`` dict of a lazy package's ``__init__`` (empty otherwise)."""
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == "_API" for t in targets) and isinstance(node.value, ast.Dict):
            return {ast.literal_eval(k): ast.literal_eval(v) for k, v in zip(node.value.keys, node.value.values)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)}
    return {}


@cache
def modules() -> dict[str, Module]:
    out: dict[str, Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        name, is_package = _module_name(path)
        out[name] = Module(name, path, tree, len(text.splitlines()), is_package,
                           _lazy_api(tree) if is_package else {})
    return out


def _runtime_imports(tree: ast.AST):
    """Every Import / ImportFrom node that can run (skips ``if TYPE_CHECKING:`` bodies)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _target(name: str, mods: dict[str, Module]) -> str | None:
    """The synthkit module behind ``name`` (a module, or a name re-exported by a lazy package)."""
    if name in mods:
        return name
    pkg, _, attr = name.rpartition(".")
    if pkg in mods:
        lazy = mods[pkg].lazy_api
        return lazy.get(attr, pkg) if lazy else pkg
    return None


@cache
def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for mod in mods.values():
        package = mod.name if mod.is_package else mod.name.rpartition(".")[0]
        for node in _runtime_imports(mod.tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{a.name}" for a in node.names]
            for name in names:
                target = _target(name, mods)
                if target is not None and target != mod.name:
                    graph[mod.name].add(target)
    return graph


def _imported_names(mod: Module) -> set[str]:
    """Every dotted name ``mod`` imports, wherever the import stands (module level, a function,
    ``if TYPE_CHECKING:``): ``import a.b`` gives ``a.b``, ``from a import b`` gives ``a`` and ``a.b``."""
    package = mod.name if mod.is_package else mod.name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _layer(name: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if any(_within(name, p) for p in layer):
            return i
    return None


def _package(name: str) -> str:
    return ".".join(name.split(".")[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def _path_within(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One concrete cycle inside a component, for the failure message."""
    members = set(comp)
    start = comp[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return comp


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _functions(node: ast.AST, prefix: str = ""):
    """(qualified name, def node) for every function, methods and nested functions included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            qual = f"{prefix}{child.name}"
            if not isinstance(child, ast.ClassDef):
                yield qual, child
            yield from _functions(child, qual + ".")
        else:
            yield from _functions(child, prefix)


def _long_functions() -> dict[str, int]:
    return {f"{_rel(mod.path)}::{qual}": fn.end_lineno - fn.lineno
            for mod in modules().values() for qual, fn in _functions(mod.tree)
            if fn.end_lineno - fn.lineno > MAX_FUNCTION_LINES}


def test_the_graph_sees_real_imports():
    """Guards the test itself: known edges, lazy re-exports resolved, TYPE_CHECKING ignored."""
    graph = import_graph()
    assert "synthkit.masks.params" in graph["synthkit.masks.move"]  # module level
    assert "synthkit.io.volume" in graph["synthkit.masks.ops"]  # inside a function
    assert "synthkit.io.cohort" in graph["synthkit.masks.pipeline"]  # via the lazy synthkit.io
    assert "synthkit.io" not in graph["synthkit.masks.pipeline"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    nested = {q: fn.end_lineno - fn.lineno for q, fn in _functions(ast.parse(
        "class A:\n    def f(self):\n        def g():\n            pass\n        return g\n"))}
    assert nested == {"A.f": 3, "A.f.g": 1}


def test_the_layer_checks_see_every_import():
    """Guards the checks below: function-level, relative and TYPE_CHECKING imports are all seen."""
    src = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
           "    from synthkit.training import trainer\ndef f():\n    from ..training.ddp import x\n"
           "    import synthkit.training.ema\n    from synthkit import training\n")
    mod = Module("synthkit.pipeline.fake", PACKAGE / "pipeline" / "fake.py", ast.parse(src), 1, False)
    names = _imported_names(mod)
    assert {"synthkit.training.trainer", "synthkit.training.ddp.x", "synthkit.training.ema",
            "synthkit.training"} <= names
    assert _layer("synthkit.jobs.sample") == 1 and _layer("synthkit.runtime") == 3 and _layer("synthkit.demo") is None
    assert all(_layer(a) is not None and _layer(b) is not None for a, b in NEVER)


def test_pipeline_never_imports_training():
    """Inference loads runs through synthkit.runtime (checkpoint format, DDP, precision), never
    through the trainers' package, not even inside a function."""
    bad = sorted(f"{m.name} imports {n}" for m in modules().values() if _within(m.name, "synthkit.pipeline")
                 for n in _imported_names(m) if _within(n, "synthkit.training"))
    assert not bad, "pipeline/ imports training/:\n" + "\n".join(bad)


def test_imports_go_down_the_layers():
    bad = []
    for mod in modules().values():
        here = _layer(mod.name)
        if here is None:
            continue
        for target in sorted(import_graph()[mod.name]):
            there = _layer(target)
            if _package(target) == _package(mod.name) or there is None:
                continue
            if there < here:
                bad.append(f"{mod.name} -> {target} (up from layer {here} to {there})")
            why = NEVER.get((_package(mod.name), _package(target)))
            if why:
                bad.append(f"{mod.name} -> {target} ({why})")
    assert not bad, "imports against the GUIDE's direction:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = import_graph()
    found = [c for c in _cycles(graph) if frozenset(c) not in ALLOWED_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(_path_within(graph, c)) for c in found)


def test_no_package_cycles():
    """synthkit's subpackages depend on each other one way only, counting imports inside functions
    too (a lazy import still ties two packages together)."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for mod in mods.values():
        src = _package(mod.name)
        graph.setdefault(src, set())
        for name in _imported_names(mod):
            target = _target(name, mods)
            if target is not None and _package(target) != src:
                graph[src].add(_package(target))
    found = [c for c in _cycles(graph) if frozenset(c) not in ALLOWED_CYCLES]
    assert not found, "package cycles:\n" + "\n".join(" -> ".join(_path_within(graph, c)) for c in found)


def test_nothing_outside_the_cli_imports_it():
    entry = ("synthkit.cli", "synthkit.__main__")  # python -m synthkit runs the CLI
    bad = sorted(f"{m} -> {t}" for m, targets in import_graph().items() if not m.startswith(entry)
                 for t in targets if t.startswith("synthkit.cli"))
    assert not bad, "the CLI is the top layer:\n" + "\n".join(bad)


def test_modules_under_400_lines():
    long = {_rel(m.path): m.lines for m in modules().values() if m.lines > MAX_MODULE_LINES}
    found = {k: v for k, v in long.items() if k not in ALLOWED_LONG_MODULES}
    assert not found, "modules over 400 lines:\n" + "\n".join(f"{k}: {v}" for k, v in sorted(found.items()))


def test_functions_under_100_lines():
    found = {k: v for k, v in _long_functions().items() if k not in ALLOWED_LONG_FUNCTIONS}
    assert not found, "functions over 100 lines:\n" + "\n".join(f"{k}: {v}" for k, v in sorted(found.items()))


def test_allow_list_has_no_stale_entries():
    cycles = {frozenset(c) for c in _cycles(import_graph())}
    long_modules = {_rel(m.path) for m in modules().values() if m.lines > MAX_MODULE_LINES}
    stale = [*(sorted(c) for c in ALLOWED_CYCLES if c not in cycles),
             *(m for m in ALLOWED_LONG_MODULES if m not in long_modules),
             *(f for f in ALLOWED_LONG_FUNCTIONS if f not in _long_functions())]
    assert not stale, f"allow-list entries that no longer apply (remove them): {stale}"
