"""The house's layers, checked on every module found on disk (none listed by hand).

Bottom to top (an import may only point down this list, or stay within its own layer):

    0 formats    quiver.resources.{spec, spec_file, spicepod, faults, files, values}: the dataset
                 spec (its file, and a spicepod read as one), the fault points,
                 the one atomic-publish helper, the one JSON encoder and table printer
    1 engine     every other module under quiver.resources but its dagster package; no Dagster
    2 dagster    quiver.resources.dagster_resources: the Dagster resources and asset names
    3 dagster-bodies  quiver.assets and quiver.sensors (neither imports the other)
    4 pipelines  quiver.pipelines: definitions, jobs, schedules, command line, HTTP, SQL
    5 api        quiver itself: the public names

Also refused: an import cycle between modules; a function-level import of a project module (a late
import hides a cycle or a layer break; the one exception is a module ``__getattr__``, PEP 562's lazy
attribute, which still points down); a bare ``resources``/``assets``/``sensors``/``pipelines``
import (the installed name is ``quiver.*``; the bare name would load a second copy of the module).

``python tests/test_layers.py`` prints the graph's summary: modules per layer, imports, and each
import that breaks a rule.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("formats", "engine", "dagster", "dagster-bodies", "pipelines", "api")
FORMATS = {f"quiver.resources.{name}" for name in ("spec", "spec_file", "spicepod", "faults", "files", "values")}
BARE = ("resources", "assets", "sensors", "pipelines")
DAGSTER = ("dagster", "dagster_duckdb", "dagster_webserver", "dagster_graphql", "dagster_pipes", "dagster_shared")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a submodule when ``from package import submodule``)
    line: int
    top_level: bool  # at module level (not inside a function or a class body's method)
    lazy_attribute: bool  # inside a module-level ``__getattr__``


def package_dirs(root: Path) -> dict[str, Path]:
    """quiver's packages and their folders, as pyproject.toml maps them for the build."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name: root / folder for name, folder in config.items()}


def find_modules(root: Path) -> dict[str, Path]:
    """Every module of the project: each .py file under a mapped folder, named as installed."""
    mapping = package_dirs(root)
    modules: dict[str, Path] = {}
    for package, folder in mapping.items():
        nested = [other for other in mapping.values() if other != folder and folder in other.parents]
        for path in sorted(folder.rglob("*.py")):
            if any(n == path.parent or n in path.parents for n in nested) or "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def layer_of(module: str) -> int:
    if module in ("quiver", "quiver.__main__"):
        return LAYERS.index("api")
    if module in FORMATS:
        return LAYERS.index("formats")
    for prefix, layer in (
        ("quiver.resources.dagster_resources", "dagster"),
        ("quiver.resources", "engine"),
        ("quiver.assets", "dagster-bodies"),
        ("quiver.sensors", "dagster-bodies"),
        ("quiver.pipelines", "pipelines"),
    ):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS.index(layer)
    raise ValueError(f"{module} is in no layer: add it to tests/test_layers.py")


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                getattr_hook = top_level and isinstance(child, ast.FunctionDef) and child.name == "__getattr__"
                visit(child, False, getattr_hook)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, alias.name, child.lineno, top_level, lazy))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".") if is_package else module.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, *([child.module] if child.module else [])])
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append(Import(module, sub if sub in modules else base, child.lineno, top_level, lazy))
            visit(child, top_level, lazy)

    visit(tree, True, False)
    return list(dict.fromkeys(found))  # one per (target, line): `from x import a, b` is one import


def project_root(name: str) -> str:
    return name.split(".")[0]


def _second(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def check(root: Path = ROOT) -> tuple[list[str], dict]:
    """(problems, summary) for the project at ``root``."""
    modules = find_modules(root)
    problems: list[str] = []
    edges: dict[str, set[str]] = {m: set() for m in modules}
    count = 0
    for module, path in modules.items():
        where = lambda imp: f"{path.relative_to(root)}:{imp.line}"  # noqa: E731
        for imp in imports_of(module, path, modules):
            top = project_root(imp.target)
            if top in BARE:
                problems.append(f"{where(imp)}: {module} imports {imp.target!r}: import it as 'quiver.{imp.target}'")
                continue
            if top in DAGSTER and layer_of(module) <= LAYERS.index("engine"):
                problems.append(f"{where(imp)}: {module} is engine code and imports {imp.target} (no Dagster below quiver.resources.dagster_resources)")
                continue
            if top != "quiver":
                continue
            if imp.target not in modules:
                problems.append(f"{where(imp)}: {module} imports {imp.target}, which is not a module of the project")
                continue
            count += 1
            edges[module].add(imp.target)
            low, high = layer_of(module), layer_of(imp.target)
            if high > low:
                problems.append(
                    f"{where(imp)}: {module} ({LAYERS[low]}) imports {imp.target} ({LAYERS[high]}), a higher layer"
                )
            elif {_second(module), _second(imp.target)} == {"assets", "sensors"}:
                problems.append(
                    f"{where(imp)}: {module} imports {imp.target}: assets and sensors share names through "
                    "quiver.resources.dagster_resources, never each other"
                )
            if not imp.top_level and not imp.lazy_attribute:
                problems.append(
                    f"{where(imp)}: {module} imports {imp.target} inside a function; import it at the top "
                    "(a late import hides a cycle or a layer break)"
                )
    for cycle in cycles(edges):
        problems.append("import cycle: " + " -> ".join([*cycle, cycle[0]]))
    per_layer = {name: sum(1 for m in modules if layer_of(m) == i) for i, name in enumerate(LAYERS)}
    return problems, {"modules": len(modules), "layers": per_layer, "imports": count}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


# -- the tests ------------------------------------------------------------------------------------
def test_the_project_keeps_its_layers():
    problems, summary = check()
    assert summary["modules"] > 50 and all(summary["layers"].values()), summary
    assert not problems, "\n".join(problems)


def _copy_of_the_project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".*", "__pycache__", "tests", "data", "docs", "*.parquet"))
    return copy


def test_planted_breaks_are_found(tmp_path):
    copy = _copy_of_the_project(tmp_path)
    assert check(copy)[0] == []
    plants = {
        "resources/index/planted_up.py": "from quiver.assets import dataset_assets\n",
        "resources/warehouse/planted_dagster.py": "import dagster as dg\n",
        "resources/planted_a.py": "from quiver.resources import planted_b\n",
        "resources/planted_b.py": "from quiver.resources.planted_a import x\nx = 1\n",
        "pipelines/planted_late.py": "def f():\n    from quiver.resources.spec import load_spec\n    return load_spec\n",
        "sensors/planted_sideways.py": "from quiver.assets.rows import rows_asset\n",
        "assets/planted_bare.py": "from resources.spec import load_spec\n",
    }
    for relative, code in plants.items():
        (copy / relative).write_text(code)
    problems = "\n".join(check(copy)[0])
    assert "quiver.resources.index.planted_up (engine) imports quiver.assets (dagster-bodies), a higher layer" in problems
    assert "quiver.resources.warehouse.planted_dagster is engine code and imports dagster" in problems
    assert "import cycle: quiver.resources.planted_a -> quiver.resources.planted_b -> quiver.resources.planted_a" in problems
    assert "quiver.pipelines.planted_late imports quiver.resources.spec inside a function" in problems
    assert "quiver.sensors.planted_sideways imports quiver.assets.rows: assets and sensors share names" in problems
    assert "quiver.assets.planted_bare imports 'resources.spec': import it as 'quiver.resources.spec'" in problems
    assert len(problems.splitlines()) == len(plants) - 1  # the two halves of the cycle are one problem


def test_a_lazy_module_attribute_is_the_one_late_import_allowed(tmp_path):
    copy = _copy_of_the_project(tmp_path)
    (copy / "pipelines" / "planted_lazy.py").write_text(
        "def __getattr__(name):\n    from quiver.resources.spec import load_spec\n    return load_spec\n"
    )
    assert check(copy)[0] == []
    (copy / "resources" / "planted_lazy_up.py").write_text(
        "def __getattr__(name):\n    from quiver.pipelines import definitions\n    return definitions\n"
    )
    assert any("planted_lazy_up (engine) imports quiver.pipelines.definitions" in p for p in check(copy)[0])


def _dagster_loaded_by(modules: list[str]) -> list[str]:
    """The Dagster modules a fresh process holds after importing ``modules``."""
    code = "import sys\n" + "".join(f"import {m}\n" for m in modules) + (
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in " + repr(DAGSTER) + ")))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_importing_the_engine_loads_no_dagster():
    engine = sorted(m for m in find_modules(ROOT) if layer_of(m) <= LAYERS.index("engine"))
    assert len(engine) > 30 and _dagster_loaded_by(engine) == []


def test_the_query_surfaces_load_no_dagster():
    """search, status, SQL and HTTP read index directories: a process that only queries starts
    without Dagster (seconds of imports); the definitions do load it (the check can fail)."""
    surfaces = ["quiver", "quiver.pipelines.cli", "quiver.pipelines.sql", "quiver.pipelines.http_api"]
    assert _dagster_loaded_by(surfaces) == []
    assert "dagster" in _dagster_loaded_by(["quiver.pipelines.definitions"])


if __name__ == "__main__":
    found, summary = check()
    print(f"{summary['modules']} modules, {summary['imports']} imports between them")
    for name, count in summary["layers"].items():
        print(f"  {name:15} {count}")
    print(f"{len(found)} problems")
    for problem in found:
        print("  " + problem)
