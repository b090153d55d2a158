"""The plan of a suite remembered by what determines it, so a re-run of a finished suite answers without torch.

Planning imports torch, timm, Quantus and the explainer libraries (about 5 s) and builds models to check them; a
re-run of a finished suite only needs the planned cell keys to compare with the store. The memo is keyed by the suite,
the requested device, this host, the installed versions of every library a cell key depends on and the content of
xbench's own source (plug-in versions live there), so any change that could change a cell key misses the memo and
plans again. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from xbench.core.cache import Cache, content_key, library_versions
from xbench.core.plugins import plugin_digest
from xbench.core.suite import Suite

MEMO_VERSION = "1"


def _source_digest() -> str:
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def memo_key(suite: Suite, device: str, cluster: str | None = None) -> str:
    """What determines a plan: `device` as requested and `cluster` (a Ray --address: its workers decide what `auto`
    means) among the rest."""
    return content_key(
        {
            "memo": MEMO_VERSION,
            "suite": suite.model_dump(mode="json"),
            "device": device,
            "cluster": cluster,
            "host": platform.node(),
            "visible_gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "libraries": {**library_versions(), "pydantic": _version("pydantic")},
            "source": _source_digest(),
            "plugins": plugin_digest(suite.plugins),
        }
    )


def _path(cache: Cache, key: str) -> Path:
    return cache.path("plans", key, ".json")


def remember(cache: Cache, suite: Suite, device: str, cell_keys: list[str], cluster: str | None = None) -> None:
    cache.write_json(_path(cache, memo_key(suite, device, cluster)), {"cell_keys": sorted(cell_keys)})


def recall(cache: Cache, suite: Suite, device: str, cluster: str | None = None) -> list[str] | None:
    """The planned cell keys, or None when this suite was not planned here with these libraries and this source."""
    path = _path(cache, memo_key(suite, device, cluster))
    try:
        keys = json.loads(path.read_text())["cell_keys"]
    except (OSError, ValueError, KeyError, TypeError):  # absent or damaged: plan again (and overwrite it)
        return None
    return keys if isinstance(keys, list) and all(isinstance(k, str) for k in keys) else None


def finished_without_planning(
    suite: Suite, device: str, cache: Cache, tracking_uri: str | None, cluster: str | None = None
) -> tuple[int, str] | None:
    """(cells, store URI) when the remembered plan's cells are all finished in the store; None when it must plan."""
    keys = recall(cache, suite, device, cluster)
    if keys is None:
        return None
    from xbench.store.tracking import Store

    store = Store(tracking_uri)
    experiment_id = store.experiment_id(suite.name)
    if experiment_id is None:
        return None
    done = store.finished_cells(experiment_id)
    return (len(keys), store.uri) if all(key in done for key in keys) else None
