"""Docs people read: a short README for users, and a docs site whose reference is written from the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_readme_is_short_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_the_docs_site_builds_strictly_with_a_reference_from_the_code(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]

    import typer.main

    from xbench.cli import app
    from xbench.cli.listing import _registry
    from xbench.core.suite import Suite

    cli = (site / "reference" / "cli" / "index.html").read_text()
    for name in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        assert f"xbench {name}" in cli
    assert "--format" in cli and "table" in cli  # options with their choices
    schema = (site / "reference" / "suite" / "index.html").read_text()
    for field in Suite.model_fields:
        assert f"<code>{field}</code>" in schema, field
    catalogue = (site / "reference" / "catalogue" / "index.html").read_text()
    for kind in ("datasets", "pruners", "explainers", "metrics"):
        for name in _registry(kind).names():
            assert f"<code>{name}</code>" in catalogue, (kind, name)
