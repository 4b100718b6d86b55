"""The pytest plugin, run in an inner pytest session (pytester)."""

from __future__ import annotations

import asyncio

import pytest

from emulator.testing.plugin import InProcessEmulator
from tests.conftest import emulator_settings

PLUGIN = ["-p", "emulator.testing.plugin"]

INNER = '''
import base64, io
import httpx, pytest
from PIL import Image

def data_uri():
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 40, 40)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

PIXAZO = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"
H = {"Ocp-Apim-Subscription-Key": "k"}

def submit(client, **headers):
    return client.post(PIXAZO, json={"image_url": data_uri()}, headers={**H, **headers})

def test_happy_path(rmbg_emulator):
    with rmbg_emulator.client() as c:
        r = submit(c)
        assert r.status_code == 202
        body = c.get(r.json()["polling_url"], headers=H).json()
        assert body["status"] == "COMPLETED"
        assert c.get(body["output"]["media_url"][0]).content[:4] == b"\\x89PNG"
    assert len(rmbg_emulator.jobs(vendor="pixazo")) == 1

def test_reset_between_tests(rmbg_emulator):
    assert rmbg_emulator.jobs() == []

@pytest.mark.rmbg_emulator(progression="polls:2")
def test_marker_settings(rmbg_emulator):
    with rmbg_emulator.client() as c:
        url = submit(c).json()["polling_url"]
        seen = [c.get(url, headers=H).json()["status"] for _ in range(3)]
    assert seen == ["QUEUED", "PROCESSING", "COMPLETED"]

def test_balance(rmbg_emulator):
    rmbg_emulator.set_balance("k", 0)
    with rmbg_emulator.client() as c:
        assert submit(c).status_code == 402

def test_url_for(rmbg_emulator):
    assert rmbg_emulator.url_for("pixazo") == rmbg_emulator.url
    with pytest.raises(KeyError):
        rmbg_emulator.url_for("pixazo", "nope")

def test_webhook_sink(rmbg_emulator, webhook_sink):
    with rmbg_emulator.client() as c:
        submit(c, **{"X-Webhook-URL": webhook_sink.url + "/cb"})
    got = webhook_sink.wait_for(1)
    assert got[0].path == "/cb" and got[0].json()["status"] == "COMPLETED"
    assert rmbg_emulator.webhooks()[0]["state"] == "delivered"

@pytest.mark.rmbg_emulator(virtual_clock=True, progression="time", latency="vendor")
def test_virtual_clock(rmbg_emulator):
    with rmbg_emulator.client() as c:
        url = submit(c).json()["polling_url"]
        assert c.get(url, headers=H).json()["status"] == "QUEUED"
        rmbg_emulator.advance(1)
        assert c.get(url, headers=H).json()["status"] == "PROCESSING"
'''


def test_plugin_fixtures_in_an_inner_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest(*PLUGIN, "-q", "--rmbg-emulator-engine", "grabcut")
    result.assert_outcomes(passed=7)


def test_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_off="def test_x(rmbg_emulator):\n    pass\n")
    result = pytester.runpytest("-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'rmbg_emulator' not found*"])


def test_in_process_mode() -> None:
    async def scenario() -> tuple[int, str]:
        async with InProcessEmulator(emulator_settings(engine="grabcut")) as emu:
            sample = f"{emu.base_url}/_emulator/samples/chelsea.jpg"
            submitted = await emu.client.post(
                "/v2/images/background-remove",
                json={"model": "bria-bg-remove", "briaBgRemoveParams": {"image": sample}},
                headers={"X-API-Key": "k"})
            job = await emu.client.get(f"/v2/jobs/{submitted.json()['jobId']}",
                                       headers={"X-API-Key": "k"})
            return submitted.status_code, job.json()["status"]

    assert asyncio.run(scenario()) == (202, "COMPLETED")
