"""A generic plug-in registry, one instance per plug-in kind (dataset, pruner, explainer, metric)."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no plug-in of a kind is registered under; the message suggests close names."""

    def __init__(self, kind: str, name: str, available: list[str]) -> None:
        self.kind, self.name, self.available = kind, name, available
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}{hint} available: {', '.join(available)}")

    def __str__(self) -> str:
        return str(self.args[0])


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")


class Registry(Generic[T]):
    """Maps names to plug-ins of one kind.

    Example:
        >>> explainers: Registry[ExplainerFn] = Registry("explainer")
        >>> @explainers.register("saliency")
        ... def saliency(...): ...
    """

    def __init__(self, kind: str, modules: tuple[str, ...] = ()) -> None:
        """`modules`: where this kind's built-in plug-ins are defined, imported the first time the registry is read
        (not when it is created), so the module that owns the registry need not import the modules that fill it."""
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._modules = modules
        self._loaded = not modules

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: the modules register while being imported, which must not load again
            for module in self._modules:
                importlib.import_module(module)

    def register(self, name: str) -> Callable[[T], T]:
        if not _NAME.fullmatch(name):
            # a plug-in's name becomes an MLflow param value, metric key and tag key: one MLflow would refuse half-way
            # through logging a cell is refused here, when the plug-in is defined
            raise ValueError(
                f"{self.kind} name {name!r}: use letters, digits, '_', '.' and '-' (starting with a letter, digit or "
                "'_'), at most 100 characters"
            )

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def update(self, name: str, change: Callable[[T], T]) -> T:
        """Replace the plug-in registered as `name` by `change(plug-in)`: a later module adding to an entry (the torch
        engine's implementation joining a catalogued metric). Reads no module in: the entry must be there."""
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, sorted(self._entries))
        self._entries[name] = change(self._entries[name])
        return self._entries[name]

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)
