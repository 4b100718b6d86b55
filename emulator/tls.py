"""TLS for ``serve --tls``: a local certificate authority (trustme) and a server certificate.

Clients that insist on https (fal-client builds ``https://{FAL_RUN_HOST}/``, docs/vendors/fal.md; a
published GMI client refuses http URLs) trust the emulator through the CA bundle written here:
``SSL_CERT_FILE=<dir>/ca.pem`` for Python (httpx, requests via ``REQUESTS_CA_BUNDLE``),
``NODE_EXTRA_CA_CERTS`` for Node. The server certificate names ``127.0.0.1``, ``localhost``,
``::1`` and every vendor host (``fal.run``, ``queue.fal.run``, ...), so both the one-port
prefixes and Host-header routing work over https.

A directory that already holds ``ca.pem`` and ``ca-key.pem`` keeps its CA, so a client's
``SSL_CERT_FILE`` stays valid across restarts; the server certificate is issued anew each time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import trustme

#: Names every server certificate carries, besides the vendor hosts.
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")

CA_ORGANIZATION = "rmbg-emulator local CA"


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for one TLS-serving emulator.

    Attributes:
        directory: where the files are.
        ca_bundle: the CA certificate; point ``SSL_CERT_FILE`` at it.
        cert_chain: the server certificate followed by the CA (uvicorn ``ssl_certfile``).
        private_key: the server certificate's key (uvicorn ``ssl_keyfile``).
    """

    directory: Path
    ca_bundle: Path
    cert_chain: Path
    private_key: Path


def create_tls_files(names: Iterable[str], directory: str | Path | None = None) -> TLSFiles:
    """Write a CA (or reuse the one in ``directory``) and a server certificate for ``names``.

    Args:
        names: host names and IP addresses for the certificate, besides :data:`LOCAL_NAMES`.
            ``0.0.0.0``, ``::`` and empty names are skipped.
        directory: where to write (``serve --tls-dir``; ``.tls/`` is git-ignored); a new
            temporary directory when ``None``.

    Returns:
        The absolute paths of the CA bundle, the certificate chain and the key (keys are mode
        0600), a relative ``directory`` resolved against the working directory.

    Raises:
        OSError: the directory cannot be created or written.
        ValueError: an existing ``ca.pem``/``ca-key.pem`` pair cannot be read.
    """
    # Absolute: the printed SSL_CERT_FILE must work from any directory a client runs in.
    root = (Path(directory) if directory else
            Path(tempfile.mkdtemp(prefix="rmbg-emulator-tls-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = root / "ca.pem", root / "ca-key.pem"
    if ca_path.is_file() and ca_key_path.is_file():
        ca = trustme.CA.from_pem(ca_path.read_bytes(), ca_key_path.read_bytes())
    else:
        ca = trustme.CA(organization_name=CA_ORGANIZATION)
        _write(ca_key_path, ca.private_key_pem.bytes(), secret=True)
        _write(ca_path, ca.cert_pem.bytes())
    identities: list[str] = []
    for name in (*LOCAL_NAMES, *names):
        name = name.strip().lower()
        if name and name not in ("0.0.0.0", "::") and name not in identities:
            identities.append(name)
    leaf = ca.issue_cert(*identities, common_name=identities[0])
    chain_path, key_path = root / "server.pem", root / "server-key.pem"
    _write(chain_path, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    _write(key_path, leaf.private_key_pem.bytes(), secret=True)
    return TLSFiles(directory=root, ca_bundle=ca_path, cert_chain=chain_path,
                    private_key=key_path)


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
