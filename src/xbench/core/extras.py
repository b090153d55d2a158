"""Optional parts of xbench installed as pip extras, and the error that names the extra when one is missing."""

from __future__ import annotations

import importlib

from xbench.core.errors import XbenchInputError

# module -> (extra, what needs it): `pip install 'xbench[extra]'` brings the module.
EXTRAS = {
    "ray": ("ray", "the ray backend"),
    "psycopg": ("server", "a PostgreSQL tracking store"),
}


def require_extra(module: str, field: str | None = None) -> None:
    """Import `module` or raise an input error that says which extra installs it."""
    extra, purpose = EXTRAS[module]
    try:
        importlib.import_module(module)
    except ImportError:
        raise XbenchInputError(
            f"{purpose} needs the optional package {module!r}, not installed here: pip install 'xbench[{extra}]'",
            field=field,
        ) from None
