"""A contract as a whole: the YAML document compiled into operations, looked up by id and by
request path, and laid out for one base URL (:meth:`Contract.flattened`); and several
contracts matched together (:class:`ContractSet`)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator

from emulator.contracts.errors import ContractError
from emulator.contracts.formats import SchemaValidator, compile_schema
from emulator.contracts.operations import (
    HTTP_METHODS,
    Operation,
    Parameter,
    SecurityScheme,
    server_parts,
)
from emulator.contracts.references import dereference, resolve_pointer
from emulator.contracts.registry import CONTROL_PLANE, fill_registry_enums
from emulator.contracts.responses import ResponseSpec, lift_closed_objects

TRANSPORT_RESPONSES = "x-transport-responses"


def with_transport_responses(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with its ``x-transport-responses`` merged into every operation (a copy;
    ``document`` itself when it has none).

    A status the operation lacks is added; for a status it has (inline or a local ``$ref``,
    which is inlined), the media types it lacks are added to its ``content``, so a documented
    JSON 400 and the HTTP server's plain-text 400 stand side by side.

    Raises:
        ContractError: ``x-transport-responses`` is not a mapping of responses, or a
            response ``$ref`` cannot be resolved.
    """
    extra = document.get(TRANSPORT_RESPONSES)
    if extra is None:
        return document
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        raise ContractError(f"{TRANSPORT_RESPONSES} must map statuses to response objects")
    doc = copy.deepcopy(document)
    for item in (doc.get("paths") or {}).values():
        for method in HTTP_METHODS:
            op = item.get(method) if isinstance(item, dict) else None
            if not isinstance(op, dict):
                continue
            responses = op.setdefault("responses", {})
            for status, spec in extra.items():
                have = responses.get(str(status))
                if not isinstance(have, dict):
                    responses[str(status)] = copy.deepcopy(spec)
                    continue
                if isinstance(have.get("$ref"), str):
                    rest = {k: v for k, v in have.items() if k != "$ref"}
                    have = {**copy.deepcopy(resolve_pointer(doc, have["$ref"])), **rest}
                    responses[str(status)] = have
                content = have.setdefault("content", {})
                for media, body in (spec.get("content") or {}).items():
                    content.setdefault(media, copy.deepcopy(body))
    return doc


class Contract:
    """One contract: its document, its operations, and lookups by id and by request path."""

    def __init__(self, name: str, document: dict[str, Any], path: Path | None = None) -> None:
        """Compile ``document`` (an OpenAPI 3.1 mapping); :attr:`document` is it with its
        ``x-transport-responses`` merged in (:func:`with_transport_responses`).

        Raises:
            ContractError: a ``$ref`` cannot be resolved, or a schema is not valid JSON Schema.
        """
        self.name = name
        self.path = path
        self.document = with_transport_responses(document)
        self.resolved: dict[str, Any] = dereference(self.document)
        self.operations: dict[str, Operation] = {}
        for op in self._compile():
            self.operations[op.operation_id] = op

    @classmethod
    def from_file(cls, path: Path) -> Contract:
        """Load a YAML contract.

        Raises:
            ContractError: unreadable, not YAML, or not an OpenAPI mapping.
        """
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ContractError(f"{path}: {exc}") from None
        if not isinstance(document, dict) or "openapi" not in document:
            raise ContractError(f"{path}: not an OpenAPI document")
        if document.get("x-vendor") == CONTROL_PLANE:
            document = fill_registry_enums(document)
        return cls(path.stem, document, path)

    @property
    def vendor(self) -> str:
        """``x-vendor``: the adapter slug (``emulator`` for the control plane)."""
        return str(self.document.get("x-vendor", self.name))

    @property
    def title(self) -> str:
        """``info.title``."""
        return str(self.document.get("info", {}).get("title", self.name))

    @property
    def version(self) -> str:
        """``info.version``."""
        return str(self.document.get("info", {}).get("version", ""))

    @property
    def status_words(self) -> tuple[str, ...]:
        """The enum of the schema marked ``x-status-words: true`` (the vendor's job status
        words, in the contract's order); ``()`` when none is marked."""
        schemas = self.resolved.get("components", {}).get("schemas") or {}
        for schema in schemas.values():
            if isinstance(schema, dict) and schema.get("x-status-words"):
                return tuple(str(w) for w in schema.get("enum") or ())
        return ()

    def security_schemes(self) -> dict[str, SecurityScheme]:
        """The contract's security schemes by name."""
        out: dict[str, SecurityScheme] = {}
        for name, raw in (self.resolved.get("components", {}).get("securitySchemes")
                          or {}).items():
            kind = str(raw.get("type", ""))
            if kind == "http":
                prefix = raw.get("x-key-prefix") or f"{str(raw.get('scheme', 'bearer')).title()} "
                out[name] = SecurityScheme(name, kind, "header", "Authorization", str(prefix))
            else:
                out[name] = SecurityScheme(name, kind, str(raw.get("in", "header")),
                                           str(raw.get("name", "")),
                                           str(raw.get("x-key-prefix", "")))
        return out

    def _compile(self) -> Iterator[Operation]:
        doc = self.resolved
        schemes = self.security_schemes()
        root_servers = doc.get("servers") or [{"url": "/", "x-emulator": True}]
        default_security = doc.get("security", [])
        for path, item in (doc.get("paths") or {}).items():
            shared = item.get("parameters", [])
            for method in HTTP_METHODS:
                raw = item.get(method)
                if raw is None:
                    continue
                servers = raw.get("servers") or item.get("servers") or root_servers
                prefixes, real = server_parts(servers)
                params: dict[tuple[str, str], dict[str, Any]] = {
                    (p["in"], p["name"]): p for p in shared}
                params.update({(p["in"], p["name"]): p for p in raw.get("parameters", [])})
                security = [[schemes[n] for n in requirement if n in schemes]
                            for requirement in raw.get("security", default_security)]
                if any(not alt for alt in security):
                    security = []  # one alternative needs nothing: no key required
                body = raw.get("requestBody") or {}
                body_media = {m.lower(): self._validator(c.get("schema"))
                              for m, c in (body.get("content") or {}).items()}
                json_body = (body.get("content") or {}).get("application/json") or {}
                yield Operation(
                    contract=self.name,
                    operation_id=str(raw.get("operationId") or f"{method} {path}"),
                    method=method.upper(), path=path, prefixes=prefixes or ("",),
                    real_servers=real,
                    parameters=[self._parameter(p) for p in params.values()
                                if p.get("in") in ("header", "query", "path", "cookie")],
                    security=security,
                    body_required=bool(body.get("required", False)),
                    body_media=body_media,
                    body_schema=json_body.get("schema"),
                    responses={str(code): self._response(str(code), spec)
                               for code, spec in (raw.get("responses") or {}).items()},
                )

    def _validator(self, schema: Any) -> SchemaValidator | None:
        if schema is None:
            return None
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:
            raise ContractError(f"{self.name}: invalid schema: {exc}") from None
        return compile_schema(schema)

    def _parameter(self, raw: dict[str, Any]) -> Parameter:
        schema = raw.get("schema") or {}
        validator = self._validator(schema)
        assert validator is not None
        return Parameter(name=str(raw["name"]), location=str(raw["in"]),
                         required=bool(raw.get("required", raw.get("in") == "path")),
                         schema=schema, validator=validator)

    def _response(self, status: str, raw: dict[str, Any]) -> ResponseSpec:
        media = {m.lower(): self._validator(c.get("schema"))
                 for m, c in (raw.get("content") or {}).items()}
        headers = {name.lower(): (bool(h.get("required", False)),
                                  self._validator(h.get("schema")))
                   for name, h in (raw.get("headers") or {}).items()}
        variants: dict[str, SchemaValidator | None] = {}
        if self.resolved.get("x-extensible-responses") is True:
            variants = {m.lower(): self._validator(lift_closed_objects(c.get("schema")))
                        for m, c in (raw.get("content") or {}).items()}
        return ResponseSpec(status=status, media=media, headers=headers, variants=variants)

    # -- lookups -----------------------------------------------------------------------------
    def operation(self, operation_id: str) -> Operation | None:
        """The operation called ``operation_id``, or ``None``."""
        return self.operations.get(operation_id)

    def match(self, method: str, path: str) -> tuple[Operation | None, bool]:
        """``(operation, path_known)`` for a request on the emulator.

        ``operation`` is ``None`` when no operation has this method and path; ``path_known``
        says whether some operation has the path (with another method: a 405 is due).
        """
        candidates = sorted(self.operations.values(), key=lambda op: op.template_count)
        known = False
        for op in candidates:
            if op.match(path) is not None:
                if op.method == method.upper():
                    return op, True
                known = True
        return None, known

    def flattened(self, base_url: str) -> dict[str, Any]:
        """The document laid out for one base URL, for tools that take a single server.

        With ``base_url`` on one of the vendor's real hosts, only that host's paths are kept,
        each under the path part of its real server (``https://queue.fal.run/fal-ai/bria``
        puts ``/requests/{id}`` at ``/fal-ai/bria/requests/{id}``). Otherwise (the emulator
        or another mock on one port) every path is prefixed with its ``x-emulator`` server's
        path. The servers become ``[base_url]``.

        A server URL with a path is how a contract gives two hosts the same path: fal's
        ``fal.run`` and ``queue.fal.run`` both serve ``/fal-ai/bria/background/remove``, so
        the queue's paths are written relative to ``https://queue.fal.run/fal-ai/bria``.

        Raises:
            ContractError: two paths land on the same place.
        """
        doc = copy.deepcopy(self.document)
        new_paths: dict[str, Any] = {}
        for path, item in (doc.get("paths") or {}).items():
            ops = [op for op in self.operations.values() if op.path == path]
            laid = self.path_at(ops[0], base_url) if ops else path
            if laid is None:
                continue
            item.pop("servers", None)
            for method in HTTP_METHODS:
                if isinstance(item.get(method), dict):
                    item[method].pop("servers", None)
            if laid in new_paths:
                raise ContractError(f"{self.name}: {path} and another path both land on "
                                    f"{laid} for {base_url}")
            new_paths[laid] = item
        doc["paths"] = new_paths
        doc["servers"] = [{"url": base_url.rstrip("/")}]
        return doc

    def real_hosts(self) -> set[str]:
        """Host names of the vendor's real servers (lower case)."""
        return {(urlsplit(u).hostname or "").lower()
                for op in self.operations.values() for u in op.real_servers}

    def path_at(self, op: Operation, base_url: str) -> str | None:
        """Where ``op``'s path template lies below ``base_url`` (see :meth:`flattened`).

        ``None`` when ``base_url`` is one of the vendor's real hosts and ``op`` lives on
        another of them.
        """
        parts = urlsplit(base_url)
        host = (parts.hostname or "").lower()
        if host not in self.real_hosts():
            return op.prefixes[0] + op.path
        base_path = parts.path.rstrip("/")
        for url in op.real_servers:
            server = urlsplit(url)
            if (server.hostname or "").lower() != host:
                continue
            server_path = server.path.rstrip("/")
            if server_path.startswith(base_path):
                return server_path[len(base_path):] + op.path
        return None

    def url_for(self, op: Operation, base_url: str) -> str:
        """Absolute URL of ``op``'s path template for a run against ``base_url``.

        On the emulator (or a mock on one port): ``base_url`` + prefix + path. When
        ``base_url`` is one of the vendor's real hosts: the operation's own real server (which
        may be another host of the vendor, e.g. ``rest.fal.ai`` for fal's storage token).
        """
        if (urlsplit(base_url).hostname or "").lower() not in self.real_hosts():
            return base_url.rstrip("/") + op.prefixes[0] + op.path
        at = self.path_at(op, base_url)
        if at is not None:
            return base_url.rstrip("/") + at
        return op.real_servers[0] + op.path


class ContractSet:
    """Several contracts, matched together (the emulator serves them all on one port)."""

    def __init__(self, contracts: Iterable[Contract]) -> None:
        self.contracts = list(contracts)

    @classmethod
    def load(cls) -> ContractSet:
        """Every contract found by :func:`emulator.contracts.loading.contracts_dir`."""
        from emulator.contracts.loading import load_all  # loading imports this module

        return cls(load_all())

    def match(self, method: str, path: str) -> tuple[Operation | None, bool]:
        """Like :meth:`Contract.match`, over every contract (fewest path templates wins)."""
        best: Operation | None = None
        known = False
        for contract in self.contracts:
            op, seen = contract.match(method, path)
            known = known or seen
            if op is not None and (best is None or op.template_count < best.template_count):
                best = op
        return best, known

    def check_response(self, method: str, path: str, status: int, headers: Mapping[str, str],
                       body: bytes) -> list[str]:
        """Problems of one response of the emulator (``[]`` when its contract allows it).

        A path no contract knows is not checked. A known path with an undocumented method
        must answer 405 with an ``Allow`` header.
        """
        op, known = self.match(method, path)
        if op is not None:
            return op.check_response(status, headers, body)
        if not known:
            return []
        lower = {k.lower() for k in headers}
        problems = []
        if status != 405:
            problems.append(f"{method} {path}: the method is not in the contract, so 405 is "
                            f"due, got {status}")
        elif "allow" not in lower:
            problems.append(f"{method} {path}: 405 without an Allow header")
        return problems


__all__ = ["TRANSPORT_RESPONSES", "Contract", "ContractSet", "with_transport_responses"]
