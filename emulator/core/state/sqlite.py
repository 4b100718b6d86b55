"""The SQLite backend (``--store sqlite:PATH``, ``--state PATH``): stdlib :mod:`sqlite3` in
WAL mode, one connection used by one writer thread at a time.

Tables: ``jobs(id, record)`` (JSON, insertion order kept by ``rowid``), ``files(id, meta,
data)`` (the PNG bytes as a BLOB), ``docs(name, value)`` (JSON).
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import threading
from pathlib import Path

from emulator.core.state.base import Batch, Saved
from emulator.core.state.records import file_from_meta, file_meta

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, meta TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS docs (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SqliteStore:
    """A :class:`~emulator.core.state.base.StateStore` in one SQLite file.

    ``synchronous=NORMAL`` under WAL: a committed batch survives the process ending (SIGTERM,
    a crash); only a power loss may lose the last batches.

    One process at a time: the store holds an exclusive lock on ``PATH.lock`` (``flock``)
    while it is open, so a second ``serve`` on the same file is refused at start-up instead
    of both overwriting each other's state.

    Raises:
        sqlite3.Error: the file cannot be opened or is not an SQLite database.
        OSError: its folder cannot be made.
        ValueError: another process (or store) has the file open.
    """

    durable = True

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:{path}"
        file = Path(path).expanduser()
        file.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(f"{file}.lock", "a+b")  # noqa: SIM115 (held while open)
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise ValueError(f"store {self.url}: the file is in use by another process (one "
                             "serve per SQLite file)") from None
        self._db = sqlite3.connect(str(file), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def load(self) -> Saved:
        """Every job, file and document saved, oldest first."""
        with self._lock:
            db = self._db
            jobs = [json.loads(r) for (r,) in db.execute("SELECT record FROM jobs ORDER BY rowid")]
            files = [file_from_meta(json.loads(m), bytes(d))
                     for m, d in db.execute("SELECT meta, data FROM files ORDER BY rowid")]
            docs = {n: json.loads(v) for n, v in db.execute("SELECT name, value FROM docs")}
        return Saved(jobs=jobs, files=files, docs=docs)

    def write(self, batch: Batch) -> None:
        """One transaction: upsert jobs (a job keeps its first ``rowid``), files and docs,
        delete the dropped ones."""
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO jobs (id, record) VALUES (?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET record = excluded.record",
                    [(i, json.dumps(r, separators=(",", ":"))) for i, r in batch.jobs.items()])
                db.executemany("DELETE FROM jobs WHERE id = ?",
                               [(i,) for i in batch.dropped_jobs])
                db.executemany(
                    "INSERT INTO files (id, meta, data) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET meta = excluded.meta",
                    [(f.id, json.dumps(file_meta(f)), f.data) for f in batch.files])
                db.executemany("DELETE FROM files WHERE id = ?",
                               [(i,) for i in batch.dropped_files])
                db.executemany(
                    "INSERT INTO docs (name, value) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    [(n, json.dumps(v)) for n, v in batch.docs.items()])
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def clear(self) -> None:
        """Delete every row."""
        with self._lock:
            self._db.executescript(
                "BEGIN; DELETE FROM jobs; DELETE FROM files; DELETE FROM docs; COMMIT;")

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed into the file)."""
        with self._lock:
            self._db.close()
            self._lock_file.close()


__all__ = ["SqliteStore"]
