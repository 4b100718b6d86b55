"""Where each vendor reads its API key, and what it answers when the key is not there.

Every 401 a client can get from a missing, blank or wrongly-schemed credential is pinned here
word for word, status and whole body, per vendor (the messages are the vendors' own, or the
emulator's stand-ins, and clients match on them). Scheme words are case-insensitive, the key is
stripped, and in strict key mode (``--keys``) an unlisted key is ``invalid API key``. A vendor
registered without rows here fails :func:`test_every_vendor_has_its_answers_pinned`.

The requests are status reads of an unknown id: the key is checked first, so a credential
that passes answers the vendor's 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from emulator.app import EmulatorApp, create_app
from emulator.context import CTX_KEY, RequestContext
from emulator.errors import Unauthorized
from emulator.vendors import load_all
from emulator.vendors.base import KeyHeader, VendorAdapter
from tests.conftest import emulator_settings
from tests.vendors.drivers import DRIVERS

OPEN = create_app(emulator_settings())
STRICT = create_app(emulator_settings(keys=frozenset({"good"})))

#: The key header and the path of a status read of an unknown id, per vendor.
WHERE: dict[str, tuple[str, str]] = {
    d.slug: (d.key_header, d.job_requests[0][1].format(id="nope")) for d in DRIVERS}

#: The whole 401 body of each vendor for an error ``message``.
BODY: dict[str, Callable[[str], Any]] = {
    "pixazo": lambda m: {"error": "Unauthorized", "message": m},
    "apiframe": lambda m: {"message": m, "code": "UNAUTHORIZED"},
    "bria": lambda m: {"error": {"code": 401, "message": "Unauthorized", "details": m}},
    "fal": lambda m: {"detail": m},
    "runflow": lambda m: {"detail": m},
    "gmicloud": lambda m: {"error": m},
}

PIXAZO_MISSING = ("Access denied due to missing subscription key. Make sure to include "
                  "subscription key when making requests to an API.")
FAL_MISSING = "No credentials provided. Send 'Authorization: Key <FAL_KEY>'."
RUNFLOW_MISSING = "Missing API key: send 'Authorization: Bearer <RUNFLOW_API_KEY>'"
RUNFLOW_SCHEME = "Authorization must be 'Bearer <API key>'"
GMI_SCHEME = "Authorization must be 'Bearer <API key>'"


def fal_scheme(sent: str) -> str:
    """fal's wrong-scheme message, naming the first 20 characters of the word sent."""
    return f"Authorization must be 'Key <FAL_KEY>', not '{sent} ...'"


def blank(message: str) -> list[tuple[str | None, str]]:
    """No header, an empty one and a blank one: all three are a missing key."""
    return [(None, message), ("", message), ("   ", message)]


#: (header value, None for no header; the 401 message) per vendor.
REFUSED: dict[str, list[tuple[str | None, str]]] = {
    "pixazo": blank(PIXAZO_MISSING),
    "apiframe": blank("Missing API key"),
    "bria": blank("Missing api_token header"),
    "fal": [*blank(FAL_MISSING),
            ("Key", "No credentials provided after 'Key'."),
            ("Key   ", "No credentials provided after 'Key'."),
            ("k", fal_scheme("k")),
            ("Bearer", fal_scheme("Bearer")),
            ("Bearer k", fal_scheme("Bearer")),
            ("BEARER   k  ", fal_scheme("BEARER")),
            ("Token abc", fal_scheme("Token")),
            ("Abcdefghijklmnopqrstuvwxyz k", fal_scheme("Abcdefghijklmnopqrst")),
            ("Key\tk", fal_scheme("Key\tk"))],
    "runflow": [*blank(RUNFLOW_MISSING),
                ("Bearer", "Missing API key after 'Bearer'"),
                ("Bearer   ", "Missing API key after 'Bearer'"),
                ("k", RUNFLOW_SCHEME),
                ("Key k", RUNFLOW_SCHEME),
                ("Abcdefghijklmnopqrstuvwxyz k", RUNFLOW_SCHEME),
                ("Bearer\tk", RUNFLOW_SCHEME)],
    "gmicloud": [*blank("missing Authorization header"),
                 ("Bearer", "missing API key after 'Bearer'"),
                 ("Bearer   ", "missing API key after 'Bearer'"),
                 ("k", GMI_SCHEME),
                 ("Key k", GMI_SCHEME),
                 ("Bearer\tk", GMI_SCHEME)],
}

#: Header values each vendor takes as the key ``k`` (scheme word in any case, key stripped).
TAKEN: dict[str, list[str]] = {
    "pixazo": ["k", "  k  ", "Bearer k"],
    "apiframe": ["k", "  k  ", "Key k"],
    "bria": ["k", "  k  ", "Bearer k"],
    "fal": ["Key k", "key k", "KEY   k  ", "  kEy k"],
    "runflow": ["Bearer k", "bearer k", "BEARER   k  ", "  bEaReR k"],
    "gmicloud": ["Bearer k", "bearer k", "BEARER   k  "],
}

#: How each vendor's header carries the key ``good`` (strict key mode lists only it).
CARRIES: dict[str, str] = {"pixazo": "{}", "apiframe": "{}", "bria": "{}", "fal": "Key {}",
                           "runflow": "Bearer {}", "gmicloud": "Bearer {}"}


def answer(app: EmulatorApp, slug: str, value: str | None) -> httpx.Response:
    """``slug``'s answer to a status read of an unknown id with its key header ``value``."""
    header, path = WHERE[slug]

    async def read() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as client:
            return await client.get(path, headers={} if value is None else {header: value})

    return asyncio.run(read())


def cases(table: dict[str, list[Any]]) -> list[Any]:
    return [pytest.param(slug, *row if isinstance(row, tuple) else (row,),
                         id=f"{slug}-{row!r}") for slug, rows in table.items() for row in rows]


def test_every_vendor_has_its_answers_pinned() -> None:
    assert set(load_all()) == set(REFUSED) == set(TAKEN) == set(CARRIES) == set(BODY)


@pytest.mark.parametrize(("slug", "value", "message"), cases(REFUSED))
def test_a_missing_or_misschemed_key_is_the_vendors_401(slug: str, value: str | None,
                                                        message: str) -> None:
    for app in (OPEN, STRICT):
        response = answer(app, slug, value)
        assert (response.status_code, response.json()) == (401, BODY[slug](message))


@pytest.mark.parametrize(("slug", "value"), cases(TAKEN))
def test_a_key_in_the_vendors_header_is_taken(slug: str, value: str) -> None:
    assert answer(OPEN, slug, value).status_code == 404


@pytest.mark.parametrize("slug", sorted(CARRIES))
def test_strict_key_mode_takes_listed_keys_only(slug: str) -> None:
    listed = answer(STRICT, slug, CARRIES[slug].format("  good "))
    assert listed.status_code == 404, listed.text
    unlisted = answer(STRICT, slug, CARRIES[slug].format("k"))
    assert (unlisted.status_code, unlisted.json()) == (401, BODY[slug]("invalid API key"))


def test_every_vendor_declares_its_key_header_or_reads_its_own() -> None:
    """A vendor declares :attr:`VendorAdapter.key_header`, and the base ``api_key`` reads it;
    only one whose credential is more than a header's value (GMI Cloud's access tokens)
    overrides ``api_key``. Either way ``api_key`` is wrapped once (read once per request)."""
    base = VendorAdapter.__dict__["api_key"]
    assert not hasattr(base.__wrapped__, "__wrapped__")
    for slug, cls in load_all().items():
        own = cls.__dict__.get("api_key")
        if own is None:
            assert isinstance(cls.key_header, KeyHeader), slug
            assert cls.api_key is base, slug
        else:
            assert cls.key_header is None, slug
            assert own is not base and not hasattr(own.__wrapped__, "__wrapped__"), slug
    assert set(load_all()) - {s for s, c in load_all().items() if "api_key" in c.__dict__} \
        == {"pixazo", "apiframe", "bria", "fal", "runflow"}


def _request(adapter: VendorAdapter, header: str, value: str) -> tuple[Request, RequestContext]:
    ctx = RequestContext(adapter=adapter, vendor=adapter.slug, host=None, prefix="",
                         operation=None, route=None)
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"",
             "headers": [(header.lower().encode(), value.encode())], CTX_KEY: ctx}
    return Request(scope), ctx


@pytest.mark.parametrize("slug", ["pixazo", "fal", "gmicloud"])
def test_the_key_is_read_once_per_request(slug: str) -> None:
    adapter = OPEN.state.emulator.adapters[slug]
    header, _ = WHERE[slug]
    request, ctx = _request(adapter, header, CARRIES[slug].format("first"))
    assert adapter.api_key(request) == "first" == ctx.key
    request.scope["headers"] = [(header.lower().encode(), CARRIES[slug].format("second").encode())]
    assert adapter.api_key(Request(request.scope)) == "first"  # kept on the context

    refused, ctx = _request(adapter, header, "   ")
    with pytest.raises(Unauthorized) as first:
        adapter.api_key(refused)
    assert ctx.key is None and ctx.key_error is first.value
    refused.scope["headers"] = [(header.lower().encode(), CARRIES[slug].format("k").encode())]
    with pytest.raises(Unauthorized) as again:
        adapter.api_key(Request(refused.scope))
    assert again.value is first.value


def test_a_key_header_is_lower_case_and_a_scheme_has_its_messages() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        KeyHeader("X-API-Key", missing="m")
    with pytest.raises(ValueError, match="needs"):
        KeyHeader("authorization", missing="m", scheme="Bearer", wrong_scheme="w")


def test_an_adapter_with_no_key_header_and_no_api_key_says_so() -> None:
    adapter = VendorAdapter(OPEN.state.emulator)
    request, _ = _request(adapter, "x-api-key", "k")
    with pytest.raises(NotImplementedError, match="declares no key_header"):
        adapter.api_key(request)
