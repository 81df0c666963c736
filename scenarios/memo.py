"""One cache for whatever is derived from a spec: keyed on the spec's JSON form.

Specs are frozen pydantic models, so two specs with the same JSON describe the same thing and
can share what is derived from them (a road's lane shapes and lane graph here, its highway-env
network and drivable area in `diffplatoon.sim.roads`). Keying on the JSON rather than on the
object keeps the specs themselves plain data: they compare, hash and pickle by their fields
alone, and a `model_copy(update=...)` never serves the original's products. What a cached
function returns is shared: treat it as read-only.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

from pydantic import BaseModel

S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")


class _SpecKey:
    """A spec wrapped so that it hashes and compares by (class, JSON form)."""

    __slots__ = ("spec", "key")

    def __init__(self, spec: BaseModel):
        self.spec = spec
        self.key = (type(spec).__qualname__, spec.model_dump_json())

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SpecKey) and self.key == other.key


def cached_on_spec(fn: Callable[[S], T], maxsize: int = 128) -> Callable[[S], T]:
    """`fn(spec)` computed once per distinct spec (by JSON form), the last `maxsize` kept."""

    @functools.lru_cache(maxsize=maxsize)
    def by_key(key: _SpecKey) -> T:
        return fn(key.spec)

    @functools.wraps(fn)
    def cached(spec: S) -> T:
        return by_key(_SpecKey(spec))

    cached.cache_clear = by_key.cache_clear  # type: ignore[attr-defined]
    return cached


__all__ = ["cached_on_spec"]
