"""Where a contract and the server met at the edges and disagreed (found by 1000-example
schemathesis runs): each rule is stated once in the server and repeated by the contract, and
these tests keep the two equal and prove the server follows it."""

from __future__ import annotations

import base64
import re
import socket
import string
from urllib.parse import urlsplit

import httpx
import jsonschema
import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator import contracts
from emulator.core.faults import NON_BLANK_PATTERN, is_blank
from emulator.core.inputs import BASE64_MIN_CHARS, BASE64_PATTERN, parse_source
from emulator.errors import InvalidInput
from emulator.testing.server import EmulatorServer
from tests.conftest import small_photo
from tests.contracts.conftest import KEY
from tests.core.test_inputs import encode

GMI_SUBMIT = "/api/v1/ie/requestqueue/apikey/requests"


def gmi_image_pattern() -> str:
    schema = contracts.load("gmicloud").resolved["components"]["schemas"]["Payload"]
    (pattern,) = [alt["pattern"] for alt in schema["properties"]["image"]["anyOf"]
                  if "pattern" in alt]
    return str(pattern)


def takes_as_base64(value: str) -> bool:
    try:
        return parse_source(value, field="payload.image", allow_base64=True).kind == "base64"
    except InvalidInput:
        return False


def test_gmi_contract_repeats_the_servers_base64_rule() -> None:
    assert gmi_image_pattern() == BASE64_PATTERN
    assert f"{{{BASE64_MIN_CHARS},}}" in BASE64_PATTERN


def test_gmi_base64_newlines_are_not_counted() -> None:
    # Drawn by schemathesis from the old pattern, which counted the "\n" after "\r" towards
    # the 16 characters; the server strips it and found 15 (400 to a schema-valid request).
    drawn = " \r\f\u000b\t \r\n0000\n0000000000 "
    assert not re.search(gmi_image_pattern(), drawn)
    assert not takes_as_base64(drawn)
    sixteen = "\n\n0000\n\n000000000000\n==\n"
    assert re.search(gmi_image_pattern(), sixteen) and takes_as_base64(sixteen)


# Strings around the edges of the rule: near 16 alphabet characters, line breaks, padding
# (too much, or before a line break), white space that str.strip and \s agree on (\x1c,
# \x85, U+3000) around and inside, a character that is no space, and non-ASCII.
_WS = st.lists(st.sampled_from(" \t\r\n\x0b\x1c\x85\u3000"), max_size=2).map("".join)
_MIDDLE = st.lists(st.sampled_from("AAAAz09+/-_\n\n=. \u00e9"), min_size=13,
                   max_size=20).map("".join)
_EDGES = st.builds(lambda a, b, c, d: a + b + c + d, _WS, _MIDDLE,
                   st.sampled_from(["", "=", "==", "===", "\n="]), _WS)


@settings(max_examples=500, deadline=None)
@given(_EDGES)
def test_gmi_server_takes_exactly_what_the_contract_admits(value: str) -> None:
    assert bool(re.search(BASE64_PATTERN, value)) == takes_as_base64(value)


@settings(max_examples=40, deadline=None)
@given(st.from_regex(BASE64_PATTERN))
def test_gmi_server_takes_what_schemathesis_draws(value: str) -> None:
    """Drawn the way schemathesis draws the pattern (``from_regex``: slow, so few)."""
    assert takes_as_base64(value)


def test_gmi_mime_base64_with_line_breaks_is_accepted_and_conforms(
        fast_client: httpx.Client) -> None:
    """Base64 as ``base64.encodebytes`` writes it (76-character lines, a final newline) is
    taken and matted; every reply is checked against the contract by ``fast_client``."""
    image = base64.encodebytes(encode(small_photo(48), "PNG")).decode()
    assert image.endswith("\n") and image.count("\n") > 1
    assert set(image) <= set(string.ascii_letters + string.digits + "+/=\n")
    assert re.search(gmi_image_pattern(), image)
    auth = {"Authorization": f"Bearer {KEY}"}
    reply = fast_client.post(GMI_SUBMIT, headers=auth, json={
        "model": "bria-image-remove-background", "payload": {"image": image}})
    assert reply.status_code == 200, reply.text
    status = {}
    for _ in range(50):
        status = fast_client.get(f"{GMI_SUBMIT}/{reply.json()['request_id']}",
                                 headers=auth).json()
        if status["status"] in ("success", "failed"):
            break
    assert status["status"] == "success", status


def non_blank_schema() -> dict[str, object]:
    schema = contracts.load("emulator").resolved["components"]["schemas"]["NonBlank"]
    return dict(schema)


def test_non_blank_is_one_rule_in_contract_and_server() -> None:
    assert non_blank_schema()["pattern"] == NON_BLANK_PATTERN


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u3000\ufeff\x00a", max_size=4))
def test_non_blank_means_the_same_to_every_validator_and_the_server(value: str) -> None:
    """Python's ``re`` (``jsonschema``), Rust's (``jsonschema-rs``, which schemathesis uses to
    tell valid data from invalid) and the server agree on what is blank."""
    schema = non_blank_schema()
    python = jsonschema.Draft202012Validator(schema).is_valid(value)
    rust = jsonschema_rs.Draft202012Validator(schema).is_valid(value)
    assert python == rust == (not is_blank(value))


def test_a_fault_message_of_control_characters_is_served(fast_client: httpx.Client) -> None:
    """Accepted by the control plane, echoed, and shown in the vendor's own error body (all
    replies checked against their contracts by ``fast_client``)."""
    message = "\x1c\x00\x85"
    added = fast_client.post("/_emulator/faults", json={
        "api_key": KEY, "vendor": "gmicloud", "status": 500, "message": message})
    assert added.status_code == 201, added.text
    assert added.json()["message"] == message
    reply = fast_client.post(GMI_SUBMIT, headers={"Authorization": f"Bearer {KEY}"}, json={
        "model": "bria-image-remove-background", "payload": {"image": "https://x.test/a.png"}})
    assert reply.status_code == 500 and reply.json() == {"error": message}


def raw_request(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is (httpx refuses to send malformed headers) and read the reply
    to its end (the server closes the connection)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("name", contracts.names())
def test_every_operation_documents_the_http_servers_plain_400(name: str) -> None:
    contract = contracts.load(name)
    assert contract.document[contracts.TRANSPORT_RESPONSES]["400"]["content"]["text/plain"]
    for op in contract.operations.values():
        assert "text/plain" in op.responses["400"].media, op.operation_id
        raw = contract.resolved["paths"][op.path][op.method.lower()]["responses"]["400"]
        assert "text/plain" in raw["content"]


def test_a_documented_json_400_keeps_its_json() -> None:
    submit = contracts.load("gmicloud").operation("submit")
    assert submit is not None
    assert {"application/json", "text/plain"} <= set(submit.responses["400"].media)
    problems = submit.check_response(400, {"content-type": "application/json"},
                                     b'{"error": "payload.image is required"}')
    assert problems == []


@pytest.mark.parametrize(("name", "operation_id", "request_line", "bad_header"), [
    ("pixazo", "status", b"GET /v2/requests/status/x HTTP/1.1", b"m#Pr.;: 1"),
    ("gmicloud", "submit", b"POST /api/v1/ie/requestqueue/apikey/requests HTTP/1.1",
     b"Transfer-Encoding: !PjmNm&Q"),
    ("emulator", "listFaultRules", b"GET /_emulator/faults HTTP/1.1", b"Bad Name: 1"),
])
def test_the_http_servers_400_conforms(fast_emulator: EmulatorServer, name: str,
                                      operation_id: str, request_line: bytes,
                                      bad_header: bytes) -> None:
    """What schemathesis sent (a header name with ``;``, an unknown transfer coding) is
    refused by uvicorn before any route: a documented status and media type."""
    status, headers, body = raw_request(
        fast_emulator.url, request_line + b"\r\nHost: x\r\n" + bad_header + b"\r\n\r\n")
    assert status == 400 and headers["content-type"].startswith("text/plain")
    op = contracts.load(name).operation(operation_id)
    assert op is not None
    assert op.check_response(status, headers, body) == []
