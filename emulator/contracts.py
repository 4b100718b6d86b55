"""The OpenAPI 3.1 contracts: where they are, what they say, and checking traffic against them.

One YAML document per vendor (``pixazo.yaml``, ``apiframe.yaml``, ...) plus ``emulator.yaml``
for the ``/_emulator`` control plane. They are the single source of truth for the wire
format: the request guard (strict mode, violations), the end-to-end tests' response checks,
the schemathesis suite (``rmbg-emulator contracts check``) and the hypothesis strategies
(:mod:`emulator.testing.strategies`) all read them through this module.

Where they are found (first hit wins):

1. ``$RMBG_EMULATOR_CONTRACTS``, a directory;
2. ``contracts/`` at the root of a source checkout (beside ``pyproject.toml``), so an
   editable install or ``PYTHONPATH=.`` sees edits at once;
3. ``emulator/_contracts/`` inside an installed package: ``setup.py``'s ``build_py`` copies
   ``contracts/*.yaml`` there when a wheel is built.

Conventions the machinery relies on (a new vendor needs only a new contract file):

* ``x-vendor``: the adapter's ``slug`` (``emulator`` for the control plane).
* ``operationId``: the ``operation`` name the adapter gives the route
  (``VendorAdapter.route(..., operation="submit")``).
* Servers marked ``x-emulator: true`` give where the emulator serves a path: the path part of
  their URL is the prefix on the one port (``""`` for a vendor's main host, ``/queue``...). A
  path or operation may have its own ``servers`` (a vendor with several hosts). A real server
  URL may carry a path too (``https://queue.fal.run/fal-ai/bria``): its paths are written
  below it, which is how two hosts serve the same path (fal's ``fal.run`` and
  ``queue.fal.run`` both have ``/fal-ai/bria/background/remove``); :meth:`Contract.flattened`
  puts the server's path back for a run against that host.
* ``format: image-url`` (an http(s) URL or a ``data:`` URI of an image) and
  ``format: webhook-url`` (an http(s) URL) mark the fields that property-based runs fill with
  safe values, so no run reaches the network.
* ``x-violation-status`` / ``x-violation-code`` on a schema: the status and code a strict-mode
  violation of that schema gets (default 422, ``contract_violation``).
* ``x-state-dependent: true`` on a response: a *valid* request may get this status because of
  the state of what it names (fal's result of a request not done yet: 400); the property-based
  suite accepts it for valid data (:mod:`emulator.testing.contract_check`).
* ``x-token-from: {operationId, pointer, query?, body?}`` on a security scheme: its credential
  is a token that operation issues (fal's CDN upload token); the suite fetches one. A list of
  such steps runs in order, each step's ``"{token}"`` being the one before's (GMI Cloud's
  login, then session); ``"{api_key}"`` is the suite's key.
* ``x-transport-responses: {status: response}`` at the top: what the HTTP server answers, before
  any route, to a request it cannot parse (a malformed header name, an unknown
  ``Transfer-Encoding``: uvicorn's ``text/plain`` 400). Every operation may get it, so loading
  merges it into every operation's responses (:func:`with_transport_responses`).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

ENV_DIR = "RMBG_EMULATOR_CONTRACTS"
HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE.parent / "contracts"
PACKAGED_DIR = HERE / "_contracts"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: Response headers any HTTP server adds; a contract need not list them.
GENERIC_HEADERS = frozenset({
    "content-type", "content-length", "date", "server", "connection", "keep-alive",
    "transfer-encoding", "content-encoding", "vary",
})
IMAGE_URL = "image-url"
WEBHOOK_URL = "webhook-url"


class ContractError(Exception):
    """A contract is missing, unreadable or not usable (unknown name, bad ``$ref``...)."""


# -- finding and loading ---------------------------------------------------------------------
def contracts_dir() -> Path:
    """The directory holding the ``*.yaml`` contracts (see the module docstring for the order).

    Raises:
        ContractError: none of the places holds a contract.
    """
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    if (HERE.parent / "pyproject.toml").is_file() and any(SOURCE_DIR.glob("*.yaml")):
        return SOURCE_DIR
    if any(PACKAGED_DIR.glob("*.yaml")):
        return PACKAGED_DIR
    raise ContractError(
        f"no contracts found in {SOURCE_DIR} or {PACKAGED_DIR} (set ${ENV_DIR} to a directory)")


def names() -> list[str]:
    """Names of every contract (file stems), sorted: ``["apiframe", "emulator", ...]``."""
    return sorted(p.stem for p in contracts_dir().glob("*.yaml"))


def path_of(name: str) -> Path:
    """The file of contract ``name``.

    Raises:
        ContractError: no such contract (the message lists the known ones).
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise ContractError(f"no contract {name!r}")
    path = contracts_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ContractError(f"no contract {name!r}; known: {', '.join(names())}")
    return path


def text(name: str, catalog: Mapping[str, Iterable[str]] | None = None) -> str:
    """The YAML text of contract ``name``; the control plane's with the enums filled from the
    registries (:func:`fill_registry_enums`, with ``catalog``: see there).

    Raises:
        ContractError: no such contract.
    """
    raw = path_of(name).read_text(encoding="utf-8")
    if name != CONTROL_PLANE:
        return raw
    document = yaml.safe_load(raw)
    return yaml.safe_dump(fill_registry_enums(document, catalog), sort_keys=False,
                          allow_unicode=True, width=100)


def load(name: str) -> Contract:
    """Contract ``name``, parsed and compiled (cached per directory and name).

    Raises:
        ContractError: no such contract, or it does not parse.
    """
    return _load(str(contracts_dir()), name)


@functools.lru_cache(maxsize=64)
def _load(directory: str, name: str) -> Contract:
    return Contract.from_file(path_of(name))


def load_all() -> list[Contract]:
    """Every contract, sorted by name."""
    return [load(n) for n in names()]


def for_vendor(slug: str) -> Contract | None:
    """The contract whose ``x-vendor`` is ``slug``, or ``None``."""
    try:
        found = [c for c in load_all() if c.vendor == slug]
    except ContractError:
        return None
    return found[0] if found else None


# -- the control plane's enums, from the registries -------------------------------------------
#: The control plane's contract (``x-vendor: emulator``).
CONTROL_PLANE = "emulator"


def registry_catalog() -> dict[str, frozenset[str]]:
    """Vendor slug -> its operation names (the ``file`` download included), from the adapter
    registry (:func:`emulator.vendors.load_all`): what fault rules may name, as
    ``FaultRules.catalog`` of an emulator built now has it."""
    from emulator.core.faults import FILE_OPERATION
    from emulator.vendors import load_all

    return {slug: frozenset(cls(None).operations()) | {FILE_OPERATION}  # type: ignore[arg-type]
            for slug, cls in sorted(load_all().items())}


def fill_registry_enums(document: dict[str, Any],
                        catalog: Mapping[str, Iterable[str]] | None = None) -> dict[str, Any]:
    """A copy of the control-plane contract with what the registries decide filled in.

    In ``components.schemas``: ``FaultRuleSpec``'s ``vendor`` and ``operation`` enums (from
    ``catalog``: vendor slug -> operation names, dotted prefixes added as rules allow them;
    default :func:`registry_catalog`), one property per registered fault effect (its
    ``spec_schema``), ``anyOf`` (at least one effect) and ``allOf`` (effects that exclude each
    other); ``FaultRule`` (the rule's JSON view) gets each effect's ``view_schema``. Property
    order is the rule's: match fields, effects, options. A document without those schemas is
    returned as it is. The running emulator serves it with its own ``FaultRules.catalog``
    (``GET /_emulator/contracts/emulator.yaml``); loading it (:func:`load`) fills it from the
    registries, so the guard, the property tests and ``contracts check`` see the same enums.
    """
    from emulator.core.faults import EFFECTS, MATCH_FIELDS, operation_names

    schemas = (document.get("components") or {}).get("schemas") or {}
    if "FaultRuleSpec" not in schemas or "FaultRule" not in schemas:
        return document
    catalog = registry_catalog() if catalog is None else catalog
    doc = copy.deepcopy(document)
    schemas = doc["components"]["schemas"]
    spec = schemas["FaultRuleSpec"]
    given: dict[str, Any] = spec.get("properties") or {}
    filled = {
        "vendor": {**given.get("vendor", {}), "type": "string", "enum": sorted(catalog)},
        "operation": {**given.get("operation", {}), "type": "string", "enum": sorted(
            operation_names(op for ops in catalog.values() for op in ops))},
    }
    props = {name: filled.get(name, given.get(name)) for name in MATCH_FIELDS
             if name in filled or name in given}
    props.update({name: effect.spec_schema() for name, effect in EFFECTS.items()})
    props.update({k: v for k, v in given.items() if k not in props})
    spec["properties"] = props
    spec["anyOf"] = [{"required": [name]} for name in EFFECTS]
    pairs = []
    order = list(EFFECTS)
    for name, effect in EFFECTS.items():
        for other in effect.excludes:
            if other in EFFECTS:
                pairs.append(sorted((name, other), key=order.index))
    if pairs:
        spec["allOf"] = [{"not": {"required": pair}} for pair in pairs]
    else:
        spec.pop("allOf", None)
    view = schemas["FaultRule"]
    seen: dict[str, Any] = view.get("properties") or {}
    head = {k: v for k, v in seen.items() if k in ("id", *MATCH_FIELDS)}
    head.update({name: effect.view_schema() for name, effect in EFFECTS.items()})
    head.update({k: v for k, v in seen.items() if k not in head})
    view["properties"] = head
    return doc


# -- $ref resolution ---------------------------------------------------------------------------
def _pointer(document: Any, ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ContractError(f"only local $refs are supported, got {ref!r}")
    node = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ContractError(f"unresolvable $ref {ref!r}") from None
    return node


def dereference(document: Any) -> Any:
    """A copy of ``document`` with every local ``$ref`` replaced by its target.

    Sibling keys of a ``$ref`` (3.1 allows ``description`` beside it) are kept.

    Raises:
        ContractError: a non-local or unresolvable ``$ref``, or a cycle.
    """

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                if ref in seen:
                    raise ContractError(f"recursive $ref {ref!r}")
                target = walk(_pointer(document, ref), (*seen, ref))
                rest = {k: walk(v, seen) for k, v in node.items() if k != "$ref"}
                return {**target, **rest} if isinstance(target, dict) and rest else target
            return {k: walk(v, seen) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, seen) for v in node]
        return node

    return walk(document, ())


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
                    have = {**copy.deepcopy(_pointer(doc, have["$ref"])), **rest}
                    responses[str(status)] = have
                content = have.setdefault("content", {})
                for media, body in (spec.get("content") or {}).items():
                    content.setdefault(media, copy.deepcopy(body))
    return doc


# -- formats -----------------------------------------------------------------------------------
_DATA_URI = re.compile(r"^data:[\w.+-]+/[\w.+-]+(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)


def is_http_url(value: str) -> bool:
    """True for an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(value.strip())
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def is_image_url(value: str) -> bool:
    """True for what ``format: image-url`` admits: an http(s) URL or a base64 ``data:`` URI."""
    return is_http_url(value) or bool(_DATA_URI.match(value.strip()[:512]))


def _is_uri(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", parts.scheme)) and " " not in value


def _is_date_time(value: str) -> bool:
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value,
                        flags=re.IGNORECASE):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def format_checker() -> FormatChecker:
    """The formats the contracts use: ``image-url``, ``webhook-url``, ``uri``, ``date-time``,
    ``uuid`` (non-strings always pass, as JSON Schema says)."""
    checker = FormatChecker(formats=())
    checks = {IMAGE_URL: is_image_url, WEBHOOK_URL: is_http_url, "uri": _is_uri,
              "date-time": _is_date_time, "uuid": _is_uuid}
    for name, check in checks.items():
        def wrapped(instance: object, _check: Any = check) -> bool:
            return not isinstance(instance, str) or bool(_check(instance))

        checker.checks(name)(wrapped)
    return checker


FORMATS = format_checker()
_FORMAT_FUNCTIONS: dict[str, Any] = {
    IMAGE_URL: is_image_url, WEBHOOK_URL: is_http_url, "uri": _is_uri,
    "date-time": _is_date_time, "uuid": _is_uuid,
}


class SchemaValidator:
    """A compiled JSON Schema 2020-12 schema with :data:`FORMATS`.

    :meth:`is_valid` takes the fast path through ``jsonschema-rs`` (Rust, about 10x faster
    than pure Python) when it is installed; a "no" from it, and :meth:`iter_errors`, come
    from ``jsonschema``, which is authoritative and words the messages.
    """

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.slow = Draft202012Validator(schema, format_checker=FORMATS)
        self.fast: Any = None
        try:
            import jsonschema_rs

            self.fast = jsonschema_rs.Draft202012Validator(
                schema, formats=_FORMAT_FUNCTIONS, validate_formats=True)
        except Exception:  # not installed, or a schema it cannot take: the slow path works
            self.fast = None

    def is_valid(self, instance: Any) -> bool:
        """Whether ``instance`` obeys the schema."""
        if self.fast is not None:
            try:
                if self.fast.is_valid(instance):
                    return True
            except Exception:  # a value jsonschema-rs cannot convert: ask jsonschema
                pass
        return bool(self.slow.is_valid(instance))

    def iter_errors(self, instance: Any) -> Iterator[ValidationError]:
        """Every error, as ``jsonschema`` reports them (with paths and messages)."""
        yield from self.slow.iter_errors(instance)


def compile_schema(schema: Any) -> SchemaValidator:
    """A :class:`SchemaValidator` for a dereferenced schema."""
    return SchemaValidator(schema)


# -- problems ----------------------------------------------------------------------------------
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


def _field_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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
        name = _field_path(parts) or location
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


# -- the compiled contract ---------------------------------------------------------------------
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
class ResponseSpec:
    """One documented response: media types with validators, and headers."""

    status: str
    media: dict[str, SchemaValidator | None]
    headers: dict[str, tuple[bool, SchemaValidator | None]]


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
            (p.location, (p.name,)) for p in self.parameters if _has_format(p.schema, fmt)]
        if self.body_schema is not None:
            found.extend(("body", path) for path in _format_paths(self.body_schema, fmt, ()))
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
        if not _media_allowed(media, self.body_media):
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

    def check_response(self, status: int, headers: Mapping[str, str], body: bytes) -> list[str]:
        """Every way a response breaks this operation's contract (``[]`` when it obeys).

        Checks the status is documented, every non-generic header is documented (and
        required ones are there), the media type is documented, and a JSON body validates.
        """
        where = f"{self.contract} {self.operation_id} ({self.method} {self.path})"
        spec = (self.responses.get(str(status)) or self.responses.get(f"{status // 100}XX")
                or self.responses.get("default"))
        if spec is None:
            return [f"{where}: status {status} is not documented "
                    f"(documented: {', '.join(self.responses)})"]
        problems: list[str] = []
        lower = {k.lower(): v for k, v in headers.items()}
        for name, value in lower.items():
            if name in GENERIC_HEADERS:
                continue
            if name not in spec.headers:
                problems.append(f"{where}: {status}: header {name!r} is not documented")
                continue
            validator = spec.headers[name][1]
            if validator is not None and not validator.is_valid(value):
                problems.append(f"{where}: {status}: header {name}: {value!r} breaks its schema")
        for name, (required, _) in spec.headers.items():
            if required and name not in lower:
                problems.append(f"{where}: {status}: required header {name!r} is missing")
        media = lower.get("content-type", "").split(";", 1)[0].strip().lower()
        if not spec.media:
            if body:
                problems.append(f"{where}: {status}: a body is sent but none is documented")
            return problems
        if not _media_allowed(media, spec.media):
            problems.append(f"{where}: {status}: content type {media or '(none)'!r} is not "
                            f"documented ({', '.join(spec.media)})")
            return problems
        validator = spec.media.get(media)
        if validator is not None and media.endswith("json"):
            try:
                data = json.loads(body)
            except ValueError as exc:
                return [*problems, f"{where}: {status}: the body is not JSON: {exc}"]
            for error in sorted(validator.iter_errors(data), key=lambda e: list(e.path))[:5]:
                at = _field_path(error.absolute_path) or "(body)"
                problems.append(f"{where}: {status}: {at}: {error.message} "
                                f"(rule: {error.validator})")
        return problems


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


def _media_allowed(media: str, allowed: Mapping[str, Any]) -> bool:
    if media in allowed or "*/*" in allowed:
        return True
    major = media.split("/", 1)[0]
    return f"{major}/*" in allowed


def _has_format(schema: Any, fmt: str) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("format") == fmt:
        return True
    return any(_has_format(s, fmt) for key in ("anyOf", "oneOf", "allOf")
               for s in schema.get(key, []))


def _format_paths(schema: Any, fmt: str, at: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    if not isinstance(schema, dict):
        return
    if schema.get("format") == fmt:
        yield at
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from _format_paths(sub, fmt, at)
    for name, sub in (schema.get("properties") or {}).items():
        yield from _format_paths(sub, fmt, (*at, name))
    if isinstance(schema.get("items"), dict):
        yield from _format_paths(schema["items"], fmt, (*at, "*"))


def _server_parts(servers: list[dict[str, Any]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
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
                prefixes, real = _server_parts(servers)
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
        return ResponseSpec(status=status, media=media, headers=headers)

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
        """Every contract found by :func:`contracts_dir`."""
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


__all__ = [
    "ENV_DIR", "FORMATS", "IMAGE_URL", "WEBHOOK_URL", "Contract", "ContractError",
    "ContractSet", "Operation", "Problem", "SchemaValidator", "compile_schema", "contracts_dir",
    "dereference", "for_vendor", "is_http_url", "is_image_url", "load", "load_all", "names",
    "path_of", "text",
]
