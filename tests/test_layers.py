"""Imports run one way: from the commands down to ``io/``, ``quant/`` and ``errors``.

The package's imports are read with ``ast`` (module-level and function-level alike; only those under
``if TYPE_CHECKING:`` are left out, as they never run): no module may import one of a higher layer,
and no import cycle may exist, even within a layer. The layers are declared here, bottom first.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mote_convert"

LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "mote_convert.errors",
        "mote_convert.numbers",
        "mote_convert.pretokenizers",
        "mote_convert.resources",
        "mote_convert.tiny",
        "mote_convert.version",
    ),
    ("mote_convert.io", "mote_convert.quant"),
    ("mote_convert.kernels",),
    ("mote_convert.format",),
    ("mote_convert.arch",),
    (
        "mote_convert.options",
        "mote_convert.memory",
        "mote_convert.report",
        "mote_convert.checkpoint",
        "mote_convert.check",
        "mote_convert.plan",
        "mote_convert.upcycle_plan",
        "mote_convert.config_patch",
    ),
    ("mote_convert.execute", "mote_convert.write", "mote_convert.modeling"),
    ("mote_convert.inspection", "mote_convert.export", "mote_convert.generation", "mote_convert.serving"),
    ("mote_convert.evaluation", "mote_convert.lmms_model"),
    ("mote_convert.card",),
    ("mote_convert.upcycle", "mote_convert.pack"),
    ("mote_convert.train",),
    ("mote_convert.cli",),
    ("mote_convert",),  # the package's facade: the public API, imported by users only
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at any depth, TYPE_CHECKING blocks excepted)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        skipped = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in ast.walk(node)
        }
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mote_convert"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names if _is_module(f"{node.module}.{a.name}"))
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("mote_convert"))
        name = _module_name(path)
        graph[name] = deps - {name}
    return graph


def layer_of(module: str) -> int:
    """The layer of the longest declared prefix of ``module``."""
    best, layer = -1, None
    for index, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), index
    assert layer is not None, f"{module} is in no declared layer: add it to LAYERS"
    return layer


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a higher layer's module (a package's own submodules excepted)."""
    return [
        f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
        for m, deps in graph.items()
        for d in sorted(deps)
        if layer_of(d) > layer_of(m) and not d.startswith(m + ".")
    ]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (a package's ``__init__`` re-exporting its submodules is not an edge back up)."""
    edges = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return cycles


def test_every_module_is_in_a_layer_and_imports_only_downwards() -> None:
    assert not (found := upward_imports(import_graph())), "\n".join(found)


def test_no_import_cycles() -> None:
    assert not (found := find_cycles(import_graph())), "\n".join(" -> ".join(c) for c in found)


def test_the_checks_see_a_back_arrow_and_a_cycle() -> None:
    """The oracle's other side, on the two faults this package once had: load and quantizer importing
    each other (inside functions), and a writer importing the CLI."""
    graph = import_graph()
    graph["mote_convert.modeling.quantizer"] = graph["mote_convert.modeling.quantizer"] | {"mote_convert.modeling.load"}
    graph["mote_convert.io.staging"] = graph["mote_convert.io.staging"] | {"mote_convert.cli.pack"}
    assert ["mote_convert.io.staging (layer 1) imports mote_convert.cli.pack (layer 12)"] == upward_imports(graph)
    cycles = [set(c) for c in find_cycles(graph)]
    assert {"mote_convert.modeling.load", "mote_convert.modeling.quantizer"} in cycles
    assert any({"mote_convert.cli.pack", "mote_convert.io.staging"} <= c for c in cycles)
