"""Output files: bytes kept in memory, bounded, with an expiry time.

A file's URL is built by the vendor adapter from the request's own scheme, host and prefix;
the core only keeps ``id -> bytes``.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

#: Bytes of memory one kept file costs besides its data (record, id, name, dict slot; about
#: 400 measured), counted against ``max_bytes`` so that many tiny files stay bounded too.
FILE_OVERHEAD_BYTES = 512


@dataclass(frozen=True)
class StoredFile:
    """One output file.

    Attributes:
        id: opaque token, URL-safe.
        name: file name offered to clients (``<id>.png``).
        content_type: MIME type (``image/png``).
        data: the bytes.
        width, height: pixels, for images.
        created_at: unix seconds.
        expires_at: unix seconds after which the file answers as expired; ``None``: never.
    """

    id: str
    name: str
    content_type: str
    data: bytes
    width: int
    height: int
    created_at: float
    expires_at: float | None

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    def expired(self, now: float) -> bool:
        """True once ``now`` (unix seconds) has reached :attr:`expires_at`."""
        return self.expires_at is not None and now >= self.expires_at

    def data_uri(self) -> str:
        """``data:<content_type>;base64,<data>`` (blocking for large files: about 7 ms for a
        12 MP PNG, as the project's prototypes measured; run it off the event loop)."""
        return f"data:{self.content_type};base64," + base64.b64encode(self.data).decode("ascii")


class FileStore:
    """Thread-safe in-memory file store holding at most ``max_bytes`` bytes.

    Each file counts its data plus :data:`FILE_OVERHEAD_BYTES`; the oldest files are evicted
    first when a new one would exceed the limit (the newest file is always kept).
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._files: OrderedDict[str, StoredFile] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        #: Ids of files put, changed (``True``) or dropped (``False``) since a state store
        #: last took them (:meth:`take_changes`); ``None`` (the memory store): not tracked.
        self.changes: dict[str, bool] | None = None

    def put(
        self,
        data: bytes,
        *,
        content_type: str,
        width: int,
        height: int,
        now: float,
        ttl_s: float | None,
        suffix: str = ".png",
    ) -> StoredFile:
        """Keep ``data`` and return its record (expires ``ttl_s`` seconds after ``now``)."""
        file_id = secrets.token_urlsafe(16)
        record = StoredFile(
            id=file_id,
            name=f"{file_id}{suffix}",
            content_type=content_type,
            data=data,
            width=width,
            height=height,
            created_at=now,
            expires_at=None if ttl_s is None else now + ttl_s,
        )
        with self._lock:
            self._files[file_id] = record
            self._bytes += record.size
            changes = self.changes
            if changes is not None:
                changes[file_id] = True
            while (self._bytes + FILE_OVERHEAD_BYTES * len(self._files) > self._max_bytes
                   and len(self._files) > 1):
                old_id, old = self._files.popitem(last=False)
                self._bytes -= old.size
                if changes is not None:
                    changes[old_id] = False
        return record

    def discard(self, file_id: str) -> None:
        """Forget a file (its URL then answers as expired); nothing if there is none."""
        with self._lock:
            old = self._files.pop(file_id, None)
            if old is not None:
                self._bytes -= old.size
                if self.changes is not None:
                    self.changes[file_id] = False

    def get(self, file_id: str) -> StoredFile | None:
        """The file with ``file_id``, or ``None`` (never stored, or evicted)."""
        with self._lock:
            return self._files.get(file_id)

    def expire(self, file_id: str, now: float) -> bool:
        """Make a file expire at ``now``; ``False`` if there is no such file."""
        with self._lock:
            record = self._files.get(file_id)
            if record is None:
                return False
            self._files[file_id] = StoredFile(**{**record.__dict__, "expires_at": now})
            if self.changes is not None:
                self.changes[file_id] = True
            return True

    def take_changes(self) -> tuple[list[StoredFile], list[str]]:
        """The files put or changed, and the ids dropped, since the last call (for a state
        store; empty when changes are not tracked)."""
        with self._lock:
            changes, self.changes = self.changes, ({} if self.changes is not None else None)
            if not changes:
                return [], []
            kept = [f for i, ok in changes.items() if ok and (f := self._files.get(i))]
            return kept, [i for i, ok in changes.items() if not ok]

    def restore(self, files: list[StoredFile]) -> None:
        """Hold ``files`` again, oldest first (a state store's saved files at start-up)."""
        with self._lock:
            for record in files:
                self._files[record.id] = record
                self._bytes += record.size

    def clear(self) -> None:
        """Forget every file."""
        with self._lock:
            self._files.clear()
            self._bytes = 0
            if self.changes is not None:
                self.changes = {}

    @property
    def total_bytes(self) -> int:
        """Data bytes held now (without the per-file overhead)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._files)
