"""Malformed input is never a 5xx: random bodies on every vendor's submit endpoints."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.testing.server import EmulatorServer

FIELDS = ["image_url", "image", "model", "payload", "briaBgRemoveParams", "content_moderation",
          "webhook_url", "input", "sync_mode", "callback_url", "metadata", "prompt",
          "ref_image_url", "num_images", "seed"]

LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
    st.sampled_from(["https://127.0.0.1:1/x.png", "data:image/png;base64,AAAA", "", " ",
                     "bria-bg-remove", "bria-image-remove-background", "AAAAAAAAAAAAAAAAAAAA"]),
)
OBJECTS = st.dictionaries(
    st.sampled_from(FIELDS),
    st.one_of(LEAVES, st.lists(LEAVES, max_size=3),
              st.dictionaries(st.sampled_from(FIELDS), LEAVES, max_size=4)),
    max_size=5,
)
BODIES = st.one_of(
    OBJECTS.map(lambda o: json.dumps(o).encode()),
    LEAVES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)

ENDPOINTS: list[tuple[str, str, dict[str, str]]] = [
    ("pixazo", "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request",
     {"Ocp-Apim-Subscription-Key": "fuzz"}),
    ("apiframe", "/v2/images/background-remove", {"X-API-Key": "fuzz"}),
    ("gmicloud", "/api/v1/ie/requestqueue/apikey/requests", {"Authorization": "Bearer fuzz"}),
    ("fal-run-remove", "/fal-ai/bria/background/remove", {"Authorization": "Key fuzz"}),
    ("fal-run-replace", "/fal-ai/bria/background/replace", {"Authorization": "Key fuzz"}),
    ("fal-queue", "/queue/fal-ai/bria/background/replace", {"Authorization": "Key fuzz"}),
    ("fal-upload-token", "/rest/storage/auth/token", {"Authorization": "Key fuzz"}),
    ("runflow", "/v1/models/bria/background/remove/runs", {"Authorization": "Bearer fuzz"}),
]


@pytest.mark.parametrize(("name", "path", "headers"), ENDPOINTS,
                         ids=[e[0] for e in ENDPOINTS])
def test_random_bodies_never_answer_5xx(emulator: EmulatorServer, name: str, path: str,
                                        headers: dict[str, str]) -> None:
    with httpx.Client(base_url=emulator.url, timeout=60) as client:

        @settings(max_examples=25, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(body=BODIES)
        def check(body: bytes) -> None:
            response = client.post(path, content=body,
                                   headers={**headers, "Content-Type": "application/json"})
            assert response.status_code < 500, (body, response.text)
            payload: Any = response.json()
            assert payload is not None

        check()
