"""pytest set-up of the worked example: the plugin, a small test image, a virtual clock.

In your own project the ``rmbg_emulator`` plugin is active as soon as rmbg-emulator is
installed (its ``pytest11`` entry point); the hook below only loads it for a source checkout
that is not installed, and never twice (``-p emulator.testing.plugin`` or the entry point
already loaded it) nor against ``-p no:rmbg_emulator``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image, ImageDraw

from bgremove import (
    BackgroundRemover,
    Backoff,
    PollPolicy,
    RetryPolicy,
    VirtualClock,
    WebhookReceiver,
    create_remover,
    data_uri,
)
from emulator.testing.plugin import EmulatorHandle


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager
                     ) -> None:
    """Register the rmbg_emulator plugin when nothing else did (see the module docstring)."""
    from emulator.testing import plugin

    if not pluginmanager.is_registered(plugin) and not pluginmanager.is_blocked(
            "rmbg_emulator"):
        pluginmanager.register(plugin, "rmbg_emulator")


@pytest.fixture()
def api_key() -> str:
    """The API key the tests use (the emulator accepts any non-empty key)."""
    return "example-key"


@pytest.fixture(scope="session")
def image_png() -> bytes:
    """A 64 x 48 PNG, a disc on a plain background: small, so the matte takes milliseconds."""
    picture = Image.new("RGB", (64, 48), (40, 110, 190))
    ImageDraw.Draw(picture).ellipse((18, 10, 46, 38), fill=(235, 190, 40))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def image_uri(image_png: bytes) -> str:
    """:func:`image_png` as a ``data:`` URI (the emulator fetches nothing)."""
    return data_uri(image_png)


@pytest.fixture(scope="session")
def image_size() -> tuple[int, int]:
    """``(width, height)`` of :func:`image_png`."""
    return (64, 48)


@pytest.fixture()
def clock(rmbg_emulator: EmulatorHandle) -> VirtualClock:
    """The clients' clock: a sleep moves the emulator's virtual clock and returns at once."""
    return VirtualClock(rmbg_emulator.advance)


def base_url(emulator: EmulatorHandle, vendor: str) -> str:
    """Where the client for ``vendor`` points: its API host on the emulator (fal's queue)."""
    return emulator.url_for(vendor, "queue" if vendor == "fal" else None)


@pytest.fixture()
def make_remover(rmbg_emulator: EmulatorHandle, clock: VirtualClock, api_key: str
                 ) -> Iterator[Callable[..., BackgroundRemover]]:
    """``make_remover(vendor, **kwargs)``: a client for ``vendor`` pointed at the emulator,
    waiting on the virtual clock; closed after the test."""
    made: list[BackgroundRemover] = []

    def make(vendor: str, **kwargs: Any) -> BackgroundRemover:
        kwargs.setdefault("retry", RetryPolicy(attempts=4, backoff=Backoff(initial_s=0.5)))
        kwargs.setdefault("poll", PollPolicy(backoff=Backoff(initial_s=1.0, max_s=8.0),
                                             timeout_s=60.0))
        kwargs.setdefault("verify", rmbg_emulator.ca_file or True)
        remover = create_remover(vendor, kwargs.pop("api_key", api_key),
                                 base_url=base_url(rmbg_emulator, vendor), clock=clock,
                                 **kwargs)
        made.append(remover)
        return remover

    yield make
    for remover in made:
        remover.close()


@pytest.fixture()
def receiver(rmbg_emulator: EmulatorHandle) -> WebhookReceiver:
    """A webhook receiver trusting the emulator's fal keys."""
    return WebhookReceiver(
        fal_jwks_url=rmbg_emulator.url_for("fal", "rest") + "/.well-known/jwks.json",
        verify=rmbg_emulator.ca_file or True)
