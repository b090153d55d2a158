"""Plug-ins from outside the package: modules named in a suite's `plugins:` and in the `xbench.plugins` entry-point
group are imported before planning (and on every worker that runs cells), so their registrations (datasets, pruners,
explainers, metrics) are there, and users extend xbench without forking it.

A plug-in module registers with the same decorators as the built-in ones::

    # my_package/my_explainers.py
    from xbench.components.explainers import explainer

    @explainer("edge_map", "my_package")
    def edge_map(model, x, targets, params):
        '''Sobel edges of the image: a model-independent baseline explanation.'''
        ...

and a suite lists it: ``plugins: [my_package.my_explainers]``. An installed package can instead declare
``[project.entry-points."xbench.plugins"] my_plugins = "my_package.my_explainers"``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from importlib import metadata
from pathlib import Path

from xbench.core.errors import XbenchInputError

ENTRY_POINT_GROUP = "xbench.plugins"


def entry_point_modules() -> list[str]:
    return sorted(entry.value.split(":")[0] for entry in metadata.entry_points(group=ENTRY_POINT_GROUP))


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Import the entry-point plug-ins and `modules` (a suite's `plugins`); returns the names imported.

    Importing twice is a no-op (Python caches modules), so every process that plans or runs cells can call this.
    """
    names = list(dict.fromkeys([*entry_point_modules(), *modules]))
    for index, name in enumerate(names):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            field = f"plugins[{index - len(names) + len(modules)}]" if name in modules else "xbench.plugins entry point"
            raise XbenchInputError(f"cannot import plug-in module {name!r}: {exc}", field=field) from None
    return names


def plugin_digest(modules: list[str] | tuple[str, ...]) -> str:
    """A digest of the plug-in modules' source files, so remembered plans and results notice an edited plug-in."""
    digest = hashlib.sha256()
    for name in [*entry_point_modules(), *modules]:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        digest.update(name.encode())
        if origin is not None and origin.is_file():
            digest.update(origin.read_bytes())
    return digest.hexdigest()[:16]
