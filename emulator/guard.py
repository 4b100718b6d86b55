"""The request guard: every vendor request is checked against its contract before the adapter.

A request that breaks its operation's contract (:mod:`emulator.contracts`) is recorded as a
violation, strict or not (``GET /_emulator/violations``). In strict mode (``serve --strict``,
or a key's ``strict`` setting, ``PUT /_emulator/keys/{key} {"strict": true}``) it is refused
with the vendor's own 400/422 body, whose message names the field and the rule broken. A
missing key is left to the adapter, which answers the vendor's 401 itself.

The check is cheap: each operation's schemas are compiled once (a jsonschema validator per
body and parameter), valid requests take the ``is_valid`` fast path, and the parsed JSON body
is handed to the adapter so it is parsed once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.types import Scope

from emulator import contracts
from emulator.context import CTX_KEY
from emulator.core.clock import Clock
from emulator.errors import EmulatorError, InvalidInput, ValidationFailed
from emulator.jsonbody import BodyTooLarge, parse_json_async
from emulator.settings import Settings
from emulator.vendors.base import JSON_ERROR_KEY, JSON_KEY

if TYPE_CHECKING:
    from emulator.vendors.base import VendorAdapter

_NO_QUERY = QueryParams()
#: Requests remembered as obeying their contract (forgotten all at once past it).
_CLEAN_LIMIT = 8192
#: Requests with larger bodies are always checked (the memo keeps the body bytes).
_MEMO_BODY_BYTES = 4096


def _header_names(op: contracts.Operation) -> dict[bytes, int]:
    """The lower-case header names ``op``'s request check reads, numbered."""
    names: list[str] = []
    for alternative in op.security:
        for scheme in alternative:
            if scheme.location == "cookie":
                names.append("cookie")
            elif scheme.location != "query":
                names.append("authorization" if scheme.kind == "http" else scheme.parameter)
    names += [p.name for p in op.parameters if p.location == "header"]
    names.append("content-type")
    unique = dict.fromkeys(n.lower().encode("latin-1") for n in names)
    return {name: i for i, name in enumerate(unique)}


def _may_have_body(scope: Scope) -> bool:
    """Whether the request announces a body: a non-zero ``Content-Length`` or any
    ``Transfer-Encoding``."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


log = logging.getLogger("emulator.guard")


def _obeys(scope: Scope) -> None:
    """Note on the request's context that it obeys its contract (``RequestContext.obeys``)."""
    ctx = scope.get(CTX_KEY)
    if ctx is not None:
        ctx.obeys = True


def _prefix(scope: Scope) -> str:
    """The path prefix the request came under (``""`` or ``"/queue"``, ...)."""
    ctx = scope.get(CTX_KEY)
    return ctx.prefix if ctx is not None else ""


class RequestGuard:
    """Checks vendor requests against the contracts; holds the strict settings and violations.

    Attributes:
        strict: refuse every violating request (``serve --strict``).
    """

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.strict = settings.strict
        self.body_limit = settings.json_body_limit
        self.clock = clock
        self._strict_keys: set[str] = set()
        self._violations: deque[dict[str, Any]] = deque(maxlen=max(1, settings.journal_size))
        self._lock = threading.Lock()
        #: Goes up with every change (a state store saves the violations when it moved).
        self.version = 0
        self._ops: dict[tuple[str, str], contracts.Operation | None] = {}
        #: Memo keys of requests found to obey (see :meth:`check`); bounded.
        self._clean: set[tuple[Any, ...]] = set()
        self._header_names: dict[int, dict[bytes, int]] = {}

    # -- settings and records ----------------------------------------------------------------
    def set_strict_key(self, key: str, strict: bool) -> None:
        """Check ``key``'s requests strictly (or stop doing so)."""
        with self._lock:
            self.version += 1
            if strict:
                self._strict_keys.add(key)
            else:
                self._strict_keys.discard(key)

    def is_strict_key(self, key: str) -> bool:
        """Whether ``key`` has the per-key strict setting."""
        return key in self._strict_keys

    def violations(self, *, vendor: str | None = None, api_key: str | None = None
                   ) -> list[dict[str, Any]]:
        """Recorded violations, oldest first, optionally of one vendor or key."""
        with self._lock:
            found = list(self._violations)
        return [v for v in found if (vendor is None or v["vendor"] == vendor)
                and (api_key is None or v["api_key"] == api_key)]

    def clear(self) -> int:
        """Forget the violations; returns how many there were."""
        with self._lock:
            self.version += 1
            n = len(self._violations)
            self._violations.clear()
            return n

    def reset(self) -> None:
        """Forget violations and per-key strict settings (``serve --strict`` stays)."""
        with self._lock:
            self.version += 1
            self._violations.clear()
            self._strict_keys.clear()

    def dump(self) -> dict[str, Any]:
        """The violations and the per-key strict settings, as JSON values (for a state
        store): ``{"violations": [...], "strict_keys": [...]}``."""
        with self._lock:
            return {"violations": list(self._violations),
                    "strict_keys": sorted(self._strict_keys)}

    def load(self, doc: dict[str, Any]) -> None:
        """Replace the violations and per-key strict settings with :meth:`dump`'s ``doc``."""
        with self._lock:
            self.version += 1
            self._violations.clear()
            self._violations.extend(doc["violations"])
            self._strict_keys = set(doc["strict_keys"])

    # -- the check -----------------------------------------------------------------------------
    def prepare(self, vendors: Iterable[str]) -> None:
        """Load and compile the vendors' contracts now (about 0.5 s once per process), so the
        first request does not wait for it. A vendor without a contract is not checked."""
        for vendor in vendors:
            contract = contracts.for_vendor(vendor)
            if contract is None:
                log.warning("no contract for vendor %r: its requests are not checked", vendor)
                continue
            for op in contract.operations.values():
                self._ops[(vendor, op.operation_id)] = op

    def operation(self, vendor: str, operation: str) -> contracts.Operation | None:
        """The contract operation for an adapter's ``(slug, operation)``; cached."""
        key = (vendor, operation)
        if key not in self._ops:
            contract = contracts.for_vendor(vendor)
            self._ops[key] = contract.operation(operation) if contract is not None else None
        return self._ops[key]

    def _memo_key(self, op: contracts.Operation, scope: Scope, body: bytes) -> tuple[Any, ...]:
        """What a request's verdict depends on: the operation, path, query string, the first
        value of each header the operation's contract reads (``Content-Type`` too) and the
        body."""
        names = self._header_names.get(id(op))
        if names is None:
            names = self._header_names[id(op)] = _header_names(op)
        values: list[bytes | None] = [None] * len(names)
        for name, value in scope["headers"]:
            i = names.get(name)
            if i is not None and values[i] is None:
                values[i] = value
        return (id(op), scope["path"], scope.get("query_string", b""), _prefix(scope), body,
                *values)

    async def check(self, adapter: VendorAdapter, operation: str, request: Request) -> None:
        """Check ``request`` against the contract of ``adapter``'s ``operation``.

        Records every problem; does nothing for an operation without a contract. A request
        that obeys (or has no contract) is noted on its context
        (``RequestContext.obeys``: the fast lane keeps only such reads' answers).

        Raises:
            InvalidInput: strict mode and the request breaks the contract (the status is the
                contract's ``x-violation-status``, 422 by default, 400 for a body that is not
                JSON or of another media type); the adapter renders it in its vendor's body.
        """
        scope = request.scope
        op = self.operation(adapter.slug, operation)
        if op is None:
            _obeys(scope)
            return
        # A request without Content-Length or Transfer-Encoding has no body (RFC 9112, 6.3):
        # a status poll skips reading it. A verdict depends only on the path, query, the
        # headers the contract reads and the body, so a request (with a body of up to
        # _MEMO_BODY_BYTES) seen before to obey is not checked again.
        raw = await request.body() if _may_have_body(scope) else b""
        memo: tuple[Any, ...] | None = None
        if len(raw) <= _MEMO_BODY_BYTES:
            memo = self._memo_key(op, scope, raw)
            if memo in self._clean:
                _obeys(scope)
                return
        present = bool(raw.strip())
        parsed: Any = None
        error: str | None = None
        if present and op.body_media:
            try:
                parsed = await parse_json_async(raw, limit=self.body_limit)
                scope[JSON_KEY] = parsed
            except BodyTooLarge:
                raise
            except InvalidInput as exc:
                # The adapter's json_body raises this same error (the body is parsed once).
                error = exc.message
                scope[JSON_ERROR_KEY] = exc
        # request.url.path without building the URL (Starlette escapes these three).
        full_path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
        path = full_path
        prefix = _prefix(scope)
        if prefix and path.startswith(prefix):
            path = path[len(prefix):] or "/"
        m = op.regex.match(path)
        path_params = m.groupdict() if m is not None else dict(request.path_params)
        query = request.query_params if scope.get("query_string") else _NO_QUERY
        problems = op.check_request(
            headers=request.headers, query=query, path_params=path_params,
            content_type=request.headers.get("content-type") if present else None,
            body=parsed, body_present=present, body_error=error)
        if not problems:
            _obeys(scope)
            if memo is not None:
                if len(self._clean) >= _CLEAN_LIMIT:
                    self._clean.clear()
                self._clean.add(memo)
            return
        key: str | None
        try:
            key = adapter.api_key(request)
        except EmulatorError:
            key = None
        strict = self.strict or (key is not None and key in self._strict_keys)
        refusing = [p for p in problems if p.location != "security"]
        refused = strict and bool(refusing)
        now = self.clock.now()
        with self._lock:
            self.version += 1
            for p in problems:
                self._violations.append({
                    "at": now, "vendor": adapter.slug, "operation": operation,
                    "method": request.method, "path": full_path, "api_key": key,
                    "location": p.location, "field": p.field, "rule": p.rule,
                    "message": p.message, "refused": refused,
                })
        if refused:
            first = refusing[0]
            message = first.message
            if len(refusing) > 1:
                message += f" (and {len(refusing) - 1} more: GET /_emulator/violations)"
            cls = ValidationFailed if first.status == 422 else InvalidInput
            raise cls(message, status=first.status, code=first.code, field=first.field)


__all__ = ["RequestGuard"]
