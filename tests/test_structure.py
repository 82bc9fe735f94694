"""The package's structure, checked over its import graph: no import cycle, no upward import.

Every ``import``/``from ... import`` of a ``scorer`` module counts, including the ones inside
functions and under ``TYPE_CHECKING`` (a lazy import is still a dependency), relative ones, and
``from scorer.x import y`` where ``y`` is a module or a package. Importing a submodule also runs its
package's ``__init__``; that alone is not counted as importing the package (every submodule would
depend on its package), but taking a name from the ``__init__`` (``from scorer.batch import run``) is.

Modules are grouped into layers, lowest first (:data:`LAYERS`); a module may import only from its own
layer or lower ones, and a module no layer names fails the test, so a new module is placed on
purpose. The two batch engines never import each other, nor do the batch and serving packages.

The README's map of the repository names every file of the package and nothing the tree lacks.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

PACKAGE = Path(__file__).resolve().parent.parent / "scorer"

#: Lowest first. A module may import from its own layer and the layers below it.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "foundation: errors, settings, tables, process helpers, the public face",
        {
            "scorer",
            "scorer._version",
            "scorer.errors",
            "scorer.settings",
            "scorer.load_options",
            "scorer._cpu",
            "scorer._memory",
            "scorer._logging",
            "scorer.table",
            "scorer.schema",
            "scorer.preprocessor",
            "scorer.client",
        },
    ),
    (
        "bundle loading: bundle on disk, its requirements, its model, the scoring core",
        {
            "scorer.bundle",
            "scorer.sources",
            "scorer.object_store",
            "scorer.mlflow_registry",
            "scorer.requirements",
            "scorer.record",
            "scorer.private_dir",
            "scorer._source_only",
            "scorer.jvm",
            "scorer.spark_native",
            "scorer.spark_native.layout",
            "scorer.spark_native.base",
            "scorer.spark_native.features",
            "scorer.spark_native.predictor",
            "scorer.spark_native.special",
            "scorer.spark_native.linear",
            "scorer.spark_native.trees",
            "scorer.spark_native.pipeline",
            "scorer.spark_native.interface",
            "scorer.spark_native.model",
            "scorer.spark_ml",
            "scorer.sklearn_plan",
            "scorer.sklearn_plan.base",
            "scorer.sklearn_plan.preprocess",
            "scorer.sklearn_plan.sparse",
            "scorer.sklearn_plan.text",
            "scorer.sklearn_plan.steps",
            "scorer.sklearn_plan.pipeline",
            "scorer.sklearn_plan.model",
            "scorer.sklearn_plan.verify",
            "scorer.sklearn_plan.store",
            "scorer.scoring_plan",
            "scorer.sklearn_plan.links",
            "scorer.sklearn_plan.trees",
            "scorer.sklearn_plan.linear",
            "scorer.h2o_mojo",
            "scorer.h2o_native",
            "scorer.h2o_native.mojo",
            "scorer.h2o_native.trees",
            "scorer.h2o_native.outputs",
            "scorer.mlflow_model",
            "scorer.native_scoring",
            "scorer.model",
            "scorer.core",
            "scorer.lifecycle",
        },
    ),
    (
        "wire formats: request and response bodies, bounded columnar decoding",
        {
            "scorer.codecs",
            "scorer.open_inference",
            "scorer._columnar_limits",
            "scorer._ipc_metadata",
            "scorer._parquet_pages",
        },
    ),
    (
        "batch job model, shared by both engines",
        {
            "scorer.batch.files",
            "scorer.batch.walk",
            "scorer.batch.plan",
            "scorer.batch.rejects",
            "scorer.batch.worker",
            "scorer.batch.chunks",
            "scorer.batch.shards",
            "scorer.batch.outputs",
        },
    ),
    ("batch engines", {"scorer.batch.local", "scorer.batch.spark"}),
    ("batch command: picks the engine", {"scorer.batch"}),
    (
        "serving parts",
        {
            "scorer.serving",
            "scorer.serving.metrics",
            "scorer.serving.auth",
            "scorer.serving.bodies",
            "scorer.serving.http_errors",
            "scorer.serving.coalescer",
            "scorer.serving.openapi",
            "scorer.serving.state",
            "scorer.serving.loading",
            "scorer.serving.reload",
            "scorer.serving.payload_log",
            "scorer.serving.tracing",
            "scorer.serving.sagemaker",
            "scorer.serving._oip_grpc",
            "scorer.serving._oip_grpc.grpc_predict_v2_pb2",
        },
    ),
    ("serving endpoints", {"scorer.serving.predict"}),
    ("protocol endpoints", {"scorer.serving.inference"}),
    ("the gRPC server (optional: the grpc extra)", {"scorer.serving.grpc_v2"}),
    ("route table", {"scorer.serving.routes"}),
    ("serving ASGI stack", {"scorer.serving.router", "scorer.serving.context", "scorer.serving.app"}),
    ("serving processes", {"scorer.serving.process"}),
    ("command line", {"scorer.cli"}),
    ("entry point", {"scorer.__main__"}),
]

#: Pairs of modules or packages that never import each other (in either direction).
APART: list[tuple[str, str]] = [
    ("scorer.batch.local", "scorer.batch.spark"),
    ("scorer.batch", "scorer.serving"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(source: str, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The ``scorer`` modules the module ``name`` imports, anywhere in ``source``."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "scorer")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "scorer":
                continue
            submodules = {f"{mod}.{a.name}" for a in node.names} & modules
            found |= submodules
            if len(submodules) < len(node.names):  # a name defined in `mod` itself
                found.add(mod)
        elif isinstance(node, ast.Call) and node.args:  # importlib.import_module("scorer.x")
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if called in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str) and arg.value.split(".")[0] == "scorer":
                    found.add(arg.value)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = set(MODULES)
    return {
        name: imports(path.read_text(), name, path.name == "__init__.py", modules)
        for name, path in MODULES.items()
    }


def layer_of() -> dict[str, int]:
    return {module: i for i, (_, members) in enumerate(LAYERS) for module in members}


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_imports_are_read_everywhere():
    """The reader itself: lazy, relative, module-valued and package-valued imports all count."""
    modules = {"scorer", "scorer.a", "scorer.b", "scorer.pkg", "scorer.pkg.c", "scorer.pkg.d"}
    source = (
        "import os\n"
        "from scorer import a\n"
        "def f():\n"
        "    from scorer.pkg import c, helper\n"
        "    from . import d\n"
        "    from .. import b\n"
        "    import scorer.pkg\n"
        "class K:\n"
        "    def g(self):\n"
        "        importlib.import_module('scorer.b')\n"
    )
    assert imports(source, "scorer.pkg.e", False, modules) == {
        "scorer.a", "scorer.b", "scorer.pkg", "scorer.pkg.c", "scorer.pkg.d"
    }
    assert imports("from scorer import pkg", "scorer.x", False, modules) == {"scorer.pkg"}
    assert imports("from . import c", "scorer.pkg", True, modules) == {"scorer.pkg.c"}


def test_every_import_names_a_module_of_the_tree():
    missing = {(m, i) for m, deps in graph().items() for i in deps if i not in MODULES}
    assert not missing, f"imports of scorer modules that do not exist: {sorted(missing)}"


def test_no_import_cycle():
    try:
        graphlib.TopologicalSorter(graph()).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_every_module_is_placed_in_exactly_one_layer():
    placed = [m for _, members in LAYERS for m in members]
    twice = sorted({m for m in placed if placed.count(m) > 1})
    assert not twice, f"modules in more than one layer: {twice}"
    unplaced = sorted(set(MODULES) - set(placed))
    assert not unplaced, f"modules no layer names (place them in LAYERS): {unplaced}"
    stale = sorted(set(placed) - set(MODULES))
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_no_upward_import():
    layer = layer_of()
    upward = [
        f"{m} ({LAYERS[layer[m]][0]}) imports {i} ({LAYERS[layer[i]][0]})"
        for m, deps in sorted(graph().items())
        for i in sorted(deps)
        if m in layer and i in layer and layer[i] > layer[m]
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


@pytest.mark.parametrize(("one", "other"), APART)
def test_kept_apart(one, other):
    crossing = [
        f"{m} imports {i}"
        for m, deps in sorted(graph().items())
        for i in sorted(deps)
        if (within(m, one) and within(i, other)) or (within(m, other) and within(i, one))
    ]
    assert not crossing, f"{one} and {other} must not import each other:\n" + "\n".join(crossing)


# The README's map of the repository ("## Repository"): one line per file or folder, its name first
# and what it is after two or more spaces; two more spaces of indentation for each folder level.

README = PACKAGE.parent / "README.md"
NOT_IN_MAP = {"__pycache__", "build", "dist"}  # made by running or building, never committed


def readme_map(text: str) -> dict[str, str]:
    """``{path: description}`` of the map in the README's Repository section."""
    section = text.split("\n## Repository\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\n", 2)[1]
    entries: dict[str, str] = {}
    folders: list[str] = []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"README map: odd indentation: {line!r}"
        name, _, description = line.strip().partition("  ")
        assert description.strip(), f"README map: {name} has no description"
        del folders[indent // 2 :]
        assert len(folders) == indent // 2, f"README map: {name} is indented below no folder"
        path = "".join(folders) + name
        entries[path] = description.strip()
        if name.endswith("/"):
            folders.append(name)
    return entries


def package_files() -> set[str]:
    """Every file and folder of the package, as the map names them (folders end in ``/``)."""
    root = PACKAGE.parent
    found: set[str] = set()
    for path in PACKAGE.rglob("*"):
        if NOT_IN_MAP & set(path.relative_to(root).parts) or path.suffix == ".pyc":
            continue
        found.add(path.relative_to(root).as_posix() + ("/" if path.is_dir() else ""))
    return found


def test_readme_map_names_every_file_of_the_package():
    named = {p for p in readme_map(README.read_text()) if p.startswith("scorer/") and p != "scorer/"}
    unnamed = sorted(package_files() - named)
    assert not unnamed, f"README.md's Repository map does not name: {unnamed}"


def test_readme_map_names_nothing_missing_from_the_tree():
    root = PACKAGE.parent
    missing = sorted(p for p in readme_map(README.read_text()) if not list(root.glob(p.rstrip("/"))))
    assert not missing, f"README.md's Repository map names what the tree does not hold: {missing}"


def test_readme_map_names_every_top_level_folder():
    named = {p for p in readme_map(README.read_text()) if p.count("/") == 1 and p.endswith("/")}
    folders = {
        p.name + "/"
        for p in PACKAGE.parent.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in NOT_IN_MAP
        and not p.name.endswith(".egg-info")
    }
    assert not folders - named, f"README.md's Repository map omits the folders {sorted(folders - named)}"
