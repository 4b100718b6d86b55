"""Response checking: what a contract documents for one operation's responses, and whether a
response (status, headers, body) obeys it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.contracts.formats import SchemaValidator, field_path, media_allowed

#: Response headers any HTTP server adds; a contract need not list them.
GENERIC_HEADERS = frozenset({
    "content-type", "content-length", "date", "server", "connection", "keep-alive",
    "transfer-encoding", "content-encoding", "vary",
})


@dataclass
class ResponseSpec:
    """One documented response: media types with validators, and headers.

    ``variants``: per media type, the validator of what the *vendor* may send there, for the
    ``vary`` fault (:mod:`emulator.core.faults.variation`): the schema itself, or, in a
    contract marked ``x-extensible-responses: true``, the schema with every
    ``additionalProperties: false`` lifted (that marks what the emulator sends; the vendor
    may add fields). Empty: the same as ``media``.
    """

    status: str
    media: dict[str, SchemaValidator | None]
    headers: dict[str, tuple[bool, SchemaValidator | None]]
    variants: dict[str, SchemaValidator | None] = field(default_factory=dict)

    def accepts_variant(self, body: Any) -> bool:
        """Whether the JSON value ``body`` is an answer the vendor may send here (the
        ``variants`` validator of ``application/json``; ``False`` without one)."""
        validator = (self.variants or self.media).get("application/json")
        return validator is not None and validator.is_valid(body)


def spec_for(responses: Mapping[str, ResponseSpec], status: int) -> ResponseSpec | None:
    """The documented response of ``status`` (exact, then ``4XX``, then ``default``)."""
    return (responses.get(str(status)) or responses.get(f"{status // 100}XX")
            or responses.get("default"))


def lift_closed_objects(schema: Any) -> Any:
    """A copy of ``schema`` with every ``additionalProperties: false`` removed (objects stay
    as documented, and may have more properties)."""
    if isinstance(schema, dict):
        return {k: lift_closed_objects(v) for k, v in schema.items()
                if not (k == "additionalProperties" and v is False)}
    if isinstance(schema, list):
        return [lift_closed_objects(v) for v in schema]
    return schema


def check_response(where: str, responses: Mapping[str, ResponseSpec], status: int,
                   headers: Mapping[str, str], body: bytes) -> list[str]:
    """Every way a response breaks ``responses`` (an operation's, by status: ``"202"``,
    ``"4XX"``, ``"default"``); ``[]`` when it obeys. Each message starts with ``where``.

    Checks the status is documented, every non-generic header is documented (and
    required ones are there), the media type is documented, and a JSON body validates.
    """
    spec = spec_for(responses, status)
    if spec is None:
        return [f"{where}: status {status} is not documented "
                f"(documented: {', '.join(responses)})"]
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
    if not media_allowed(media, spec.media):
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
            at = field_path(error.absolute_path) or "(body)"
            problems.append(f"{where}: {status}: {at}: {error.message} "
                            f"(rule: {error.validator})")
    return problems


__all__ = ["GENERIC_HEADERS", "ResponseSpec", "check_response", "lift_closed_objects",
           "spec_for"]
