"""Formats and patterns: the custom string formats the contracts use (``image-url``,
``webhook-url``, plus ``uri``, ``date-time``, ``uuid``), JSON Schema validators compiled with
them, where a format occurs in a schema, media-type patterns and how a field's path is
written in messages."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

IMAGE_URL = "image-url"
WEBHOOK_URL = "webhook-url"
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


def has_format(schema: Any, fmt: str) -> bool:
    """Whether ``schema`` (or one of its ``anyOf``/``oneOf``/``allOf``) has ``format: fmt``."""
    if not isinstance(schema, dict):
        return False
    if schema.get("format") == fmt:
        return True
    return any(has_format(s, fmt) for key in ("anyOf", "oneOf", "allOf")
               for s in schema.get(key, []))


def format_paths(schema: Any, fmt: str, at: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Paths (keys below ``at``; ``"*"`` for array items) of every field of ``schema`` with
    ``format: fmt``."""
    if not isinstance(schema, dict):
        return
    if schema.get("format") == fmt:
        yield at
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from format_paths(sub, fmt, at)
    for name, sub in (schema.get("properties") or {}).items():
        yield from format_paths(sub, fmt, (*at, name))
    if isinstance(schema.get("items"), dict):
        yield from format_paths(schema["items"], fmt, (*at, "*"))


def media_allowed(media: str, allowed: Mapping[str, Any]) -> bool:
    """Whether media type ``media`` is among ``allowed`` (exact, ``*/*`` or ``major/*``)."""
    if media in allowed or "*/*" in allowed:
        return True
    major = media.split("/", 1)[0]
    return f"{major}/*" in allowed


def field_path(parts: Iterable[Any]) -> str:
    """A JSON path as messages write it: ``briaBgRemoveParams.image``, ``images[0].url``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


__all__ = [
    "FORMATS", "IMAGE_URL", "WEBHOOK_URL", "SchemaValidator", "compile_schema", "field_path",
    "format_checker", "format_paths", "has_format", "is_http_url", "is_image_url",
    "media_allowed",
]
