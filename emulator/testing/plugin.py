"""pytest plugin: the emulator as one fixture (registered through the ``pytest11`` entry point).

Fixtures:

* ``rmbg_emulator``: a real server on a free port in a background thread, started once per
  session (per distinct marker settings) and reset before each test. See :class:`EmulatorHandle`.
* ``webhook_sink``: a receiver on a free port that records deliveries and can fail the first N.
* ``client_properties``: property-based tests of a client integration on the
  ``rmbg_emulator`` server: ``client_properties.check("pixazo", fn, max_examples=15)``
  (:class:`~emulator.testing.clientcheck.ClientPropertyRunner`; needs ``hypothesis``).

Marker ``@pytest.mark.rmbg_emulator(progression=..., faults=[...], engine=..., tls=...,
latency=..., virtual_clock=..., matte_workers=..., matte_pool=...)`` picks the server's
settings and injects fault rules before the test. Options ``--rmbg-emulator-engine``,
``--rmbg-emulator-tls``, ``--rmbg-emulator-matte-workers`` and ``--rmbg-emulator-matte-pool``
(env ``RMBG_EMULATOR_ENGINE``, ``RMBG_EMULATOR_TLS``, ``RMBG_EMULATOR_MATTE_WORKERS``,
``RMBG_EMULATOR_MATTE_POOL``) set the defaults; the image work runs in threads unless
``matte_pool="processes"``. ``--rmbg-emulator-admin-token``
(ini ``rmbg_emulator_admin_token``, env ``RMBG_EMULATOR_ADMIN_TOKEN``) starts the server with
an admin token; the handle sends it on its control-plane calls. Under pytest-xdist each worker
process starts its own server. Turn the plugin off with ``-p no:rmbg_emulator``.

For clients that take an httpx transport, :class:`InProcessEmulator` runs the ASGI app in the
test's own event loop (``httpx.ASGITransport``), no port at all. Both classes live in
:mod:`emulator.testing.handle` and are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from emulator.testing.handle import EmulatorHandle, InProcessEmulator

if TYPE_CHECKING:
    from emulator.settings import Settings
    from emulator.testing.clientcheck import ClientPropertyRunner
    from emulator.testing.server import EmulatorServer
    from emulator.testing.sink import WebhookSink

__all__ = ["MARKER", "SETTING_KEYS", "EmulatorHandle", "InProcessEmulator", "client_properties",
           "pytest_addoption", "pytest_configure", "rmbg_emulator", "webhook_sink"]

MARKER = "rmbg_emulator"
SETTING_KEYS = ("progression", "engine", "tls", "latency", "virtual_clock", "engine_preset",
                "matte_workers", "matte_pool", "strict")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--rmbg-emulator-engine``, ``-tls``, ``-admin-token``, ``-matte-workers``,
    ``-matte-pool``."""
    group = parser.getgroup("rmbg_emulator", "rmbg-emulator fixtures")
    group.addoption("--rmbg-emulator-engine", default=os.environ.get("RMBG_EMULATOR_ENGINE"),
                    help="matte engine of the rmbg_emulator fixture (auto, u2netp, grabcut, "
                         "PATH.onnx)")
    group.addoption("--rmbg-emulator-tls", action="store_true",
                    default=os.environ.get("RMBG_EMULATOR_TLS", "").lower()
                    in ("1", "true", "yes"),
                    help="serve the rmbg_emulator fixture over https (local CA)")
    group.addoption("--rmbg-emulator-admin-token", default=None, metavar="TOKEN",
                    help="start the rmbg_emulator fixture with this admin token (the "
                         "control plane then requires it; the fixture's handle sends it); "
                         "default: ini rmbg_emulator_admin_token, env "
                         "RMBG_EMULATOR_ADMIN_TOKEN")
    group.addoption("--rmbg-emulator-matte-workers", type=int,
                    default=int(os.environ.get("RMBG_EMULATOR_MATTE_WORKERS") or 0) or None,
                    metavar="N", help="image workers of the rmbg_emulator fixture (default 2)")
    group.addoption("--rmbg-emulator-matte-pool", choices=["threads", "processes"],
                    default=os.environ.get("RMBG_EMULATOR_MATTE_POOL") or "threads",
                    help="where the fixture's image work runs (default threads: a test "
                         "session starts servers often, a worker process costs about 1 s to "
                         "start; processes is the serve default)")
    parser.addini("rmbg_emulator_admin_token", default=None,
                  help="admin token of the rmbg_emulator fixture's server")


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker."""
    config.addinivalue_line(
        "markers",
        "rmbg_emulator(progression=None, faults=None, engine=None, tls=None, latency=None, "
        "virtual_clock=None): settings and fault rules for the rmbg_emulator fixture",
    )


def _settings_for(config: pytest.Config, overrides: dict[str, Any]) -> Settings:
    from emulator.settings import Settings

    values: dict[str, Any] = {"progression": "immediate",
                              "matte_pool": config.getoption("--rmbg-emulator-matte-pool")}
    matte_workers = config.getoption("--rmbg-emulator-matte-workers")
    if matte_workers:
        values["matte_workers"] = matte_workers
    engine = config.getoption("--rmbg-emulator-engine")
    if engine:
        values["engine"] = engine
    if config.getoption("--rmbg-emulator-tls"):
        values["tls"] = True
    token = config.getoption("--rmbg-emulator-admin-token") or config.getini(
        "rmbg_emulator_admin_token")
    if token:
        values["admin_token"] = str(token)
    values.update({k: v for k, v in overrides.items() if k in SETTING_KEYS and v is not None})
    return Settings.from_env(**values)


@pytest.fixture(scope="session")
def _rmbg_emulator_servers() -> Iterator[dict[Settings, EmulatorServer]]:
    servers: dict[Settings, EmulatorServer] = {}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture()
def rmbg_emulator(request: pytest.FixtureRequest,
                  _rmbg_emulator_servers: dict[Settings, EmulatorServer]
                  ) -> Iterator[EmulatorHandle]:
    """The emulator, reset, with the marker's fault rules injected."""
    from emulator.testing.server import EmulatorServer

    marker = request.node.get_closest_marker(MARKER)
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    settings = _settings_for(request.config, kwargs)
    server = _rmbg_emulator_servers.get(settings)
    if server is None:
        server = EmulatorServer(settings).start()
        _rmbg_emulator_servers[settings] = server
    handle = EmulatorHandle(server)
    handle.reset()
    for rule in kwargs.get("faults") or []:
        handle.inject(**rule)
    yield handle
    handle.close()


@pytest.fixture()
def webhook_sink() -> Iterator[WebhookSink]:
    """A webhook receiver on a free port; ``webhook_sink.fail_first = N`` fails the next N."""
    from emulator.testing.sink import WebhookSink

    with WebhookSink() as sink:
        yield sink


@pytest.fixture()
def client_properties(rmbg_emulator: EmulatorHandle, tmp_path: Path) -> ClientPropertyRunner:
    """Property-based checks of a client on the ``rmbg_emulator`` server (the marker picks
    its settings): ``client_properties.check(vendor, fn, max_examples=...)`` where
    ``fn(base_url, api_key, image_url, output_path) -> bool``. Needs ``hypothesis``."""
    from emulator.testing.clientcheck import ClientPropertyRunner

    return ClientPropertyRunner(rmbg_emulator, tmp_path)
