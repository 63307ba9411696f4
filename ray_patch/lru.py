"""A least-recently-used cache bounded in entries and, optionally, in bytes: what every
per-cluster and per-executor table of ray_patch keeps (routes, call wrappers, an
executor's functions, routes, inputs and channels).

    cache = LRU(256, max_bytes=1 << 30, size=nbytes, on_evict=close)
    cache[key] = value            # evicts the least recently used entries past a bound
    cache.get(key)                # a hit makes the entry the most recently used
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Iterator, Optional


def nbytes(value: Any) -> int:
    """About how many bytes a kept value holds (numpy arrays, bytes, tuples of them)."""
    n = getattr(value, "nbytes", None)
    if isinstance(n, int):
        return n
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value) + 8 * len(value)
    return 64


class LRU:
    def __init__(self, max_entries: int, *, max_bytes: Optional[int] = None,
                 size: Callable[[Any], int] = nbytes,
                 on_evict: Optional[Callable[[Any, Any], None]] = None):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1; got {max_entries}")
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._size, self._on_evict = size, on_evict
        self._d: collections.OrderedDict = collections.OrderedDict()
        self._bytes: dict = {}
        self.total_bytes = 0
        self.evicted = 0

    def get(self, key: Any, default: Any = None) -> Any:
        if key not in self._d:
            return default
        self._d.move_to_end(key)
        return self._d[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        if key in self._d:
            self.pop(key)
        self._d[key] = value
        if self.max_bytes is not None:
            b = self._bytes[key] = self._size(value)
            self.total_bytes += b
        while len(self._d) > self.max_entries or (
                self.max_bytes is not None and self.total_bytes > self.max_bytes
                and len(self._d) > 1):
            old, v = next(iter(self._d.items()))
            self.pop(old)
            self.evicted += 1
            if self._on_evict is not None:
                self._on_evict(old, v)

    def __getitem__(self, key: Any) -> Any:
        v = self.get(key, _MISSING)
        if v is _MISSING:
            raise KeyError(key)
        return v

    def pop(self, key: Any, default: Any = None) -> Any:
        if key not in self._d:
            return default
        self.total_bytes -= self._bytes.pop(key, 0)
        return self._d.pop(key)

    def __contains__(self, key: Any) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._d))

    def items(self) -> list:
        return list(self._d.items())

    def values(self) -> list:
        return list(self._d.values())

    def clear(self, evict: bool = False) -> None:
        """Empties the table; ``evict``: each entry through ``on_evict`` first."""
        entries = list(self._d.items()) if evict and self._on_evict is not None else []
        self._d.clear()
        self._bytes.clear()
        self.total_bytes = 0
        for k, v in entries:
            self._on_evict(k, v)


_MISSING = object()
