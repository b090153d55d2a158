"""The package layout is the pipeline: each stage imports only from the stages below it, and planning is cheap."""

from __future__ import annotations

import ast
from pathlib import Path

import xbench

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
