"""Operations: one compiled operation of a contract (its parameters, security, body and
responses), where the emulator serves it (prefixes), matching a request path to it, and
checking a request against it (:class:`Problem`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from jsonschema.exceptions import ValidationError

from emulator.contracts.formats import (
    SchemaValidator,
    field_path,
    format_paths,
    has_format,
    media_allowed,
)
from emulator.contracts.responses import ResponseSpec, check_response, spec_for

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Problem:
    """One way a request breaks its contract.

    Attributes:
        location: ``body``, ``header``, ``query``, ``path``, ``content-type`` or ``security``.
        field: the field at fault (``briaBgRemoveParams.image``, ``X-Webhook-URL``).
        rule: the JSON Schema keyword broken (``required``, ``type``, ``format``...), or
            ``json``, ``content-type``, ``security``.
        message: a sentence naming the field and the rule.
        status: the status strict mode answers with (``x-violation-status``, default 422).
        code: the error code for strict mode (``x-violation-code``).
    """

    location: str
    field: str
    rule: str
    message: str
    status: int = 422
    code: str = "contract_violation"


def _problems_from(errors: Iterable[ValidationError], location: str, base: str,
                   limit: int = 5) -> list[Problem]:
    found: list[Problem] = []
    seen: set[str] = set()
    for error in sorted(errors, key=lambda e: (len(e.path), str(e.validator))):
        if len(found) >= limit:
            break
        parts: list[Any] = [base] if base else []
        parts.extend(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [p for p in error.validator_value if p not in error.instance]
            if missing:
                parts.append(missing[0])
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set((error.schema or {}).get("properties", {}))
            extra = [p for p in error.instance if p not in allowed]
            if extra:
                parts.append(extra[0])
        name = field_path(parts) or location
        if name in seen:
            continue  # one problem per field: the first rule it breaks
        seen.add(name)
        schema = error.schema if isinstance(error.schema, dict) else {}
        rule = str(error.validator)
        found.append(Problem(
            location=location, field=name, rule=rule,
            message=f"{name}: {error.message} (rule: {rule})",
            status=int(schema.get("x-violation-status", 422)),
            code=str(schema.get("x-violation-code", "contract_violation")),
        ))
    return found


@dataclass
class Parameter:
    """A header, query or path parameter with its compiled schema."""

    name: str
    location: str
    required: bool
    schema: dict[str, Any]
    validator: SchemaValidator

    def coerce(self, raw: str) -> Any:
        """The raw text as the schema's type wants it (``"1"`` -> 1 for an integer)."""
        kinds = self.schema.get("type", "string")
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if "string" in kinds:
            return raw
        for kind in kinds:
            try:
                if kind == "integer":
                    return int(raw)
                if kind == "number":
                    return float(raw)
                if kind == "boolean" and raw.lower() in ("true", "false", "1", "0"):
                    return raw.lower() in ("true", "1")
            except ValueError:
                continue
        return raw


@dataclass
class SecurityScheme:
    """How a request proves its key: a header (``apiKey`` or ``http``), a query or a cookie."""

    name: str
    kind: str
    location: str
    parameter: str
    prefix: str = ""

    def header_value(self, key: str) -> tuple[str, str]:
        """``(header name, value)`` carrying ``key`` (``Authorization: Key <key>``...)."""
        if self.kind == "http":
            scheme = self.prefix or "Bearer "
            return "Authorization", f"{scheme}{key}"
        return self.parameter, f"{self.prefix}{key}"


@dataclass
class Operation:
    """One operation of a contract, compiled for validation and matching.

    Attributes:
        operation_id: the ``operationId`` (the adapter's ``operation`` name).
        method: upper-case HTTP method.
        path: the path template as written (``/v2/jobs/{id}``).
        prefixes: where the emulator serves it (path parts of ``x-emulator`` servers).
        real_servers: the vendor's own base URLs.
        parameters: headers, query and path parameters.
        security: alternatives, each a list of schemes that must all be present;
            ``[]`` means no key is needed.
        body_required: whether a request body is required.
        body_media: media types the request body may have, with validators for JSON.
        body_schema: the dereferenced JSON request body schema (``None`` without one).
        responses: by status (``"202"``, ``"4XX"``, ``"default"``).
    """

    contract: str
    operation_id: str
    method: str
    path: str
    prefixes: tuple[str, ...]
    real_servers: tuple[str, ...]
    parameters: list[Parameter] = field(repr=False)
    security: list[list[SecurityScheme]] = field(repr=False)
    body_required: bool = field(repr=False)
    body_media: dict[str, SchemaValidator | None] = field(repr=False)
    body_schema: dict[str, Any] | None = field(repr=False)
    responses: dict[str, ResponseSpec] = field(repr=False)
    regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pattern = ""
        for piece in re.split(r"(\{[^}]+\})", self.path):
            if piece.startswith("{") and piece.endswith("}"):
                pattern += f"(?P<{_group(piece[1:-1])}>[^/]+)"
            else:
                pattern += re.escape(piece)
        self.regex = re.compile(f"^{pattern}$")

    @property
    def template_count(self) -> int:
        """How many ``{param}`` the path has (fewer wins when several paths match)."""
        return self.path.count("{")

    def match(self, path: str) -> dict[str, str] | None:
        """Path parameters when ``path`` (as requested on the emulator) is this operation's."""
        for prefix in self.prefixes:
            if prefix and not path.startswith(prefix):
                continue
            rest = path[len(prefix):] or "/"
            m = self.regex.match(rest)
            if m is not None:
                names = re.findall(r"\{([^}]+)\}", self.path)
                return dict(zip(names, m.groups(), strict=True))
        return None

    def fields_with_format(self, fmt: str) -> list[tuple[str, tuple[str, ...]]]:
        """``(location, path)`` of every field whose schema has ``format: fmt``.

        ``location`` is ``body`` (``path`` a tuple of keys, ``"*"`` for array items) or a
        parameter location (``path`` is the parameter's name).
        """
        found: list[tuple[str, tuple[str, ...]]] = [
            (p.location, (p.name,)) for p in self.parameters if has_format(p.schema, fmt)]
        if self.body_schema is not None:
            found.extend(("body", path) for path in format_paths(self.body_schema, fmt, ()))
        return found

    def check_request(self, *, headers: Mapping[str, str], query: Mapping[str, str],
                      path_params: Mapping[str, str], content_type: str | None,
                      body: Any, body_present: bool, body_error: str | None = None
                      ) -> list[Problem]:
        """Every way the request breaks this operation's contract (``[]`` when it obeys).

        Args:
            headers: request headers (a case-insensitive mapping, as Starlette's).
            query: query parameters.
            path_params: path parameters by the contract's names.
            content_type: the ``Content-Type`` header, or ``None``.
            body: the parsed JSON body (when ``body_present`` and JSON).
            body_present: whether the request carried a non-blank body.
            body_error: why the body is not acceptable JSON, the parser's message (``None``
                when it parsed).
        """
        problems: list[Problem] = []
        if self.security and not any(
            all(_present(s, headers, query) for s in alt) for alt in self.security
        ):
            names = " or ".join(
                " + ".join(s.parameter for s in alt) for alt in self.security)
            problems.append(Problem("security", names, "security",
                                    f"{names}: the API key is missing (rule: security)",
                                    status=401, code="unauthorized"))
        sources: dict[str, Mapping[str, str]] = {
            "header": headers, "query": query, "path": path_params}
        for param in self.parameters:
            source = sources.get(param.location)
            if source is None:
                continue
            raw = _lookup(source, param.name) if param.location == "header" else source.get(
                param.name)
            if raw is None:
                if param.required:
                    problems.append(Problem(
                        param.location, param.name, "required",
                        f"{param.name}: the {param.location} parameter is required "
                        "(rule: required)"))
                continue
            value = param.coerce(raw)
            if not param.validator.is_valid(value):
                problems.extend(_problems_from(param.validator.iter_errors(value),
                                               param.location, param.name, limit=1))
        if not self.body_media:
            return problems
        if not body_present:
            if self.body_required:
                problems.append(Problem("body", "body", "required",
                                        "body: a request body is required (rule: required)"))
            return problems
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if not media_allowed(media, self.body_media):
            allowed = ", ".join(self.body_media)
            problems.append(Problem(
                "content-type", "Content-Type", "content-type",
                f"Content-Type: {media or '(none)'} is not accepted; send {allowed} "
                "(rule: content-type)", status=400, code="bad_request"))
            return problems
        validator = self.body_media.get(media) or self.body_media.get("application/json")
        if media.endswith("json") or media == "":
            if body_error is not None:
                problems.append(Problem("body", "body", "json",
                                        f"body: {body_error} (rule: json)",
                                        status=400, code="bad_request"))
            elif validator is not None and not validator.is_valid(body):
                problems.extend(_problems_from(validator.iter_errors(body), "body", ""))
        return problems

    def accepts_variant(self, status: int, body: Any) -> bool:
        """Whether the JSON value ``body`` is an answer of ``status`` the vendor may send
        (:meth:`ResponseSpec.accepts_variant`; ``False`` for an undocumented status)."""
        spec = spec_for(self.responses, status)
        return spec is not None and spec.accepts_variant(body)

    def check_response(self, status: int, headers: Mapping[str, str], body: bytes) -> list[str]:
        """Every way a response breaks this operation's contract (``[]`` when it obeys); see
        :func:`emulator.contracts.responses.check_response`."""
        return check_response(f"{self.contract} {self.operation_id} ({self.method} {self.path})",
                              self.responses, status, headers, body)


def _group(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _present(scheme: SecurityScheme, headers: Mapping[str, str], query: Mapping[str, str]
             ) -> bool:
    if scheme.location == "query":
        return bool((query.get(scheme.parameter) or "").strip())
    if scheme.location == "cookie":
        return scheme.parameter in (headers.get("cookie") or "")
    header = "authorization" if scheme.kind == "http" else scheme.parameter
    value = (_lookup(headers, header) or "").strip()
    if scheme.prefix and value.lower().startswith(scheme.prefix.strip().lower()):
        value = value[len(scheme.prefix.strip()):].strip()
    return bool(value)


def _lookup(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name in any case (Starlette's ``Headers`` or a plain lower-case dict)."""
    value = headers.get(name)
    return headers.get(name.lower()) if value is None else value


def server_parts(servers: list[dict[str, Any]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(prefixes, real)`` of an OpenAPI ``servers`` list: the path parts of the
    ``x-emulator`` servers (where the emulator serves the paths on its one port), and the
    vendor's own base URLs (variables filled with their defaults)."""
    prefixes: list[str] = []
    real: list[str] = []
    for server in servers:
        url = str(server.get("url", ""))
        for name, var in (server.get("variables") or {}).items():
            url = url.replace("{" + name + "}", str(var.get("default", "")))
        if server.get("x-emulator"):
            prefixes.append(urlsplit(url).path.rstrip("/"))
        else:
            real.append(url.rstrip("/"))
    return tuple(prefixes), tuple(real)


__all__ = [
    "HTTP_METHODS", "Operation", "Parameter", "Problem", "SecurityScheme", "server_parts",
]
