"""What importing a module drags in: the readers load no torch, and the wings have no import cycles."""

import ast
import importlib
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import cpdm

ROOT = Path(__file__).resolve().parent.parent

# Modules that only read (the analysis, the pages' imports, `cpdm scores list`) must not pay for torch.
TORCH_FREE = [
    "cpdm.analysis",
    "cpdm.scoring.reader",
    "cpdm.rating.submit",
    "cpdm.rating.assignment",
    "cpdm.rating.auth",
    "cpdm.rating.campaigns",
    "cpdm.store.workspace",
    "cpdm.store.writer",
    "cpdm.app.ui",
    "cpdm.cli",
]


def imported_modules(statement: str) -> set[str]:
    """Every module a fresh interpreter imports to run ``statement`` (from ``-X importtime``)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert names, result.stderr[-2000:]
    return names


@pytest.mark.parametrize("module", TORCH_FREE)
def test_reading_modules_load_no_torch(module):
    loaded = imported_modules(f"import {module}")
    assert module in loaded
    heavy = sorted(name for name in loaded if name.split(".")[0] in ("torch", "torchvision", "open_clip", "diffusers"))
    assert heavy == [], f"import {module} loads {heavy[:5]}"


def test_the_page_imports_load_no_torch():
    """The cpdm modules every page imports, loaded together, stay torch-free (a page must not wait for torch)."""
    modules = set()
    for page in sorted((ROOT / "pages").glob("*.py")):
        for node in ast.parse(page.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cpdm"):
                modules.add(node.module)
    assert "cpdm.analysis.campaign_report" in modules
    loaded = imported_modules("; ".join(f"import {name}" for name in sorted(modules)))
    assert not any(name.split(".")[0] == "torch" for name in loaded)


def test_the_scoring_engine_does_load_torch():
    """The check above can fail: the engine is the module that needs torch."""
    assert "torch" in imported_modules("import cpdm.scoring.engine")


def all_cpdm_modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(cpdm.__path__, "cpdm."))


def module_imports(name: str) -> set[str]:
    """The cpdm modules ``name`` imports, at its top level or inside its functions."""
    spec = importlib.util.find_spec(name)
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cpdm"):
            for alias in node.names:  # `from cpdm.scoring import engine` imports the module engine
                submodule = f"{node.module}.{alias.name}"
                is_module = _is_package(node.module) and importlib.util.find_spec(submodule) is not None
                found.add(submodule if is_module else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("cpdm"))
    return found


def _is_package(name: str) -> bool:
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:  # a parent that is a module, not a package
        return False
    return spec is not None and spec.submodule_search_locations is not None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the import graph, as the list of modules along it, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_module_of_the_library_is_in_an_import_cycle():
    """The wings import one way, counting imports inside functions too.

    Left out: a package loading its own submodules on demand (``cpdm.backbones``
    picks a model's module by name).
    """
    graph = {}
    for name in all_cpdm_modules():
        imports = module_imports(name)
        graph[name] = {i for i in imports if not i.startswith(name + ".")} if _is_package(name) else imports
    assert "cpdm.rating.protocol" in graph and "cpdm.store.writer" in graph and "cpdm.cli.options" in graph
    assert find_cycle(graph) is None, find_cycle(graph)


# The house's floors, lowest first: a module may import its own floor and the floors below, never one above.
# A module belongs to the floor of the longest name here that it is or lies under.
FLOORS = (
    ("cpdm", "cpdm.errors", "cpdm.values", "cpdm.progress", "cpdm.compute_device", "cpdm.metric",
     "cpdm.user_files", "cpdm.hf_cache"),  # plain facts
    ("cpdm.store",),  # the workspace
    ("cpdm.backbones", "cpdm.diffusion"),  # the models: the metric's, and Stable Diffusion
    ("cpdm.curation", "cpdm.rating", "cpdm.scoring", "cpdm.executor"),  # the executor: where batches compute
    ("cpdm.generation",),
    ("cpdm.unlearning",),
    ("cpdm.analysis",),
    ("cpdm.demo", "cpdm.jobs"),
    ("cpdm.app",),  # the app: its pages' helpers, the answer panel, serving
    ("cpdm.cli", "cpdm.__main__", "cpdm.testing"),  # the command; what only tests use
)

def floor_of(module: str) -> int:
    """The floor ``module`` lives on (its longest declared prefix)."""
    best, floor = "", None
    for level, names in enumerate(FLOORS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, floor = name, level
    assert floor is not None, f"{module} is on no floor: add it to FLOORS"
    return floor


def test_no_import_runs_up_a_floor():
    """Lower wings never import higher ones, at the top of a file or inside a function."""
    upward = []
    for name in all_cpdm_modules():
        for imported in module_imports(name):
            if floor_of(imported) > floor_of(name):
                upward.append(f"{name} (floor {floor_of(name)}) -> {imported} (floor {floor_of(imported)})")
    assert upward == []


def test_the_floor_check_can_fail():
    assert floor_of("cpdm.progress") < floor_of("cpdm.jobs.worker") < floor_of("cpdm.cli.options")
    assert floor_of("cpdm.diffusion.pipeline") < floor_of("cpdm.generation.batch") < floor_of("cpdm.unlearning.runner")


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["cpdm.rating.protocol", "cpdm.rating.campaigns", "cpdm.rating.assignment",
                                    "cpdm.rating.submit", "cpdm.rating.auth"])
def test_each_rating_module_imports_first_in_a_fresh_interpreter(module):
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True)


def test_protocol_toml_is_parsed_only_by_the_protocol_module():
    """One parser of protocols: every other module asks cpdm.rating.protocol."""
    readers = sorted(name for name in all_cpdm_modules() if "tomllib" in module_imports_any(name))
    assert readers == ["cpdm.rating.protocol"]


def module_imports_any(name: str) -> set[str]:
    """Every module name ``name`` imports (cpdm or not), anywhere in its source."""
    tree = ast.parse(Path(importlib.util.find_spec(name).origin).read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_every_package_under_cpdm_is_installed():
    """pyproject.toml lists packages by name: a new folder under cpdm/ must be listed, or installs miss it."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "cpdm").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk - listed == set()
