"""Ray and the PostgreSQL driver are extras: without them a laptop install works, and asking for them names the extra.

Both packages are installed in the test environment, so a missing one is simulated the one way Python allows: a
`None` entry in `sys.modules` makes its import fail, in a fresh interpreter that runs the real CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SMOKE


def _xbench_without(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    script = f"import sys; sys.modules[{module!r}] = None; sys.argv = ['xbench', *{args!r}]\n"
    script += "from xbench.cli import entry_point\nentry_point()"
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("ray", ["run", "suite", str(SMOKE), "--backend", "ray"], "xbench[ray]"),
        (
            "psycopg",
            ["run", "suite", str(SMOKE), "--tracking-uri", "postgresql://xbench@localhost/xbench"],
            "xbench[server]",
        ),
    ],
)
def test_a_missing_extra_is_named_and_nothing_is_written(
    module: str, args: list[str], extra: str, tmp_path: Path
) -> None:
    result = _xbench_without(module, args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"pip install '{extra}'" in result.stderr and module in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_local_backend_needs_neither_extra(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['ray'] = None; sys.modules['psycopg'] = None\n"
        "from xbench.execute.backends import BackendOptions\n"
        "from xbench.store.tracking import Store\n"
        "BackendOptions().validated(); Store('sqlite:///store.db')\n"
        "import xbench.cli, xbench.execute.driver\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
