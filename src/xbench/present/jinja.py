"""The one jinja2 set-up for every page xbench writes (leaderboard, human studies): autoescaped, strict."""

from __future__ import annotations

from typing import Any


def environment(package: str) -> Any:
    """An environment over `package`'s `templates/` folder. Every string from a suite, the store or a study is text
    (autoescaped), and a name a template uses but is not given is an error, not an empty string."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
