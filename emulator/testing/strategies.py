"""Hypothesis strategies, built from the contracts, that generate valid vendor requests.

For your own property-based tests: :func:`requests` draws requests that obey a vendor's
contract (``contracts/<vendor>.yaml``) for one operation or all of them, with your key in the
vendor's auth header. Image fields (``format: image-url``) get tiny ``data:`` URIs (or the
emulator's sample URLs, or your own strategy) and webhook fields (``format: webhook-url``)
get loopback URLs nobody listens on, so no drawn request makes the emulator reach the network.
Needs the ``test`` extra (hypothesis and schemathesis, which does the JSON Schema drawing).

Example (the emulator running on 127.0.0.1:8000)::

    import httpx
    from hypothesis import HealthCheck, given, settings
    from emulator.testing.strategies import requests

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request=requests("apiframe", "submit", api_key="my-test-key"))
    def test_every_valid_submit_is_accepted(request):
        with httpx.Client(base_url="http://127.0.0.1:8000") as client:
            response = request.send(client)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "QUEUED"

``request.body`` is the JSON body, ``request.headers`` the headers (auth included),
``request.path`` the path on the emulator; ``send`` posts it with any ``httpx.Client``.
"""

from __future__ import annotations

import base64
import copy
import functools
import io
import zlib
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import strategies as st
from PIL import Image

from emulator import contracts

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
#: Port 9 (discard) on the loopback: a webhook sent there fails at once and stays local.
WEBHOOK_BASE = "http://127.0.0.1:9/rmbg-webhook"


@functools.lru_cache(maxsize=1)
def tiny_images() -> tuple[str, ...]:
    """A few valid images, 8 to 16 pixels wide, as ``data:`` URIs (PNG, RGBA PNG, JPEG, GIF).

    Cheap for any matte engine, and no network is needed to read them.
    """
    out: list[str] = []
    specs: list[tuple[str, str, tuple[int, int], tuple[int, ...]]] = [
        ("PNG", "RGB", (8, 8), (200, 30, 30)),
        ("PNG", "RGBA", (12, 10), (30, 200, 30, 255)),
        ("JPEG", "RGB", (16, 12), (30, 30, 200)),
        ("GIF", "P", (8, 6), (3,)),
    ]
    for fmt, mode, size, colour in specs:
        img = Image.new(mode, size, colour if len(colour) > 1 else colour[0])
        img.paste(Image.new(mode, (size[0] // 2, size[1] // 2),
                            (250,) * len(colour) if len(colour) > 1 else 1), (2, 2))
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        mime = f"image/{fmt.lower()}"
        out.append(f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}")
    return tuple(out)


def image_urls(base_url: str | None = None) -> st.SearchStrategy[str]:
    """Image references for ``format: image-url`` fields.

    Args:
        base_url: an emulator's base URL; when given, its sample photographs
            (``/_emulator/samples/*.jpg``, read without HTTP by the emulator itself) are
            drawn too. They are a few hundred pixels wide, so they cost a real matte.
    """
    tiny = st.sampled_from(tiny_images())
    if base_url is None:
        return tiny
    from emulator import samples

    photos = [f"{base_url.rstrip('/')}/_emulator/samples/{name}.jpg"
              for name, s in samples.SAMPLES.items() if s.kind == "photo"]
    return st.one_of(tiny, st.sampled_from(photos))


def webhook_urls() -> st.SearchStrategy[str]:
    """Loopback webhook URLs on port 9, where nothing listens (``format: webhook-url``)."""
    return st.integers(min_value=0, max_value=10**6).map(lambda n: f"{WEBHOOK_BASE}/{n}")


def stable_choice(options: tuple[str, ...], seed_text: str) -> str:
    """One of ``options``, chosen by a stable hash of ``seed_text`` (same in every process)."""
    return options[zlib.crc32(seed_text.encode("utf-8", "replace")) % len(options)]


def replace_fields(op: contracts.Operation, *, headers: MutableMapping[str, Any],
                   query: MutableMapping[str, Any], body: Any, fmt: str,
                   new: Callable[[str], str | None]) -> None:
    """Replace, in place, the values of every ``format: fmt`` field of ``op`` in a request.

    ``new(old)`` gives the replacement of a string value, or ``None`` to keep it; values that
    are not strings (negative test data) are never touched.
    """
    lower = {k.lower(): k for k in headers}
    for location, path in op.fields_with_format(fmt):
        if location == "header":
            name = lower.get(path[0].lower())
            if name is not None and isinstance(headers[name], str):
                value = new(headers[name])
                if value is not None:
                    headers[name] = value
        elif location == "query":
            if isinstance(query.get(path[0]), str):
                value = new(query[path[0]])
                if value is not None:
                    query[path[0]] = value
        elif location == "body":
            _replace_in(body, path, new)


def _replace_in(node: Any, path: tuple[str, ...], new: Callable[[str], str | None]) -> None:
    if not path:
        return
    head, rest = path[0], path[1:]
    children: list[tuple[Any, Any]]
    if head == "*" and isinstance(node, list):
        children = list(enumerate(node))
    elif isinstance(node, dict) and head in node:
        children = [(head, node[head])]
    else:
        return
    for key, child in children:
        if rest:
            _replace_in(child, rest, new)
        elif isinstance(child, str):
            value = new(child)
            if value is not None:
                node[key] = value


@dataclass(frozen=True)
class ContractRequest:
    """One drawn request.

    Attributes:
        vendor: the contract's name (``pixazo``).
        operation: the ``operationId`` (``submit``).
        method: ``POST``, ``GET``...
        path: the path on the emulator, parameters filled in.
        headers: headers, the vendor's auth header included.
        query: query parameters.
        body: the JSON body, the raw bytes for a body of another media type (fal's CDN
            upload), or ``None`` when the operation takes none (``has_body`` False).
        media_type: the body's media type (``application/json``, ``image/png``...).
    """

    vendor: str
    operation: str
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, Any] = field(default_factory=dict)
    body: Any = None
    has_body: bool = False
    media_type: str | None = None

    def send(self, client: httpx.Client) -> httpx.Response:
        """Send it with ``client`` (whose ``base_url`` is the emulator's)."""
        kwargs: dict[str, Any] = {"headers": dict(self.headers), "params": dict(self.query)}
        if self.has_body and isinstance(self.body, bytes):
            kwargs["content"] = self.body
            kwargs["headers"].setdefault("Content-Type",
                                         self.media_type or "application/octet-stream")
        elif self.has_body:
            kwargs["json"] = self.body
        return client.request(self.method, self.path, **kwargs)


def auth_headers(contract: contracts.Contract, op: contracts.Operation, api_key: str
                 ) -> dict[str, str]:
    """The headers carrying ``api_key`` for ``op`` (its first security alternative)."""
    if not op.security:
        return {}
    return dict(s.header_value(api_key) for s in op.security[0] if s.location == "header")


def requests(vendor: str, operation: str | None = None, *, api_key: str = "test-key",
             base_url: str | None = None, images: st.SearchStrategy[str] | None = None,
             webhooks: st.SearchStrategy[str] | None = None,
             path_parameters: Mapping[str, str] | None = None
             ) -> st.SearchStrategy[ContractRequest]:
    """Valid requests for ``vendor``'s ``operation`` (or any of its operations).

    Args:
        vendor: a contract name (``pixazo``, ``apiframe``, ``emulator``...).
        operation: an ``operationId`` (``submit``, ``status``...); ``None``: every operation.
        api_key: put in the vendor's auth header.
        base_url: the emulator's base URL; when given, image fields may also be its sample
            photographs (see :func:`image_urls`).
        images: the strategy for ``format: image-url`` fields (default :func:`image_urls`).
        webhooks: the strategy for ``format: webhook-url`` fields (default
            :func:`webhook_urls`).
        path_parameters: fixed path parameters (``{"request_id": ...}``); others are drawn.

    Raises:
        ContractError: no such contract.
        ValueError: no such operation (the message lists the contract's operations).
    """
    contract = contracts.load(vendor)
    ops = [op for op in contract.operations.values()
           if operation is None or op.operation_id == operation]
    if not ops:
        raise ValueError(f"contract {vendor!r} has no operation {operation!r}; known: "
                         f"{', '.join(contract.operations)}")
    schema = _schema(vendor)
    image_st = images if images is not None else image_urls(base_url)
    webhook_st = webhooks if webhooks is not None else webhook_urls()
    built = [_for_operation(contract, op, schema, api_key, image_st, webhook_st,
                            dict(path_parameters or {})) for op in ops]
    return st.one_of(built)


@functools.lru_cache(maxsize=16)
def _schema(vendor: str) -> Any:
    import schemathesis

    flat = contracts.load(vendor).flattened(DEFAULT_BASE_URL)
    return schemathesis.openapi.from_dict(flat)


def _for_operation(contract: contracts.Contract, op: contracts.Operation, schema: Any,
                   api_key: str, images: st.SearchStrategy[str],
                   webhooks: st.SearchStrategy[str], path_parameters: dict[str, str]
                   ) -> st.SearchStrategy[ContractRequest]:
    auth = auth_headers(contract, op, api_key)
    fixed = {k: v for k, v in path_parameters.items()
             if any(p.location == "path" and p.name == k for p in op.parameters)}
    api_operation = schema[op.prefixes[0] + op.path][op.method]
    cases = api_operation.as_strategy(headers=auth or None, path_parameters=fixed or None)

    @st.composite
    def build(draw: st.DrawFn) -> ContractRequest:
        from schemathesis.core import NOT_SET

        case = draw(cases)
        headers = {str(k): str(v) for k, v in (case.headers or {}).items()}
        query = dict(case.query or {})
        has_body = case.body is not NOT_SET
        body = copy.deepcopy(case.body) if has_body else None
        media_type = case.media_type if has_body else None
        raw = getattr(body, "data", None)
        if isinstance(body, str) and isinstance(raw, bytes):
            body = raw  # schemathesis's Binary: a binary body (format: binary)
        if has_body and media_type and "*" in media_type:
            media_type = "application/octet-stream"
        for fmt, strategy in ((contracts.IMAGE_URL, images),
                              (contracts.WEBHOOK_URL, webhooks)):

            def fresh(_old: str, s: st.SearchStrategy[str] = strategy) -> str:
                return draw(s)

            replace_fields(op, headers=headers, query=query, body=body, fmt=fmt, new=fresh)
        headers.update(auth)
        return ContractRequest(vendor=contract.name, operation=op.operation_id,
                               method=op.method, path=case.formatted_path, headers=headers,
                               query=query, body=body, has_body=has_body,
                               media_type=media_type)

    return build()


__all__ = [
    "ContractRequest", "auth_headers", "image_urls", "replace_fields", "requests",
    "stable_choice", "tiny_images", "webhook_urls",
]
