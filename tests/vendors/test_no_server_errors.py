"""No malformed body or header ever gets a 5xx or a non-JSON answer (property-based)."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.testing.server import EmulatorServer
from tests.vendors.drivers import DRIVERS

# Text without ':' can never form a URL, so no generated body makes the emulator fetch from
# anywhere (only loopback traffic is allowed here).
SAFE_TEXT = st.text(alphabet=st.characters(blacklist_characters=":", codec="utf-8"),
                    max_size=30)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | SAFE_TEXT,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(SAFE_TEXT, children, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(["image_url", "model", "briaBgRemoveParams", "image",
                               "content_moderation", "webhook_url", "input", "payload"])
BODIES = st.one_of(
    JSON,
    st.dictionaries(FIELD_NAMES, JSON, max_size=4),
    st.fixed_dictionaries({"model": st.sampled_from(["bria-bg-remove", "x"]),
                           "briaBgRemoveParams": st.dictionaries(FIELD_NAMES, JSON)}),
)
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                              blacklist_characters=":"), max_size=20)


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.text
    response.json()


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=BODIES, key=st.one_of(st.none(), HEADER_VALUE),
       extra=st.dictionaries(st.sampled_from(["X-Webhook-URL", "Content-Type", "Accept"]),
                             HEADER_VALUE, max_size=2))
def test_submit_never_5xx(emulator: EmulatorServer, body: Any, key: str | None,
                          extra: dict[str, str]) -> None:
    with httpx.Client(base_url=emulator.url, timeout=30) as client:
        for vendor in DRIVERS:
            headers = {**vendor.headers(key), **extra}
            check(client.post(vendor.submit_path, json=body, headers=headers))


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_id=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                              blacklist_characters="/?#%"), min_size=1,
                      max_size=40),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
def test_status_paths_never_5xx(emulator: EmulatorServer, job_id: str, method: str) -> None:
    with httpx.Client(base_url=emulator.url, timeout=30) as client:
        for path in (f"/v2/requests/status/{job_id}", f"/v2/jobs/{job_id}"):
            check(client.request(method, path, headers={"X-API-Key": "k",
                                                        "Ocp-Apim-Subscription-Key": "k"}))
