"""Shared fixtures: the emulator on a real port, and an origin server for input images."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.contracts import ContractSet
from emulator.settings import Settings
from emulator.testing import composites
from emulator.testing.server import EmulatorServer, free_port

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]


def _u2netp_dir() -> str:
    """The directory the emulator's own lookup finds u2netp in (the package ships it)."""
    from emulator.matte import models

    found = models.locate("u2netp")
    assert found is not None, f"u2netp not found in {models.search_dirs()}"
    return str(found.parent)


#: Where the emulator finds u2netp's weights: never ``None``, the package carries them.
MODELS_DIR: str = _u2netp_dir()


def png_bytes(rgb: np.ndarray) -> bytes:
    """Lossless PNG of an ``H x W x 3`` array."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def small_photo(size: int = 96) -> np.ndarray:
    """A small real photograph (the cat), ``size`` pixels wide."""
    from emulator.samples import load_rgb

    cat = load_rgb("chelsea")
    h = round(cat.shape[0] * size / cat.shape[1])
    return np.asarray(Image.fromarray(cat).resize((size, h)), dtype=np.uint8)


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header declares ``width x height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(
        b"IEND", b"")


class OriginServer:
    """An HTTP server that plays the client's image host: good images and every bad case."""

    def __init__(self) -> None:
        self.composite = composites.make("grass")
        self.small = small_photo()
        routes = [
            Route("/composite.png", self._const(png_bytes(self.composite.rgb), "image/png")),
            Route("/composite.jpg", self._const(self.composite.jpeg(), "image/jpeg")),
            Route("/small.png", self._const(png_bytes(self.small), "image/png")),
            Route("/missing.png", self._status(404)),
            Route("/error.png", self._status(500)),
            Route("/slow.png", self._slow),
            Route("/text.png", self._const(b"this is not an image at all", "image/png")),
            Route("/big.png", self._const(b"\x89PNG" + b"\0" * (3 * 1024 * 1024), "image/png")),
            Route("/bomb.png", self._const(bomb_png(), "image/png")),
            Route("/truncated.png", self._const(png_bytes(self.small)[:300], "image/png")),
            Route("/photo.bmp", self._const(self._bmp(), "image/bmp")),
        ]
        self.app = Starlette(routes=routes)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                     log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def _bmp(self) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.small).save(buf, format="BMP")
        return buf.getvalue()

    @staticmethod
    def _const(data: bytes, media: str):  # type: ignore[no-untyped-def]
        async def endpoint(request: Request) -> Response:
            return Response(data, media_type=media)
        return endpoint

    @staticmethod
    def _status(code: int):  # type: ignore[no-untyped-def]
        async def endpoint(request: Request) -> Response:
            return Response(b"nope", status_code=code, media_type="text/plain")
        return endpoint

    async def _slow(self, request: Request) -> Response:
        await asyncio.sleep(5)
        return Response(b"late", media_type="image/png")

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def origin() -> Iterator[OriginServer]:
    """The image host."""
    server = OriginServer()
    server.start()
    yield server
    server.stop()


def emulator_settings(**changes: object) -> Settings:
    """Settings for tests: immediate progression, short fetch time-out, small byte limit."""
    base = Settings(
        progression="immediate",
        models_dir=MODELS_DIR,
        fetch_timeout_s=1.0,
        max_input_bytes=2 * 1024 * 1024,
        max_input_pixels=20_000_000,
    )
    return base.replace(**changes)


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    """The emulator on a free port, ``progression=immediate``, u2netp (the package ships its
    weights)."""
    with EmulatorServer(emulator_settings()) as server:
        yield server


CONTRACTS = ContractSet.load()


def check_against_contracts(response: httpx.Response) -> None:
    """httpx response hook: fail when a response breaks its contract (``contracts/*.yaml``).

    The status must be documented for the operation, every non-generic header documented,
    the media type documented, and a JSON body must validate (no undocumented field).

    Raises:
        AssertionError: naming the operation and each problem.
    """
    response.read()
    request = response.request
    problems = CONTRACTS.check_response(request.method, request.url.path,
                                        response.status_code, response.headers,
                                        response.content)
    if problems:
        raise AssertionError(
            f"{request.method} {request.url} -> {response.status_code} breaks the contract:\n  "
            + "\n  ".join(problems) + f"\n  body: {response.text[:500]}")


def checked_client(base_url: str, **kwargs: object) -> httpx.Client:
    """An httpx client whose every response is checked against the contracts."""
    return httpx.Client(base_url=base_url, timeout=60,
                        event_hooks={"response": [check_against_contracts]},
                        **kwargs)  # type: ignore[arg-type]


@pytest.fixture()
def client(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    """An httpx client on the emulator, after a reset; responses are checked against the
    contracts (:func:`check_against_contracts`)."""
    with checked_client(emulator.url) as c:
        c.post("/_emulator/reset").raise_for_status()
        yield c


def decode_png(data: bytes) -> Image.Image:
    """Open PNG bytes (asserting the PNG signature)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def serve_process(port: int, *extra: str, env: dict[str, str] | None = None,
                  start_s: float = 60.0) -> subprocess.Popen[str]:
    """``rmbg-emulator serve --port PORT --engine grabcut EXTRA...`` as a subprocess (this
    checkout's package, output discarded), returned once its health answers.

    Raises:
        AssertionError: it exited, or did not answer within ``start_s`` seconds ("does not
            hang", on a loaded machine).
    """
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "serve", "--port", str(port), "--engine",
         "grabcut", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, env=full_env)
    deadline = time.monotonic() + start_s
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=2)
            return proc
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("serve did not start") from None
            time.sleep(0.1)
