"""Importing xbench changes nothing global, and what is read from the environment is read when it is used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SNAPSHOT = """
import json, os, pkgutil, sys, warnings, logging, importlib
import numpy as np

def snapshot():
    _, keys, position, *_ = np.random.get_state()
    return {
        "environ": dict(os.environ),
        "warning_filters": len(warnings.filters),
        "numpy_random": [int(keys.sum()), int(position)],
        "numpy_trapz": hasattr(np, "trapz"),
        "mlflow_level": logging.getLogger("mlflow").level,
        "alembic_level": logging.getLogger("alembic").level,
    }

# The libraries xbench builds on change some things when imported (cv2 sets Qt variables, torch KMP ones): they are
# imported first, so what is compared is what xbench's own modules do.
for library in ("torch", "torchvision", "timm", "quantus", "captum", "pytorch_grad_cam", "zennit", "torch_pruning",
                "mlflow", "matplotlib.pyplot", "scipy.stats", "statsmodels.api", "numba", "ray", "psycopg"):
    importlib.import_module(library)
before = snapshot()
import xbench
for module in pkgutil.walk_packages(xbench.__path__, "xbench."):
    if module.name != "xbench.__main__":
        importlib.import_module(module.name)
after = snapshot()
print(json.dumps({"before": before, "after": after, "modules": len(sys.modules)}))
"""


def test_importing_every_xbench_module_changes_no_global_state(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", SNAPSHOT], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    before, after = report["before"], report["after"]
    assert after["environ"] == before["environ"]
    assert {k: v for k, v in after.items() if k != "environ"} == {k: v for k, v in before.items() if k != "environ"}


def test_the_cache_dir_is_read_when_a_cache_is_opened(tmp_path: Path, monkeypatch) -> None:
    from xbench.core.cache import Cache

    monkeypatch.setenv("XBENCH_CACHE_DIR", str(tmp_path / "later"))
    assert Cache().root == tmp_path / "later"  # set after xbench was imported, and still honoured


def test_a_generated_dataset_is_written_under_the_runs_cache_dir(tmp_path: Path, monkeypatch) -> None:
    from xbench.components.datasets import load_dataset
    from xbench.core.suite import DatasetConfig

    monkeypatch.setenv("XBENCH_CACHE_DIR", str(tmp_path / "environment"))
    config = DatasetConfig(name="shapes_files", image_size=32, train_size=8, eval_size=8)
    load_dataset(config, seed=0, cache_root=tmp_path / "given")
    assert list((tmp_path / "given" / "datasets").glob("shapes-*/.complete"))
    assert not (tmp_path / "environment").exists()
