"""The request journal: a bounded in-memory log of every vendor request and its answer.

Kept by the middleware (:mod:`emulator.middleware`), read through ``/_emulator/journal``.
``verify`` works as WireMock's request verification: count the entries matching some criteria
against ``count`` / ``min`` / ``max``, and when that fails, show the near misses (the entries
that differ from the criteria in the fewest fields).

It also tracks ``Retry-After``: after a 429 carrying ``Retry-After: N`` for a key, a request of
the same vendor, operation and key that comes before the N seconds have passed (on the
emulator's clock) is marked ``early_retry``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Criteria :meth:`Journal.select` and :meth:`Journal.verify` understand.
CRITERIA = ("vendor", "operation", "api_key", "method", "path", "status", "fault",
            "early_retry", "job_id")
#: Near misses shown by a failed verify.
NEAR_MISSES = 5


@dataclass(slots=True)
class Entry:
    """One request and its answer.

    Attributes:
        seq: 1, 2, ... in arrival order (never reused until a reset).
        at: emulator clock when the request arrived, unix seconds.
        status: HTTP status sent, ``None`` when the connection was dropped without one.
        latency_ms: from arrival to the end of the answer, milliseconds (injected latency
            included).
        faults: ``[{"rule", "source", "applied"}]`` for every fault rule applied.
        retry_after: seconds of the ``Retry-After`` of a 429 answer, else ``None``.
        early_retry: the request came before the ``Retry-After`` of an earlier 429 (same
            vendor, operation and key) had passed.
        job_id: the job the request made (a submit) or named (a status read, a result read,
            a cancel), as the vendor's handler found it; ``None`` for other requests and for
            requests refused before a job was found.
    """

    seq: int
    at: float
    method: str
    path: str
    vendor: str | None
    operation: str | None
    api_key: str | None
    status: int | None
    latency_ms: float
    faults: list[dict[str, str]] = field(default_factory=list)
    retry_after: float | None = None
    early_retry: bool = False
    key_lookup: Callable[[], str | None] | None = None
    job_id: str | None = None

    def resolve(self) -> None:
        """Fill ``api_key`` from ``key_lookup`` (deferred off the request's hot path)."""
        lookup = self.key_lookup
        if lookup is not None:
            self.key_lookup = None
            self.api_key = lookup()

    def to_json(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "seq": self.seq, "at": self.at, "method": self.method, "path": self.path,
            "vendor": self.vendor, "operation": self.operation, "api_key": self.api_key,
            "status": self.status, "latency_ms": round(self.latency_ms, 3),
            "faults": list(self.faults), "retry_after": self.retry_after,
            "early_retry": self.early_retry, "job_id": self.job_id,
        }

    def differs(self, criteria: Mapping[str, Any]) -> list[str]:
        """Names of the criteria this entry does not meet."""
        out = []
        for name, want in criteria.items():
            if name == "fault":
                have = bool(self.faults)
                if isinstance(want, bool):
                    ok = have is want
                else:
                    ok = any(f["rule"] == want or want in f["applied"] for f in self.faults)
            else:
                ok = getattr(self, name) == want
            if not ok:
                out.append(name)
        return out


def parse_criteria(raw: Mapping[str, Any], *, typed: bool = False) -> dict[str, Any]:
    """Criteria from query-string text (``typed=False``) or JSON values (``typed=True``);
    unknown names are refused.

    ``status`` is an integer; ``early_retry`` a boolean; ``fault`` is ``true`` / ``false``
    (any fault or none) or a rule id / effect text (``f3``, ``status=429``); the others are
    strings (``method`` is compared upper-case).

    Raises:
        ValueError: unknown criterion or a value of the wrong type.
    """
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in CRITERIA:
            raise ValueError(f"unknown criterion {name!r}; known: {', '.join(CRITERIA)}")
        if value is None:
            if typed:
                raise ValueError(f"{name} must not be null")
            continue
        if name == "status":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if typed and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"status must be an integer, got {value!r}")
            try:
                out[name] = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"status must be an integer, got {value!r}") from None
        elif name == "early_retry":
            flag = value if isinstance(value, bool) else None if typed else _bool(value)
            if flag is None:
                raise ValueError(f"early_retry must be true or false, got {value!r}")
            out[name] = flag
        elif name == "fault":
            if isinstance(value, bool):
                out[name] = value
            elif not isinstance(value, str):
                raise ValueError(f"fault must be a boolean or a string, got {value!r}")
            else:
                flag = None if typed else _bool(value)
                out[name] = value if flag is None else flag
        elif not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        else:
            out[name] = value.upper() if name == "method" else value
    return out


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


class Journal:
    """At most ``size`` entries, the oldest dropped first. Event-loop only."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._entries: deque[Entry] = deque(maxlen=self.size)
        self._seq = itertools.count(1)
        self._retry_after: dict[tuple[str | None, str | None, str], float] = {}

    def record(self, *, at: float, method: str, path: str, vendor: str | None,
               operation: str | None, api_key: str | None, status: int | None,
               latency_ms: float, faults: list[dict[str, str]] | None = None,
               retry_after: float | None = None,
               key_lookup: Callable[[], str | None] | None = None,
               ended: float | None = None, job_id: str | None = None) -> Entry:
        """Add an entry (``at``: arrival on the emulator's clock, seconds).

        ``ended`` is when the answer was sent, on the emulator's clock (default: ``at`` plus
        ``latency_ms``; the middleware passes, for a 429, when its status line went out: the
        earliest a client can have read it); a 429's ``Retry-After`` counts from then.
        Under a virtual clock the answer ends at ``at`` (the clock stands still), so a client
        that waits exactly ``Retry-After`` on that clock is on time.

        ``key_lookup``, when ``api_key`` is not known yet, finds it later: when the journal is
        read, or at once when a ``Retry-After`` is pending or the answer is a 429.
        """
        if key_lookup is not None and (self._retry_after or status == 429):
            api_key, key_lookup = key_lookup(), None
        early = False
        if api_key is not None:
            now = ended if ended is not None else at + latency_ms / 1000.0
            slot = (vendor, operation, api_key)
            deadline = self._retry_after.get(slot)
            if deadline is not None:
                if at < deadline:
                    early = True
                else:
                    del self._retry_after[slot]
            if status == 429 and retry_after is not None:
                if len(self._retry_after) > 50_000:
                    self._retry_after = {k: v for k, v in self._retry_after.items() if v > now}
                self._retry_after[slot] = now + retry_after
        entry = Entry(next(self._seq), at, method, path, vendor, operation, api_key, status,
                      latency_ms, faults or [], retry_after, early, key_lookup, job_id)
        self._entries.append(entry)
        return entry

    def _resolved(self) -> deque[Entry]:
        for entry in self._entries:
            entry.resolve()
        return self._entries

    def select(self, criteria: Mapping[str, Any]) -> list[Entry]:
        """Entries meeting every criterion (see :func:`parse_criteria`), oldest first."""
        return [e for e in self._resolved() if not e.differs(criteria)]

    def verify(self, criteria: Mapping[str, Any], *, count: int | None = None,
               minimum: int | None = None, maximum: int | None = None) -> dict[str, Any]:
        """Check how many entries meet ``criteria``: exactly ``count``, or within
        ``minimum``..``maximum`` (at least one when none is given).

        Returns:
            ``{"pass", "count", "expected", "criteria"}``, plus ``near_misses`` when it fails:
            up to :data:`NEAR_MISSES` entries not meeting the criteria, those differing in
            the fewest criteria first (newest first among equals), each with ``differs``.
        """
        matched = self.select(criteria)
        n = len(matched)
        if count is not None:
            ok, expected = n == count, f"exactly {count}"
        else:
            low = 1 if minimum is None and maximum is None else (minimum or 0)
            ok = n >= low and (maximum is None or n <= maximum)
            expected = f"at least {low}" if maximum is None else f"{low}..{maximum}"
            if maximum is not None and low > maximum:
                expected += " (min above max: nothing can pass)"
        result: dict[str, Any] = {"pass": ok, "count": n, "expected": expected,
                                  "criteria": dict(criteria)}
        if not ok:
            scored = []
            for entry in self._resolved():
                diff = entry.differs(criteria)
                if diff:
                    scored.append((len(diff), -entry.seq, entry, diff))
            scored.sort(key=lambda item: (item[0], item[1]))
            result["near_misses"] = [{**e.to_json(), "differs": d}
                                     for _, _, e, d in scored[:NEAR_MISSES]]
        return result

    def entries(self) -> list[Entry]:
        """Every entry, oldest first."""
        return list(self._resolved())

    def dump(self) -> dict[str, Any]:
        """Every entry (:meth:`Entry.to_json`, keys resolved), the next number and the
        pending ``Retry-After`` deadlines, as JSON values (for a state store):
        ``{"next_seq", "entries", "retry_after": [[vendor, operation, key, unix s]]}``."""
        next_seq = next(self._seq)
        self._seq = itertools.count(next_seq)
        return {"next_seq": next_seq, "entries": [e.to_json() for e in self._resolved()],
                "retry_after": [[*slot, at] for slot, at in self._retry_after.items()]}

    def load(self, doc: Mapping[str, Any]) -> None:
        """Replace the entries with those of :meth:`dump`'s ``doc``."""
        self._entries.clear()
        self._entries.extend(Entry(**e) for e in doc["entries"])
        self._seq = itertools.count(int(doc["next_seq"]))
        self._retry_after = {(v, o, k): at for v, o, k, at in doc["retry_after"]}

    async def pull(self) -> None:
        """Bring in the entries kept elsewhere, before a read: nothing here (one process's
        journal); a shared store's reads every process's (``emulator.core.state.journal``)."""

    async def wipe(self) -> None:
        """Forget every entry (``DELETE /_emulator/journal``): :meth:`clear`."""
        self.clear()

    def clear(self) -> None:
        """Forget every entry and every pending ``Retry-After``; numbering starts again."""
        self._entries.clear()
        self._retry_after.clear()
        self._seq = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)
