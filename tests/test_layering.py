"""Imports go only leftward along the layers the folders show.

    foundation (io, cluster, geometry) → scenarios → sim → envs → agents → evaluation → application

Every module of the package is parsed (not imported): module-level and function-level
`import` / `from … import`, `TYPE_CHECKING` blocks included, and `importlib.import_module`
calls with a literal name. A module may import its own layer and the layers to its left; the
foundation modules import no other diffplatoon module; the application layer (`cli` and its
`cli_*` command modules, `demo`, `run`) alone may import everything. Scenarios are pure specs:
they import no simulator library either.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pytest

LAYERS = ("foundation", "scenarios", "sim", "envs", "agents", "evaluation", "application")

# Module (or package) → layer; the longest matching prefix wins.
LAYER_OF = {
    "diffplatoon.io": "foundation",
    "diffplatoon.cluster": "foundation",
    # The one geometry kernel (wrap_angle, the vehicle size, oriented boxes): pure numpy that every
    # layer uses, scenario validation included, so it sits with the foundation and may import no
    # other diffplatoon module.
    "diffplatoon.geometry": "foundation",
    "diffplatoon.scenarios": "scenarios",
    "diffplatoon.sim": "sim",
    "diffplatoon.envs": "envs",
    "diffplatoon.agents": "agents",
    "diffplatoon.evaluation": "evaluation",
    "diffplatoon.cli": "application",
    "diffplatoon.cli_errors": "application",
    "diffplatoon.cli_evaluate": "application",
    "diffplatoon.cli_scenario": "application",
    "diffplatoon.cli_train": "application",
    "diffplatoon.demo": "application",
    "diffplatoon.run": "application",
}
SUBPACKAGES = ("diffplatoon.scenarios", "diffplatoon.sim", "diffplatoon.envs", "diffplatoon.agents",
               "diffplatoon.evaluation")

# Third-party libraries a layer must not touch: scenarios describe roads, the simulator builds them.
FORBIDDEN_LIBRARIES = {"scenarios": ("highway_env", "shapely", "pygame", "torch", "ray")}


@dataclass(frozen=True)
class Import:
    module: str  # the module that imports
    path: Path
    line: int
    target: str  # the absolute module name imported


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not an importable package"
    return next(Path(p) for p in spec.submodule_search_locations if Path(p).is_dir())


def package_modules() -> dict[str, Path]:
    """Module name → source file, for every module of the diffplatoon distribution."""
    root = _package_dir("diffplatoon")
    modules = {f"diffplatoon.{p.stem}": p for p in sorted(root.glob("*.py"))}
    for package in SUBPACKAGES:
        base = _package_dir(package)
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def layer_of(module: str) -> str | None:
    """The layer of a diffplatoon module, or None when no entry of `LAYER_OF` covers it."""
    best = max((p for p in LAYER_OF if module == p or module.startswith(p + ".")), key=len, default=None)
    return LAYER_OF[best] if best else None


def imports_of(module: str, path: Path, modules: Iterable[str] = ()) -> list[Import]:
    """Every module `module` imports, at any depth of its source (relative imports resolved).

    `from pkg import name` counts as an import of pkg.name when that is one of `modules`, else of pkg.
    """
    known = set(modules)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[tuple[int, str], Import] = {}

    def add(line: int, target: str) -> None:
        found.setdefault((line, target), Import(module, path, line, target))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(node.lineno, sub if sub in known else base)
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                add(node.lineno, arg.value)
    return sorted(found.values(), key=lambda imp: (imp.line, imp.target))


def _is_import_module(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module" and isinstance(func.value, ast.Name) and func.value.id == "importlib"
    return isinstance(func, ast.Name) and func.id == "import_module"


def violations(modules: dict[str, Path]) -> list[str]:
    """One line per import against the layer order: file:line: importer (layer) imports target (layer)."""
    problems = []
    for module, path in modules.items():
        own = layer_of(module)
        for imp in imports_of(module, path, modules):
            where = f"{path}:{imp.line}: {module} ({own})"
            top = imp.target.split(".")[0]
            if top in FORBIDDEN_LIBRARIES.get(own or "", ()):
                problems.append(f"{where} imports {imp.target}, a simulator library the {own} layer must not use")
            if top != "diffplatoon" or imp.target == "diffplatoon":
                continue
            other = layer_of(imp.target)
            if other is None:
                problems.append(f"{where} imports {imp.target}, which belongs to no layer")
            elif own == "foundation":
                problems.append(f"{where} imports {imp.target} ({other}): foundation modules import no diffplatoon module")
            elif LAYERS.index(other) > LAYERS.index(own):
                problems.append(f"{where} imports {imp.target} ({other}), a layer to its right")
    return problems


MODULES = package_modules()


def test_every_module_belongs_to_a_layer() -> None:
    assert len(MODULES) > 40 and "diffplatoon.sim.world" in MODULES and "diffplatoon.cli" in MODULES
    unplaced = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unplaced, f"modules without a layer (add them to LAYER_OF): {unplaced}"


def test_imports_go_only_leftward() -> None:
    found = violations(MODULES)
    assert not found, "imports against the layer order:\n" + "\n".join(found)


@pytest.mark.parametrize("source, line, expected", [
    ("from diffplatoon.agents.policy import make_policy\n", 2, "diffplatoon.agents.policy (agents), a layer to its right"),
    ("def f():\n    import diffplatoon.evaluation.runner\n", 3, "diffplatoon.evaluation.runner (evaluation)"),
    ("import importlib\nimportlib.import_module('diffplatoon.run')\n", 3, "diffplatoon.run (application)"),
    ("from diffplatoon import cli\n", 2, "diffplatoon.cli (application)"),
    ("from ..envs import rewards\n", 2, "diffplatoon.envs.rewards (envs)"),
])
def test_a_rightward_import_is_reported_with_file_line_and_layers(tmp_path, source, line, expected) -> None:
    path = tmp_path / "module.py"
    path.write_text('"""A module of the simulator layer."""\n' + source)
    found = [text for text in violations({**MODULES, "diffplatoon.sim.module": path}) if text.startswith(f"{path}:")]
    assert len(found) == 1
    assert found[0].startswith(f"{path}:{line}: diffplatoon.sim.module (sim) imports ") and expected in found[0]


def test_leftward_and_same_layer_imports_pass(tmp_path) -> None:
    path = tmp_path / "module.py"
    path.write_text("from diffplatoon.scenarios import load_scenario\nfrom diffplatoon.sim import lanes\n"
                    "from diffplatoon.io import atomic_write_text\nimport numpy\n")
    assert not [line for line in violations({"diffplatoon.sim.module": path}) if line.startswith(str(path))]


def test_scenarios_may_not_use_simulator_libraries(tmp_path) -> None:
    path = tmp_path / "module.py"
    path.write_text("from highway_env.road.lane import StraightLane\n")
    (found,) = violations({"diffplatoon.scenarios.module": path})
    assert f"{path}:1: diffplatoon.scenarios.module (scenarios) imports highway_env.road.lane" in found
