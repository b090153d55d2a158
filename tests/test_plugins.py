"""Plug-ins from outside the package, named in a suite or an entry point, registered before planning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from tests.conftest import SMOKE

PLUGIN = '''
from xbench.api import explainer


@explainer("input_magnitude", "my_lab")
def input_magnitude(model, x, targets, params):
    """|x| summed over channels: a model-independent baseline explanation."""
    return x.abs().sum(dim=1, keepdim=True)
'''


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=environment, capture_output=True, text=True
    )


def test_a_suite_names_a_plugin_module_and_uses_what_it_registers(tmp_path: Path) -> None:
    (tmp_path / "my_lab_explainers.py").write_text(PLUGIN)
    suite = yaml.safe_load(SMOKE.read_text())
    suite.update(name="plugged", plugins=["my_lab_explainers"], explainers=["input_magnitude"], seeds=[0])
    (tmp_path / "plugged.yaml").write_text(yaml.safe_dump(suite))
    result = _run(
        """
        import json
        from xbench.plan.planner import plan
        from xbench.core.suite import load_suite
        cells = plan(load_suite("plugged.yaml")[0], "cpu")
        print(json.dumps(sorted({c.explainer.name for c in cells})))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["input_magnitude"]


def test_without_the_plugin_the_name_is_unknown_and_a_missing_module_is_named(tmp_path: Path) -> None:
    suite = yaml.safe_load(SMOKE.read_text())
    suite.update(name="plugged", explainers=["input_magnitude"])
    (tmp_path / "unplugged.yaml").write_text(yaml.safe_dump(suite))
    suite.update(plugins=["no_such_module"])
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(suite))
    for name, message in (
        ("unplugged", "unknown explainer 'input_magnitude'"),
        ("missing", "plugins[0]: cannot import plug-in module 'no_such_module'"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "xbench", "run", "suite", f"{name}.yaml"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 2 and message in result.stderr, result.stderr
