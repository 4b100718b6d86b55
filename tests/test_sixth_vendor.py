"""A sixth vendor is one module plus one contract: nothing else is edited.

The test builds a throwaway vendor at run time, a copy of Pixazo's adapter module under
another slug, host and paths plus a copy of Pixazo's contract under the same names, next to
the shipped contracts in a temporary directory (``RMBG_EMULATOR_CONTRACTS``). It imports the
module as :func:`emulator.vendors.load_all` imports a module of the package (so the class
registers itself), then runs on it the checks the shipped vendors get: routing (hosts,
prefixes, every route on the one port and by its real host name), the status-word table
against the contract, a fault rule naming the new vendor and its operation (accepted, and it
acts; the served control-plane contract's enums name the vendor), the property-based
contract suite (``rmbg-emulator contracts check``, few examples) and an end-to-end
submit, poll and download of an RGBA PNG. The registration is undone afterwards.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from emulator import contracts
from emulator.app import create_app
from emulator.cli import main
from emulator.testing.server import EmulatorServer
from emulator.vendors import load_all
from emulator.vendors.base import VendorAdapter
from tests.conftest import decode_png, emulator_settings
from tests.contracts.test_documents import check_status_words
from tests.vendors.drivers import PIXAZO, Driver
from tests.vendors.test_routing import check_hosts, check_prefixes, check_route, vendor_routes

SLUG = "sixthv"
HOST = "api.sixthv.test"
MODEL = "sixthv-rmbg-1"
STATUS_PATH = "/v9/sixthv/status"
KEY = "sixth-key"
REPO = Path(__file__).resolve().parents[1]

#: Pixazo's names -> the throwaway vendor's, in its module and its contract alike.
RENAMES = (("gateway.pixazo.ai", HOST), ("bria-rmbg-2-0-682", MODEL),
           ("/v2/requests/status", STATUS_PATH), ("PixazoAdapter", "SixthvAdapter"),
           ('slug = "pixazo"', f'slug = "{SLUG}"'), ("x-vendor: pixazo", f"x-vendor: {SLUG}"),
           ('title = "Pixazo"', 'title = "Sixth vendor"'))


def _renamed(text: str) -> str:
    for old, new in RENAMES:
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def sixth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[type[VendorAdapter]]:
    """The throwaway vendor, registered, its contract beside the shipped ones; undone after."""
    shipped = contracts.contracts_dir()
    directory = tmp_path_factory.mktemp("contracts")
    for path in shipped.glob("*.yaml"):
        shutil.copy(path, directory / path.name)
    (directory / f"{SLUG}.yaml").write_text(_renamed(contracts.text("pixazo")),
                                            encoding="utf-8")
    module_file = tmp_path_factory.mktemp("vendors") / f"{SLUG}.py"
    source = (REPO / "emulator" / "vendors" / "pixazo.py").read_text(encoding="utf-8")
    module_file.write_text(_renamed(source), encoding="utf-8")

    patch = pytest.MonkeyPatch()
    patch.setenv(contracts.ENV_DIR, str(directory))
    name = f"emulator_sixth_vendor_{SLUG}"
    spec = importlib.util.spec_from_file_location(name, module_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield load_all()[SLUG]
    finally:
        VendorAdapter.registry.pop(SLUG, None)
        sys.modules.pop(name, None)
        patch.undo()
    assert SLUG not in load_all()


@pytest.fixture(scope="module")
def server(sixth: type[VendorAdapter]) -> Iterator[EmulatorServer]:
    """An emulator with the throwaway vendor among the others (GrabCut engine, few keys)."""
    with EmulatorServer(emulator_settings(engine="grabcut", keys=frozenset({KEY}))) as s:
        yield s


#: The throwaway vendor's driver: Pixazo's, with the new names.
DRIVER: Driver = dataclasses.replace(
    PIXAZO, slug=SLUG, submit_path=_renamed(PIXAZO.submit_path),
    unknown_job_path=_renamed(PIXAZO.unknown_job_path),
    job_requests=tuple((m, _renamed(p)) for m, p in PIXAZO.job_requests))


def test_it_registers_and_is_routed_like_the_others(sixth: type[VendorAdapter]) -> None:
    app = create_app(emulator_settings(engine="grabcut"))
    adapters = app.state.emulator.adapters
    assert SLUG in adapters and set(adapters) == set(load_all())
    check_hosts(app, SLUG)
    check_prefixes(app)
    routes = vendor_routes([adapters[SLUG]])
    assert {r.name for *_, r in routes} == {f"{SLUG}.submit", f"{SLUG}.status"}
    for vendor, host, prefix, method, route in routes:
        check_route(app, vendor, host, prefix, method, route)
    check_status_words(SLUG)
    assert contracts.for_vendor(SLUG) is not None
    assert app.state.emulator.faults.vendors() == sorted(load_all())


def test_a_fault_rule_names_it_and_acts(server: EmulatorServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        client.post("/_emulator/reset").raise_for_status()
        served = yaml.safe_load(client.get("/_emulator/contracts/emulator.yaml").text)
        spec = served["components"]["schemas"]["FaultRuleSpec"]["properties"]
        assert SLUG in spec["vendor"]["enum"] and "submit" in spec["operation"]["enum"]
        rule = client.post("/_emulator/faults", json={
            "vendor": SLUG, "operation": "submit", "status": 503, "times": 1})
        assert rule.status_code in (200, 201), rule.text
        image = f"{server.url}/_emulator/samples/chelsea.jpg"
        refused = DRIVER.submit(client, image, key=KEY)
        assert refused.status_code == 503
        assert set(refused.json()) == {"error", "message"}  # the vendor's own error body
        assert refused.json()["error"] == "Service Unavailable"
        assert DRIVER.submit(client, image, key=KEY).status_code == DRIVER.submit_status
        other = client.post("/_emulator/faults", json={
            "vendor": SLUG, "operation": "refund", "status": 500})
        assert other.status_code == 400 and "refund" in other.text


def test_its_contract_suite_passes(server: EmulatorServer,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("schemathesis")
    httpx.post(f"{server.url}/_emulator/reset").raise_for_status()
    rc = main(["contracts", "check", SLUG, "--base-url", server.url, "--api-key", KEY,
               "--max-examples", "5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"== contracts check {SLUG}: PASSED" in out


def test_end_to_end_gives_an_rgba_png(server: EmulatorServer) -> None:
    checked = contracts.ContractSet.load()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        client.post("/_emulator/reset").raise_for_status()
        submitted = DRIVER.submit(client, f"{server.url}/_emulator/samples/chelsea.jpg",
                                  key=KEY)
        assert submitted.status_code == DRIVER.submit_status, submitted.text
        assert submitted.json()["request_id"].startswith(f"{MODEL}_")
        poll = DRIVER.poll(client, DRIVER.poll_url(client, submitted), key=KEY)
        assert poll.status_code == 200, poll.text
        for response in (submitted, poll):
            request = response.request
            assert checked.check_response(request.method, request.url.path,
                                          response.status_code, response.headers,
                                          response.content) == []
        body = poll.json()
        assert DRIVER.status(body) == DRIVER.status_words["succeeded"]
        (url,) = DRIVER.urls(body)
        assert f"/_emulator/files/{SLUG}/" in url
        download = client.get(url)
        assert download.status_code == 200
        assert decode_png(download.content).mode == "RGBA"
        unknown = client.get(DRIVER.unknown_job_path, headers=DRIVER.headers(KEY))
        assert unknown.status_code == 404 and unknown.json()["error"] == "Not Found"
