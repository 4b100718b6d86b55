"""TLS: the local CA and server certificate, EmulatorServer over https, ``serve --tls``."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from emulator.testing.server import EmulatorServer, free_port
from emulator.tls import create_tls_files
from tests.conftest import REPO, emulator_settings

VENDOR_HOSTS = ["api.apiframe.ai", "gateway.pixazo.ai", "console.gmicloud.ai", "fal.run",
                "queue.fal.run", "rest.fal.ai", "v3.fal.media", "api.runflow.io"]


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def test_certificate_names_local_addresses_and_vendor_hosts(tmp_path: Path) -> None:
    files = create_tls_files([*VENDOR_HOSTS, "0.0.0.0"], tmp_path)
    leaf = x509.load_pem_x509_certificates(files.cert_chain.read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(san.get_values_for_type(x509.DNSName))
    addresses = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    assert names == {"localhost", *VENDOR_HOSTS}
    assert addresses == {"127.0.0.1", "::1"}
    ca = x509.load_pem_x509_certificate(files.ca_bundle.read_bytes())
    assert leaf.issuer == ca.subject
    assert files.private_key.stat().st_mode & 0o077 == 0
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o077 == 0


def test_a_relative_directory_gives_absolute_paths(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    files = create_tls_files([], ".tls")
    for path in (files.directory, files.ca_bundle, files.cert_chain, files.private_key):
        assert path.is_absolute() and path.exists()
    assert files.ca_bundle == tmp_path.resolve() / ".tls" / "ca.pem"
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", ".tls/ca-key.pem"],
                             check=False)
    assert ignored.returncode == 0  # `serve --tls --tls-dir .tls` never commits a CA key


def test_a_directory_keeps_its_ca(tmp_path: Path) -> None:
    first = create_tls_files(["fal.run"], tmp_path)
    ca, leaf = first.ca_bundle.read_bytes(), first.cert_chain.read_bytes()
    second = create_tls_files(["fal.run"], tmp_path)
    assert second.ca_bundle.read_bytes() == ca
    assert second.cert_chain.read_bytes() != leaf
    fresh = create_tls_files(["fal.run"], tmp_path / "other")
    assert fresh.ca_bundle.read_bytes() != ca


def test_emulator_server_over_https(tmp_path: Path) -> None:
    settings = emulator_settings(tls=True, tls_dir=str(tmp_path))
    with EmulatorServer(settings) as server:
        assert server.url.startswith("https://127.0.0.1:")
        assert server.ca_bundle == tmp_path / "ca.pem"
        with httpx.Client(base_url=server.url, verify=trusting(server.ca_bundle),
                          timeout=60) as client:
            assert client.get("/_emulator/health").json()["status"] == "ok"
            queued = client.post("/queue/fal-ai/bria/background/remove",
                                 headers={"Authorization": "Key k"},
                                 json={"image_url": f"{server.url}/_emulator/samples/coffee.jpg"})
            assert queued.json()["status_url"].startswith(f"{server.url}/queue/")
            run = client.post("/v1/models/bria/background/remove/runs",
                              headers={"Authorization": "Bearer k"},
                              json={"input": {"image_url": f"{server.url}/_emulator/samples/"
                                                           "coffee.jpg", "sync_mode": True}})
            assert run.json()["status_code"] == "succeeded", run.text
        with pytest.raises(httpx.ConnectError), \
                httpx.Client(verify=ssl.create_default_context(), timeout=10) as stranger:
            stranger.get(f"{server.url}/_emulator/health")


def test_cli_serve_tls_prints_the_ca_bundle(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "serve", "--tls", "--tls-dir", str(tmp_path),
         "--port", str(port), "--engine", "grabcut", "--progression", "immediate"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    try:
        assert process.stdout is not None
        banner = []
        for line in process.stdout:
            banner.append(line)
            if "docs:" in line:
                break
        text = "".join(banner)
        assert f"on https://127.0.0.1:{port}" in text, text
        assert f"SSL_CERT_FILE={tmp_path / 'ca.pem'}" in text
        assert f"FAL_RUN_HOST=127.0.0.1:{port} FAL_QUEUE_RUN_HOST=127.0.0.1:{port}/queue" in text
        context = trusting(tmp_path / "ca.pem")
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"https://127.0.0.1:{port}/_emulator/health",
                                   verify=context, timeout=5)
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        assert health.json()["engine"] == "grabcut"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
