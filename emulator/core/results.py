"""The result cache: a task's outputs by the sha256 of what determines them.

Test suites submit the same fixture photographs over and over; the image work of a job (decode,
matte, encode: about 1,000 times its HTTP work, as the project's prototypes measured) depends
only on the input bytes, the task and its params, the engine and the encoder settings, and
every engine here is deterministic. So a job whose inputs were seen before gets the same
output bytes without redoing the work, as a client could not tell apart from a real run
(the vendor's own answer to the same request would be the same image). Bounded in bytes,
least recently used first out; ``Settings.result_cache_bytes = 0`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from emulator.core.tasks import Rendered


def result_key(kind: str, params: dict[str, Any], payloads: Sequence[bytes], *,
               engine: str, compress_level: int, max_pixels: int) -> str:
    """Hex sha256 of everything a task's outputs depend on (blocking for large payloads:
    about 1.5 ms per MB)."""
    digest = hashlib.sha256()
    sizes = ",".join(str(len(p)) for p in payloads)
    options = json.dumps(params, sort_keys=True, default=str) if params else "{}"
    digest.update(f"{kind}\0{engine}\0{compress_level}\0{max_pixels}\0{sizes}\0{options}\0"
                  .encode())
    for payload in payloads:
        digest.update(payload)
    return digest.hexdigest()


class ResultCache:
    """Thread-safe LRU of task outputs, holding at most ``max_bytes`` bytes of output data
    (0: keeps nothing). Called from the event loop and the worker pool."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[Rendered, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> list[Rendered] | None:
        """The outputs kept under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return list(found)

    def put(self, key: str, outputs: Sequence[Rendered]) -> None:
        """Keep ``outputs`` under ``key``, evicting the least recently used past the bound;
        outputs larger than the whole bound are not kept."""
        size = sum(len(r.data) for r in outputs)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= sum(len(r.data) for r in old)
            self._items[key] = tuple(outputs)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= sum(len(r.data) for r in evicted)

    def clear(self) -> None:
        """Forget every entry (the hit and miss counts too)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    @property
    def total_bytes(self) -> int:
        """Bytes of output data held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


__all__ = ["ResultCache", "result_key"]
