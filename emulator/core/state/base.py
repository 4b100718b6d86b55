"""The state store protocol: what every backend (memory, SQLite, Redis) implements.

A backend keeps **records** (JSON values and bytes), never live objects: jobs by id
(:mod:`emulator.core.state.records`), result files by id with their bytes, and named
documents (``billing``, ``faults``, ``secrets``, ``clock``, ``scenarios``), each the
``dump()`` of the component that owns it. The :class:`~emulator.core.state.saver.StateSaver`
collects what changed on the event loop and hands one :class:`Batch` at a time to the
backend's :meth:`StateStore.write`, which runs in the saver's one writer thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from emulator.core.files import StoredFile


@dataclass
class Batch:
    """What changed since the last write, written in one transaction.

    Attributes:
        jobs: job records by id (added or changed).
        dropped_jobs: ids of jobs evicted.
        files: result files added or changed (with their bytes).
        dropped_files: ids of files evicted or discarded.
        docs: named documents that changed (JSON values).
    """

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped_jobs: set[str] = field(default_factory=set)
    files: list[StoredFile] = field(default_factory=list)
    dropped_files: list[str] = field(default_factory=list)
    docs: dict[str, Any] = field(default_factory=dict)

    def merge(self, newer: Batch) -> Batch:
        """This batch (one whose write failed) with ``newer``'s changes on top: what the
        next write must hold so that nothing is lost."""
        for job_id in newer.dropped_jobs:
            self.jobs.pop(job_id, None)
        self.jobs.update(newer.jobs)
        self.dropped_jobs = (self.dropped_jobs - set(newer.jobs)) | newer.dropped_jobs
        gone = set(newer.dropped_files)
        newer_ids = {f.id for f in newer.files}
        self.files = [f for f in self.files if f.id not in gone and f.id not in newer_ids]
        self.files += newer.files
        self.dropped_files = [i for i in self.dropped_files if i not in newer_ids]
        self.dropped_files += newer.dropped_files
        self.docs.update(newer.docs)
        return self

    def __bool__(self) -> bool:
        return bool(self.jobs or self.dropped_jobs or self.files or self.dropped_files
                    or self.docs)


@dataclass
class Saved:
    """Everything a backend holds, read back at start-up.

    Attributes:
        jobs: job records, oldest first.
        files: result files, oldest first.
        docs: named documents.
    """

    jobs: list[dict[str, Any]] = field(default_factory=list)
    files: list[StoredFile] = field(default_factory=list)
    docs: dict[str, Any] = field(default_factory=dict)


class StateStore(Protocol):
    """A backend. ``load``, ``write``, ``clear`` and ``close`` block (file or network I/O):
    the saver calls them in its writer thread, or once at start-up, never on the event loop
    while it serves."""

    #: The ``--store`` value it was opened with (``memory``, ``sqlite:PATH``, ...).
    url: str
    #: ``False`` for the memory store: nothing is saved, and the saver does not run.
    durable: bool

    def load(self) -> Saved:
        """Everything saved (empty for a new store)."""

    def write(self, batch: Batch) -> None:
        """Apply ``batch`` atomically (all of it or none)."""

    def clear(self) -> None:
        """Forget everything (``POST /_emulator/reset``)."""

    def close(self) -> None:
        """Release files and connections."""


class MemoryStore:
    """The default: state lives only in the process (today's behaviour and speed; a restart
    forgets everything)."""

    url = "memory"
    durable = False

    def load(self) -> Saved:
        """Nothing is ever saved: an empty :class:`Saved`."""
        return Saved()

    def write(self, batch: Batch) -> None:
        """Nothing to do."""

    def clear(self) -> None:
        """Nothing to do."""

    def close(self) -> None:
        """Nothing to do."""


def check_store_url(url: str) -> str:
    """Validate a ``--store`` value without opening it; returns it.

    Raises:
        ValueError: not ``memory``, ``sqlite:PATH`` or ``redis://HOST:PORT/DB``.
    """
    if url == "memory":
        return url
    if url.startswith("sqlite:"):
        if not url[len("sqlite:"):].strip():
            raise ValueError("store 'sqlite:' needs a file path: sqlite:PATH")
        return url
    if url.startswith(("redis://", "rediss://")):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"store {url!r}: {exc}") from None
        if not parts.hostname:
            raise ValueError(f"store {url!r}: expected redis://HOST:PORT/DB")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"store {url!r}: the database must be a number (redis://HOST:PORT/0)")
        return url
    raise ValueError(f"store {url!r}: expected memory, sqlite:PATH or redis://HOST:PORT/DB")


__all__ = ["Batch", "MemoryStore", "Saved", "StateStore", "check_store_url"]
