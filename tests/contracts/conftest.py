"""Fixtures for the contract tests: an emulator with the GrabCut engine (tiny inputs cost
milliseconds, so property-based runs stay fast) and only ``KEY`` accepted."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from emulator.testing.server import EmulatorServer
from tests.conftest import checked_client, emulator_settings

KEY = "contract-key"
OTHER_KEY = "other-key"


@pytest.fixture(scope="session")
def fast_emulator() -> Iterator[EmulatorServer]:
    """GrabCut engine, immediate progression, keys ``KEY`` and ``OTHER_KEY`` only."""
    with EmulatorServer(emulator_settings(engine="grabcut",
                                          keys=frozenset({KEY, OTHER_KEY}))) as server:
        yield server


@pytest.fixture()
def fast_client(fast_emulator: EmulatorServer) -> Iterator[httpx.Client]:
    """A contract-checked client on :func:`fast_emulator`, after a reset."""
    with checked_client(fast_emulator.url) as c:
        c.post("/_emulator/reset").raise_for_status()
        yield c
