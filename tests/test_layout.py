"""The package layout is the pipeline: each stage imports only from the stages below it, and planning is cheap."""

from __future__ import annotations

import ast
import graphlib
import importlib.util
import re
import sys
from pathlib import Path

import xbench
from tests.conftest import ROOT

PACKAGE = Path(xbench.__file__).parent
# Lowest first: a package may import from itself and from those before it, never from those after it.
STAGES = ("core", "components", "measure", "plan", "store", "execute", "analyse", "present", "human", "cli")


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "xbench" and parts[1] in STAGES else None


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_every_module_lives_in_a_stage_package() -> None:
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py", "api.py")]
    assert loose == []
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == set(STAGES)


def test_no_stage_imports_a_later_stage() -> None:
    upward = []
    for path in PACKAGE.rglob("*.py"):
        own = path.relative_to(PACKAGE).parts[0]
        if own not in STAGES:
            continue
        for module in _imports(path):
            stage = _stage(module)
            if stage is not None and STAGES.index(stage) > STAGES.index(own):
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert upward == []


def _module_name(path: Path) -> str:
    parts = ("xbench", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_time_imports(path: Path, known: set[str]) -> set[str]:
    """The xbench modules a module imports when it is imported: its top-level imports (not those inside functions,
    which run later, nor those under `if TYPE_CHECKING:`, which never run)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            candidates = [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(c for c in candidates if c in known)
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


def test_no_import_cycle() -> None:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: _import_time_imports(path, set(modules)) - {name} for name, path in modules.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None


def test_the_benchmarks_collect() -> None:
    """The benchmarks are not in the test lanes (they time things); an import they lost still fails here. Imported
    here, as pytest's collection imports them, without starting a second pytest."""
    for path in sorted((ROOT / "benchmarks").glob("test_*.py")):
        name = f"_benchmark_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
        assert any(n.startswith("test_") and callable(getattr(module, n)) for n in dir(module)), path


def test_contributing_names_every_module_and_suite_and_links_nothing_outside_the_repository() -> None:
    """CONTRIBUTING's layout is the newcomer's map: each stage's line names each of its modules (cli/ aside: one
    module per command), the suites line names each suite, and no path leaves the repository."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    layout = text[text.index("core/        suite") : text.index("references/  published results")]
    blocks = dict(re.findall(r"^(\w+)/\s+(.*?)(?=^\w+[/.]|\Z)", layout, flags=re.M | re.S))
    for stage in STAGES:
        if stage == "cli":
            continue
        modules = {p.stem for p in (PACKAGE / stage).glob("*.py") if p.name != "__init__.py"}
        missing = sorted(m for m in modules if not re.search(rf"\b{re.escape(m)}\b", blocks[stage]))
        assert not missing, f"CONTRIBUTING's {stage}/ line misses {missing}"
    suites = {p.stem for p in (ROOT / "suites").glob("*.yaml")}
    assert suites and all(re.search(rf"\b{re.escape(name)}\b", blocks["suites"]) for name in suites)
    assert (PACKAGE / "suites").resolve() == (ROOT / "suites").resolve()  # the package's suites are the top-level ones
    assert "../" not in text
