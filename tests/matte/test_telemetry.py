"""The neural engine never reaches the network: onnxruntime's telemetry is off in every process.

onnxruntime 1.32 sends telemetry (``CONNECT mobile.events.data.microsoft.com:443``) while a
model runs unless ``ORT_DISABLE_TELEMETRY=1`` is set before it loads. Each test runs in a fresh
subprocess (so onnxruntime loads anew) with the proxy variables pointed at a local logging
proxy and ``ORT_DISABLE_TELEMETRY`` absent or ``0`` in the environment it inherits.
"""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR

REPO = Path(__file__).resolve().parents[2]

#: Runs the u2netp engine for about 3 s; records ORT_DISABLE_TELEMETRY at the moment the
#: ``import onnxruntime`` statement runs (audit hook), before onnxruntime's own code.
ENGINE_SCRIPT = """
import json, os, sys, time
seen = {}
def hook(event, args):
    if event == "import" and args[0] == "onnxruntime" and "env" not in seen:
        seen["env"] = os.environ.get("ORT_DISABLE_TELEMETRY")
sys.addaudithook(hook)
import numpy as np
from emulator.matte.engine import create_engine
engine = create_engine("u2netp", models_dir=sys.argv[1], threads=1)
rgb = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
runs, deadline = 0, time.monotonic() + 3.0
while runs < 5 or time.monotonic() < deadline:
    engine.alpha(rgb)
    runs += 1
    time.sleep(0.2)
print(json.dumps({"env_at_import": seen.get("env"), "runs": runs, "engine": engine.name}))
"""


class _LoggingProxy(socketserver.ThreadingTCPServer):
    """A proxy that forwards nothing: it records the first line of every connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[str] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, _LoggingProxy)
        self.connection.settimeout(2.0)
        try:
            line = self.rfile.readline(4096).decode("latin-1").strip()
        except OSError:
            line = ""
        self.server.seen.append(line or "(connection)")
        self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture()
def proxy() -> Iterator[_LoggingProxy]:
    server = _LoggingProxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _env(proxy: _LoggingProxy, telemetry: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "all_proxy")}
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        env[name] = proxy.url
    env.pop("ORT_DISABLE_TELEMETRY", None)
    if telemetry is not None:
        env["ORT_DISABLE_TELEMETRY"] = telemetry
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


@pytest.mark.parametrize("telemetry", [None, "0"], ids=["unset", "user-set-0"])
def test_u2netp_sends_nothing_and_loads_with_telemetry_off(
        proxy: _LoggingProxy, telemetry: str | None) -> None:
    proc = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT, MODELS_DIR],
                          env=_env(proxy, telemetry), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["engine"] == "u2netp" and result["runs"] >= 5
    # The mechanism: the variable was "1" when onnxruntime loaded (on Linux pip builds the
    # telemetry may never fire at all, so the proxy alone could not tell).
    assert result["env_at_import"] == "1"
    assert proxy.seen == []


@pytest.mark.parametrize("module", ["emulator.cli", "emulator.testing.plugin",
                                    "emulator.matte.onnx"])
def test_every_entry_point_turns_telemetry_off(module: str, proxy: _LoggingProxy) -> None:
    """serve/remove (the CLI), the pytest plugin and the engine module itself."""
    script = f"import os, {module}; print(os.environ.get('ORT_DISABLE_TELEMETRY'))"
    proc = subprocess.run([sys.executable, "-c", script], env=_env(proxy, "0"),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
