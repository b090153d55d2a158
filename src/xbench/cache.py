"""One content-addressed cache directory for expensive state (trained and pruned models, explanations)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_CACHE_DIR = Path(os.environ.get("XBENCH_CACHE_DIR", Path.home() / ".cache" / "xbench"))


def content_key(payload: Any) -> str:
    """A stable 16-hex-digit hash of a JSON-serialisable payload (key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Cache:
    """Files under `root/<kind>/<key><suffix>`, each written atomically so a killed run never leaves half a file."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else DEFAULT_CACHE_DIR

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

    def write_json(self, target: Path, data: Any) -> Path:
        return self.write(target, lambda p: p.write_text(json.dumps(data, indent=2, sort_keys=True)))
