"""Registries are plain dicts; `register` fills them and refuses a name twice."""

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def register(registry: dict[str, T], name: str) -> Callable[[T], T]:
    """Decorator adding `obj` to `registry` under `name`; a second use of a name is an error."""

    def add(obj: T) -> T:
        if name in registry:
            raise ValueError(f"{name!r} is already registered")
        registry[name] = obj
        return obj

    return add


def lookup(registry: dict[str, T], name: str, kind: str) -> T:
    """`registry[name]`, or a ValueError naming the kind and the allowed names."""
    try:
        return registry[name]
    except KeyError:
        allowed = ", ".join(sorted(registry))
        raise ValueError(f"unknown {kind} {name!r}; allowed: {allowed}") from None
