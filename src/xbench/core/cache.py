"""One content-addressed cache directory for expensive state (trained and pruned models, explanations)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
# The libraries whose versions can change what a cached model, pruned variant or explanation holds.
KEYED_LIBRARIES = ("torch", "timm", "torch-pruning", "captum", "grad-cam", "zennit", "quantus", "numpy")


def default_cache_dir() -> Path:
    """$XBENCH_CACHE_DIR, else ~/.cache/xbench: read when a cache is opened, not when xbench is imported."""
    return Path(os.environ.get("XBENCH_CACHE_DIR") or Path.home() / ".cache" / "xbench")


def content_key(payload: Any) -> str:
    """A stable 16-hex-digit hash of a JSON-serialisable payload (key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def library_versions() -> dict[str, str]:
    """Installed versions of KEYED_LIBRARIES (from package metadata: nothing is imported), for cache keys, so a
    library upgrade never reuses stale work."""
    versions = {}
    for name in KEYED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


class Cache:
    """Files under `root/<kind>/<key><suffix>`, each written atomically so a killed run never leaves half a file."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}{suffix}"

    def write(self, target: Path, writer: Callable[[Path], None]) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        os.close(handle)
        try:
            writer(Path(temporary))
            os.chmod(temporary, 0o644)  # mkstemp makes files private; a cache is shared like any other file
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        return target

    def read(self, path: Path, reader: Callable[[Path], T], *companions: Path) -> T | None:
        """reader(path), or None when the file is absent or cannot be read.

        A damaged file (truncated by a full disk, corrupted in a copy) is reported by its path, removed together with
        its `companions` (the files written with it), and so computed again by the caller.
        """
        if not path.exists():
            return None
        try:
            return reader(path)
        except Exception as exc:  # whatever the reader raises (safetensors' Rust errors, NumPy, JSON), the file is bad
            from xbench.core.progress import log

            log(f"damaged cache file {path} ({type(exc).__name__}: {str(exc)[:200]}); removed, computing it again")
            for damaged in (path, *companions):
                damaged.unlink(missing_ok=True)
            return None

    def write_json(self, target: Path, data: Any) -> Path:
        return self.write(target, lambda p: _write_text(p, json.dumps(data, indent=2, sort_keys=True)))


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)
