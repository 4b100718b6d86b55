"""The pytest plugin, run in an inner pytest session (pytester)."""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points

import pytest

from emulator.testing.plugin import InProcessEmulator
from tests.conftest import emulator_settings


def _plugin_args() -> list[str]:
    """``-p emulator.testing.plugin``, unless the installed package's ``pytest11`` entry point
    loads the plugin already (then ``-p`` would register the module a second time)."""
    if any(ep.name == "rmbg_emulator" for ep in entry_points(group="pytest11")):
        return []
    return ["-p", "emulator.testing.plugin"]


PLUGIN = _plugin_args()

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
    (delivery,) = rmbg_emulator.wait_for_webhooks(1)
    assert delivery["state"] == "delivered"

@pytest.mark.rmbg_emulator(virtual_clock=True, progression="time", latency="vendor")
def test_virtual_clock(rmbg_emulator):
    with rmbg_emulator.client() as c:
        url = submit(c).json()["polling_url"]
        assert c.get(url, headers=H).json()["status"] == "QUEUED"
        rmbg_emulator.advance(1)
        assert c.get(url, headers=H).json()["status"] == "PROCESSING"

def test_inject_journal_verify(rmbg_emulator):
    rule = rmbg_emulator.inject(vendor="pixazo", operation="submit", status=429, retry_after=2,
                                times=1)
    assert (rule["status"], rule["remaining"], rule["source"]) == (429, 1, "admin")
    with rmbg_emulator.client() as c:
        first, second = submit(c), submit(c)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "2")
    assert second.status_code == 202
    entries = rmbg_emulator.journal(vendor="pixazo", operation="submit")
    assert [(e["status"], e["retry_after"], e["early_retry"]) for e in entries] == [
        (429, 2.0, False), (202, None, True)]
    assert [e["seq"] for e in rmbg_emulator.journal(fault=rule["id"])] == [1]
    assert [e["status"] for e in rmbg_emulator.journal(early_retry=True)] == [202]
    assert rmbg_emulator.verify(status=429, count=1)["pass"] is True
    assert rmbg_emulator.verify(vendor="pixazo", min=2)["count"] == 2
    with pytest.raises(AssertionError, match="0 matching, expected exactly 1.*near misses"):
        rmbg_emulator.verify(vendor="pixazo", status=500, count=1)
    with pytest.raises(AssertionError, match="400"):
        rmbg_emulator.verify(colour="red")
    with pytest.raises(AssertionError, match="unknown rule attribute"):
        rmbg_emulator.inject(vendor="pixazo", colour="red")

@pytest.mark.rmbg_emulator(faults=[{"vendor": "pixazo", "status": 503, "times": 1}])
def test_marker_faults(rmbg_emulator):
    with rmbg_emulator.client() as c:
        assert [submit(c).status_code for _ in range(2)] == [503, 202]
    rmbg_emulator.verify(fault="status=503", count=1)

def test_scenario_file_and_mapping(rmbg_emulator, tmp_path):
    path = tmp_path / "flaky.yaml"
    path.write_text("name: flaky\\nkeys:\\n  poor: {balance_usd: 0}\\n"
                    "faults:\\n  - {operation: submit, status: 429, times: 1}\\n")
    loaded = rmbg_emulator.scenario(path)
    assert (loaded["name"], loaded["keys"]) == ("flaky", ["poor"])
    assert [r["status"] for r in loaded["rules"]] == [429]
    again = rmbg_emulator.scenario({"name": "down", "faults": [{"vendor": "apiframe",
                                                                  "status": 500}]})
    assert [(r["vendor"], r["source"]) for r in again["rules"]] == [
        ("apiframe", "scenario:down")]
    with rmbg_emulator.client() as c:
        assert submit(c).status_code == 429
        assert submit(c).status_code == 202
        assert submit(c, **{"Ocp-Apim-Subscription-Key": "poor"}).status_code == 402
    with pytest.raises(AssertionError, match="400"):
        rmbg_emulator.scenario({"faults": [{"status": "lots"}]})

def test_resend_webhook(rmbg_emulator, webhook_sink):
    with rmbg_emulator.client() as c:
        submit(c, **{"X-Webhook-URL": webhook_sink.url + "/cb"})
    webhook_sink.wait_for(1)
    (first,) = rmbg_emulator.webhooks()
    again = rmbg_emulator.resend_webhook(first["id"])
    assert again["resend_of"] == first["id"]
    got = webhook_sink.wait_for(2)
    assert got[0].body == got[1].body

@pytest.mark.rmbg_emulator(tls=True)
def test_tls(rmbg_emulator):
    assert rmbg_emulator.url.startswith("https://")
    assert rmbg_emulator.ca_file and open(rmbg_emulator.ca_file).read().startswith("-----BEGIN")
    with rmbg_emulator.client() as c:
        assert submit(c).status_code == 202
    rmbg_emulator.verify(vendor="pixazo", count=1)   # the control plane works over https too
'''


def test_plugin_fixtures_in_an_inner_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest(*PLUGIN, "-q", "--rmbg-emulator-engine", "grabcut")
    result.assert_outcomes(passed=12)


def test_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_off="def test_x(rmbg_emulator):\n    pass\n")
    result = pytester.runpytest("-q", "-p", "no:rmbg_emulator")
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


ENTRY_POINT_INNER = """
def test_registered_once_by_its_entry_point_name(pytestconfig):
    from emulator.testing import plugin
    manager = pytestconfig.pluginmanager
    assert manager.get_plugin("rmbg_emulator") is plugin
    assert manager.get_name(plugin) == "rmbg_emulator"
"""

#: What examples/conftest.py does (load the plugin unless loaded or blocked).
CONFTEST = """
def pytest_addoption(parser, pluginmanager):
    from emulator.testing import plugin
    if not pluginmanager.is_registered(plugin) and not pluginmanager.is_blocked("rmbg_emulator"):
        pluginmanager.register(plugin, "rmbg_emulator")
"""


def _fake_install(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution on ``sys.path`` whose only content is the ``pytest11`` entry point that
    ``pyproject.toml`` declares, as ``pip install`` would leave it."""
    info = pytester.path / "site" / "rmbg_emulator_entry-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rmbg-emulator-entry\n"
                                   "Version: 0\n")
    (info / "entry_points.txt").write_text(
        "[pytest11]\nrmbg_emulator = emulator.testing.plugin\n")
    monkeypatch.syspath_prepend(info.parent)


def test_entry_point_install(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
                             ) -> None:
    """Installed: active without ``-p``, off with ``-p no:rmbg_emulator``, and a conftest that
    loads it for source checkouts (examples/conftest.py) does not load it twice."""
    _fake_install(pytester, monkeypatch)
    pytester.makepyfile(test_entry=ENTRY_POINT_INNER)
    pytester.makeconftest(CONFTEST)
    args = ["-p", "no:cacheprovider", "-q"]
    on = pytester.runpytest(*args, "--rmbg-emulator-engine", "grabcut")
    on.assert_outcomes(passed=1)
    off = pytester.runpytest(*args, "-p", "no:rmbg_emulator")
    off.assert_outcomes(failed=1)
    # the reason the source-checkout conftest exists: -p with the module name clashes
    twice = pytester.runpytest(*args, "-p", "emulator.testing.plugin")
    assert twice.ret != 0
    twice.stderr.fnmatch_lines(["*Plugin already registered under a different name*"])


def test_source_checkout_conftest(pytester: pytest.Pytester) -> None:
    """Not installed: the conftest loads the plugin; with ``-p emulator.testing.plugin`` it
    does not load it again."""
    pytester.makepyfile(test_fixture="def test_fixture(webhook_sink):\n"
                                     "    assert webhook_sink.url\n")
    pytester.makeconftest(CONFTEST)
    pytester.runpytest("-q").assert_outcomes(passed=1)
    pytester.runpytest("-q", *PLUGIN).assert_outcomes(passed=1)



def test_handle_module_and_plugin_reexports() -> None:
    """The handle classes live in ``emulator.testing.handle``; the plugin re-exports the same
    objects (its API is unchanged) and keeps only options, hooks and fixtures."""
    from emulator.testing import handle, plugin

    assert plugin.EmulatorHandle is handle.EmulatorHandle
    assert plugin.InProcessEmulator is handle.InProcessEmulator
    assert handle.EmulatorHandle.__module__ == "emulator.testing.handle"
    assert {"EmulatorHandle", "InProcessEmulator", "rmbg_emulator",
            "webhook_sink"} <= set(plugin.__all__)
