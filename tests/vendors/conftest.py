"""Fixtures shared by the tests that drive real vendor SDKs against a served emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.testing.server import EmulatorServer
from tests.conftest import emulator_settings


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    """A served emulator (GrabCut, ``polls:2``) for one test module; a module may define its
    own ``server`` instead."""
    with EmulatorServer(emulator_settings(engine="grabcut", progression="polls:2")) as running:
        yield running


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """The same over https, with a certificate from a local CA (``--tls``)."""
    settings = emulator_settings(engine="grabcut", progression="polls:2", tls=True,
                                 tls_dir=str(tmp_path_factory.mktemp("tls")))
    with EmulatorServer(settings) as running:
        yield running
