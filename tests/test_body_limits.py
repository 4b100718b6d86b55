"""Request bodies that are not acceptable JSON, or too large, get the vendor's own 4xx (or the
control plane's), never a 500; an over-limit body is refused before it is read."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from emulator.settings import Settings
from emulator.testing.server import EmulatorServer
from tests.conftest import check_against_contracts
from tests.vendors.test_malformed import ENDPOINTS

DEEP = b"[" * 100_000
#: emulator.jsonbody.MAX_STRUCTURE_BYTES (a literal, so this file imports on main to fail there)
MAX_STRUCTURE_BYTES = 1024 * 1024
ADMIN_BODY_PATHS = ["/_emulator/faults", "/_emulator/journal/verify", "/_emulator/scenarios",
                    "/_emulator/clock/advance"]


@pytest.fixture()
def client(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=60) as c:
        c.post("/_emulator/reset").raise_for_status()
        yield c


def _alive(client: httpx.Client) -> None:
    assert client.get("/_emulator/health").status_code == 200


def _raw_http(url: str, head: bytes, body_chunks: Iterator[bytes] | None = None) -> bytes:
    """Send ``head`` (and chunks, until the server stops reading) on a raw socket; the reply."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks or ():
                sock.sendall(chunk)
        except OSError:  # the server answered and closed without reading the rest
            pass
        reply = b""
        try:
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
        except OSError:
            pass
        return reply


@pytest.mark.parametrize(("name", "path", "headers"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_deeply_nested_json_is_the_vendors_4xx(client: httpx.Client, name: str, path: str,
                                                headers: dict[str, str]) -> None:
    for body in (DEEP, b'{"image_url":' * 70 + b'"x"' + b"}" * 70):
        response = client.post(path, content=body,
                               headers={**headers, "Content-Type": "application/json"})
        response.json()
        if name == "fal-upload-token":  # reads no body: a violation recorded, no refusal
            assert response.status_code == 200
            continue
        assert response.status_code in (400, 422), response.text
        assert "nested" in response.text and "levels deep" in response.text
        check_against_contracts(response)
    _alive(client)


@pytest.mark.parametrize(("name", "path", "headers"), ENDPOINTS[:4],
                         ids=[e[0] for e in ENDPOINTS[:4]])
def test_a_body_of_many_values_is_refused_not_parsed(client: httpx.Client, name: str,
                                                     path: str, headers: dict[str, str]
                                                     ) -> None:
    body = b"[" + b"{}," * (MAX_STRUCTURE_BYTES // 3 + 10) + b"{}]"
    response = client.post(path, content=body,
                           headers={**headers, "Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert "outside strings" in response.text


@pytest.mark.parametrize("path", ADMIN_BODY_PATHS)
def test_deeply_nested_json_on_the_control_plane_is_400(client: httpx.Client, path: str
                                                        ) -> None:
    response = client.post(path, content=DEEP, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "nested" in response.json()["detail"]
    _alive(client)


def test_deep_block_yaml_scenario_is_400(client: httpx.Client) -> None:
    text = "".join(" " * i + f"k{i}:\n" for i in range(1200)).encode()
    response = client.post("/_emulator/scenarios", content=text)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]
    _alive(client)


@pytest.mark.parametrize("body", [b"\n", b"  \r\n\t "])
def test_whitespace_body_on_journal_verify_is_400(client: httpx.Client, body: bytes) -> None:
    response = client.post("/_emulator/journal/verify", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert "whitespace" in response.json()["detail"]
    # No body at all still means "no criteria" (the contract's body is optional).
    assert client.post("/_emulator/journal/verify").status_code == 200


@pytest.mark.parametrize(("name", "path", "headers"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
def test_over_limit_content_length_is_413_before_the_body_is_read(
        emulator: EmulatorServer, name: str, path: str, headers: dict[str, str]) -> None:
    """The header announces more than the limit and no body follows: an answer that waited
    for the body would never come (the socket times out)."""
    limit = emulator.settings.json_body_limit
    host = urlsplit(emulator.url).netloc
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {limit + 1}\r\nConnection: close\r\n\r\n").encode()
    reply = _raw_http(emulator.url, head)
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 413 " in status_line, reply[:300]
    assert str(limit).encode() in rest and b"application/json" in rest.lower()


def test_over_limit_content_length_on_the_control_plane_is_413(emulator: EmulatorServer
                                                               ) -> None:
    limit = emulator.settings.json_body_limit
    head = (f"POST /_emulator/faults HTTP/1.1\r\nHost: x\r\nContent-Length: {limit + 1}\r\n"
            "Connection: close\r\n\r\n").encode()
    reply = _raw_http(emulator.url, head)
    assert b" 413 " in reply.partition(b"\r\n")[0], reply[:300]
    assert b'"detail"' in reply


@pytest.mark.parametrize("path", ["/v2/images/background-remove", "/_emulator/faults"])
def test_chunked_body_is_cut_off_past_the_limit(emulator: EmulatorServer, path: str) -> None:
    limit = emulator.settings.json_body_limit
    chunk = b"A" * (256 * 1024)
    count = limit // len(chunk) + 8

    def chunks() -> Iterator[bytes]:
        yield b'{"image_url":"'
        for _ in range(count):
            yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\nContent-Type: "
            "application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            ).encode()
    first = b'{"image_url":"'
    start = f"{len(first):x}\r\n".encode() + first + b"\r\n"
    gen = chunks()
    next(gen)
    reply = _raw_http(emulator.url, head + start, gen)
    assert b" 413 " in reply.partition(b"\r\n")[0], reply[:300]
    with httpx.Client(base_url=emulator.url) as c:
        _alive(c)


def test_the_body_limit_is_the_base64_of_the_largest_file_plus_a_mib() -> None:
    from emulator.jsonbody import json_body_limit

    assert Settings().json_body_limit == 36_001_112 == json_body_limit(25 * 1024 * 1024)
    assert json_body_limit(3) == 4 + 1024 * 1024


def test_parse_json_limits() -> None:
    from emulator.jsonbody import MAX_DEPTH, parse_json

    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) == eval("[" * MAX_DEPTH
                                                                    + "]" * MAX_DEPTH)
    # Brackets and commas inside strings are neither depth nor structure.
    assert parse_json(b'{"a": "' + b"[{," * 100_000 + b'\\"["}')["a"].startswith("[{,")
    for bad in (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), DEEP, b"\n", b""):
        with pytest.raises(Exception) as info:
            parse_json(bad)
        assert type(info.value).__name__ == "InvalidInput" and info.value.args[0]


def test_an_unpaired_surrogate_is_400_and_nothing_is_stored(client: httpx.Client) -> None:
    """``"\\ud800"`` parses to text that cannot be encoded again: a rule stored with it made the
    reply a 500 (found by a 1000-example contract run of the control plane)."""
    body = b'[{"status": 429, "message": "\\ud800"}]'
    r = client.post("/_emulator/faults", content=body,
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "surrogate" in r.json()["detail"]
    assert client.get("/_emulator/faults").json()["rules"] == []
    paired = client.post("/_emulator/faults", json=[{"status": 429, "message": "\U0001F600"}])
    assert paired.status_code in (200, 201) and paired.json()["rules"][0]["message"] == "\U0001F600"
