"""``--admin-token``: the control plane needs ``Authorization: Bearer TOKEN`` (result files and
samples stay open); ``serve --host`` off loopback warns; the plugin and the CLI pass it on."""

from __future__ import annotations

import asyncio
import gc
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.cli import is_loopback, main
from emulator.settings import Settings
from emulator.testing import contract_check
from emulator.testing.plugin import InProcessEmulator
from emulator.testing.server import EmulatorServer, free_port
from tests.test_plugin import PLUGIN

TOKEN = "s3cret-admin"
PIXAZO = "/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request"  # docs/vendors/pixazo.md
KEY = {"Ocp-Apim-Subscription-Key": "k"}


def _data_uri() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 40, 40)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _in_process(token: str | None, scenario: Any) -> Any:
    async def run() -> Any:
        settings = Settings(progression="immediate", engine="grabcut", admin_token=token)
        async with InProcessEmulator(settings) as emu:
            return await scenario(emu.client)

    return asyncio.run(run())


def test_control_plane_needs_the_token() -> None:
    async def scenario(c: httpx.AsyncClient) -> None:
        for method, path in [("GET", "/_emulator/health"), ("POST", "/_emulator/reset"),
                             ("GET", "/_emulator/jobs"), ("POST", "/_emulator/faults"),
                             ("PUT", "/_emulator/keys/k"), ("GET", "/_emulator/journal"),
                             ("GET", "/_emulator/no-such-thing")]:
            r = await c.request(method, path)
            assert r.status_code == 401, (method, path)
            assert "Bearer" in r.json()["detail"]
            assert r.headers["www-authenticate"].startswith("Bearer")
        wrong = await c.get("/_emulator/health", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers[
            "www-authenticate"]
        basic = await c.get("/_emulator/health", headers={"Authorization": f"Basic {TOKEN}"})
        assert basic.status_code == 401
        for scheme in ("Bearer", "bearer"):
            ok = await c.get("/_emulator/health",
                             headers={"Authorization": f"{scheme} {TOKEN}"})
            assert ok.status_code == 200 and ok.json()["status"] == "ok"

    _in_process(TOKEN, scenario)


def test_files_samples_and_vendors_stay_open() -> None:
    async def scenario(c: httpx.AsyncClient) -> None:
        assert (await c.get("/_emulator/samples")).status_code == 200
        sample = await c.get("/_emulator/samples/chelsea.jpg")
        assert sample.status_code == 200 and sample.content[:2] == b"\xff\xd8"
        submitted = await c.post(PIXAZO, headers=KEY, json={"image_url": _data_uri()})
        assert submitted.status_code == 202, submitted.text
        status = (await c.get(submitted.json()["polling_url"], headers=KEY)).json()
        assert status["status"] == "COMPLETED", status
        url = status["output"]["media_url"][0]
        assert "/_emulator/files/" in url
        result = await c.get(url)
        assert result.status_code == 200 and result.content[:4] == b"\x89PNG"

    _in_process(TOKEN, scenario)


def test_without_a_token_the_control_plane_is_open() -> None:
    async def scenario(c: httpx.AsyncClient) -> int:
        return (await c.get("/_emulator/jobs")).status_code

    assert _in_process(None, scenario) == 200


def test_admin_token_setting() -> None:
    assert Settings().admin_token is None
    assert Settings.from_env({"RMBG_EMULATOR_ADMIN_TOKEN": TOKEN}).admin_token == TOKEN
    assert Settings.from_env({"RMBG_EMULATOR_ADMIN_TOKEN": ""}).admin_token is None
    for bad in (" ", "tab\tbed", "caf\u00e9"):
        with pytest.raises(ValueError):
            Settings(admin_token=bad)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),
    ("192.168.1.5", False), ("example.com", False), ("", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def _serve_without_serving(monkeypatch: pytest.MonkeyPatch, *args: str) -> Settings:
    from emulator import cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "run_server", lambda app, **kw: seen.update(app=app))
    monkeypatch.delenv("RMBG_EMULATOR_ADMIN_TOKEN", raising=False)
    before = gc.get_threshold()
    try:
        assert main(["serve", "--engine", "grabcut", "--port", str(free_port()), *args]) == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    settings: Settings = seen["app"].state.emulator.settings
    return settings


def test_serve_warns_when_the_control_plane_is_open_to_the_network(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _serve_without_serving(monkeypatch, "--host", "0.0.0.0")
    err = capsys.readouterr().err
    assert "control plane" in err and "open to the network" in err and "--admin-token" in err
    _serve_without_serving(monkeypatch, "--host", "127.0.0.1")
    assert "open to the network" not in capsys.readouterr().err
    settings = _serve_without_serving(monkeypatch, "--host", "0.0.0.0", "--admin-token", TOKEN)
    captured = capsys.readouterr()
    assert settings.admin_token == TOKEN
    assert "open to the network" not in captured.err and TOKEN not in captured.out


def test_serve_reads_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from emulator import cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "run_server", lambda app, **kw: seen.update(app=app))
    monkeypatch.setenv("RMBG_EMULATOR_ADMIN_TOKEN", TOKEN)
    before = gc.get_threshold()
    try:
        assert main(["serve", "--engine", "grabcut", "--port", str(free_port())]) == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert seen["app"].state.emulator.settings.admin_token == TOKEN


INNER = '''
import httpx

def test_handle_sends_the_token(rmbg_emulator):
    assert rmbg_emulator.admin_token == "plugin-token"
    assert rmbg_emulator.jobs() == []          # the fixture's reset passed too
    rule = rmbg_emulator.inject(status=503, vendor="pixazo")
    assert rule["id"]
    bare = httpx.get(rmbg_emulator.url + "/_emulator/jobs")
    assert bare.status_code == 401
    ok = httpx.get(rmbg_emulator.url + "/_emulator/jobs", headers=rmbg_emulator.admin_headers)
    assert ok.status_code == 200
'''


@pytest.mark.parametrize("how", ["option", "ini", "env"])
def test_plugin_passes_the_token(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                 how: str) -> None:
    pytester.makepyfile(test_inner=INNER)
    args = [*PLUGIN, "-q", "--rmbg-emulator-engine", "grabcut"]
    monkeypatch.delenv("RMBG_EMULATOR_ADMIN_TOKEN", raising=False)
    if how == "option":
        args += ["--rmbg-emulator-admin-token", "plugin-token"]
    elif how == "ini":
        pytester.makeini("[pytest]\nrmbg_emulator_admin_token = plugin-token\n")
    else:
        monkeypatch.setenv("RMBG_EMULATOR_ADMIN_TOKEN", "plugin-token")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)


def test_contracts_check_passes_the_token(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from schemathesis.config import SchemathesisConfig

    seen: dict[str, Any] = {}

    def fake_run(cmd: list[str], *, cwd: str, env: dict[str, str], **kw: Any
                 ) -> subprocess.CompletedProcess[str]:
        seen["config"] = (Path(cwd) / "schemathesis.toml").read_text(encoding="utf-8")
        seen["env"] = env
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 0, stdout="ok\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.delenv("RMBG_EMULATOR_ADMIN_TOKEN", raising=False)
    with EmulatorServer(Settings(engine="grabcut", admin_token=TOKEN)) as server:
        assert contract_check.probe(server.url) is None
        health = contract_check.probe(server.url, TOKEN)
        assert health is not None and health["status"] == "ok"
        assert main(["contracts", "check", "emulator", "--base-url", server.url,
                     "--admin-token", TOKEN]) == 0
        assert "rmbg-emulator" in capsys.readouterr().out  # the probe found the emulator
    assert TOKEN not in seen["config"] and TOKEN not in " ".join(seen["cmd"])
    assert seen["env"][contract_check.ADMIN_TOKEN_ENV] == TOKEN
    monkeypatch.setenv(contract_check.ADMIN_TOKEN_ENV, TOKEN)
    headers = SchemathesisConfig.from_str(seen["config"]).projects.get_default().headers
    assert headers == {"Authorization": f"Bearer {TOKEN}"}
