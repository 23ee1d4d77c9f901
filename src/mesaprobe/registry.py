"""One registry per extension axis: environments, architectures, baselines, probes.

A registry maps a snake_case name to a class.  Adding an environment family (or an
architecture, baseline, probe) is one file with a decorated class plus one import
line in the package's ``__init__``.  Metadata lives on the class itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """A name that is not registered; the message lists the valid names."""

    def __init__(self, axis: str, name: object, valid: list[str]):
        self.axis, self.name, self.valid = axis, name, valid
        super().__init__(f"unknown {axis} {name!r}; expected one of: {', '.join(valid)}")

    def __str__(self) -> str:
        return self.args[0]


class Registry(Generic[T]):
    """A name -> class mapping for one extension axis (``axis`` names it in errors)."""

    def __init__(self, axis: str):
        self.axis = axis
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if not name.isidentifier() or name != name.lower():
            raise ValueError(f"{self.axis} names are snake_case identifiers, got {name!r}")

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.axis} {name!r} is registered twice")
            self._entries[name] = entry
            entry.registered_name = name  # type: ignore[attr-defined]
            return entry

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(self.axis, name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
