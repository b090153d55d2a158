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


DIGEST_SUFFIX = ".sha256"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Cache:
    """Files under `root/<kind>/<key><suffix>`, each written atomically so a killed run never leaves half a file, with
    its sha256 beside it (`<file>.sha256`), checked before the file is used (once per process and file): damage that
    still parses (zeroed blocks inside a safetensors file, a zeroed .npy) is found, named and computed again, not used.
    A file from before digests were kept gets its digest on first read."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self._verified: set[tuple[str, int, int]] = set()  # (path, size, mtime) checked in this process

    def path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}{suffix}"

    def write(self, target: Path, writer: Callable[[Path], None]) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        os.close(handle)
        try:
            writer(Path(temporary))
            os.chmod(temporary, 0o644)  # mkstemp makes files private; a cache is shared like any other file
            digest = file_digest(Path(temporary))
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        self._write_digest(target, digest)
        return target

    def _write_digest(self, target: Path, digest: str) -> None:
        sidecar = target.with_name(target.name + DIGEST_SUFFIX)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=DIGEST_SUFFIX)
        with os.fdopen(handle, "w") as stream:
            stream.write(digest + "\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, sidecar)

    def _check_digest(self, path: Path) -> None:
        """Raise when the file's bytes no longer match the digest written with it."""
        stat = path.stat()
        seen = (str(path), stat.st_size, stat.st_mtime_ns)
        if seen in self._verified:
            return
        sidecar = path.with_name(path.name + DIGEST_SUFFIX)
        actual = file_digest(path)
        if sidecar.exists():
            expected = sidecar.read_text().strip()
            if actual != expected:
                raise ValueError(f"its sha256 {actual[:12]}… does not match the {expected[:12]}… written with it")
        else:
            self._write_digest(path, actual)
        self._verified.add(seen)

    def read(self, path: Path, reader: Callable[[Path], T], *companions: Path) -> T | None:
        """reader(path), or None when the file is absent or cannot be read.

        A damaged file (truncated by a full disk, corrupted in a copy) is reported by its path, removed together with
        its `companions` (the files written with it), and so computed again by the caller.
        """
        if not path.exists():
            return None
        from xbench.core.progress import log

        damaged_file = path
        try:
            for checked in (path, *companions):
                damaged_file = checked
                if checked.exists():
                    self._check_digest(checked)
            damaged_file = path
            return reader(path)
        except Exception as exc:  # whatever the reader raises (safetensors' Rust errors, NumPy, JSON), the file is bad
            log(
                f"damaged cache file {damaged_file} ({type(exc).__name__}: {str(exc)[:200]}); removed, computing it "
                "again"
            )
            for damaged in (path, *companions):
                damaged.unlink(missing_ok=True)
                damaged.with_name(damaged.name + DIGEST_SUFFIX).unlink(missing_ok=True)
            return None

    def write_json(self, target: Path, data: Any) -> Path:
        return self.write(target, lambda p: _write_text(p, json.dumps(data, indent=2, sort_keys=True)))


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)
