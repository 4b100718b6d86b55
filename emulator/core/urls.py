"""The emulator's own URLs: building output file URLs, and reading its own URLs in-process.

A job's outputs are served at ``{origin}/_emulator/files/{vendor}/{name}``; a job whose input
is one of the emulator's own URLs (a sample, an output, a vendor host's file such as fal's CDN)
reads the bytes in-process instead of fetching the emulator over HTTP. Nothing here knows a
vendor or Starlette: vendor hosts are described by :class:`VendorHost` (an adapter's
``HostSpec`` fits it) and their files come from a :class:`HostFiles` (an adapter fits it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

from emulator import samples
from emulator.core.fetchpolicy import FETCH_FAILED, FetchPolicy, embedded_ipv4, parse_ip
from emulator.core.files import FileStore, StoredFile
from emulator.errors import InputImageError

#: Where the emulator serves job outputs (``{FILES_PATH}/{vendor}/{file name}``).
FILES_PATH = "/_emulator/files"
#: Where the emulator serves its sample images.
SAMPLES_PATH = "/_emulator/samples"


class VendorHost(Protocol):
    """One vendor host: its real ``name``, its ``prefix`` on the one port (``""``: the root)
    and the adapter's ``key`` for it (``emulator.vendors.base.HostSpec`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def key(self) -> str: ...


class HostFiles(Protocol):
    """Something with vendor hosts that serves files on them (a vendor adapter fits)."""

    @property
    def hosts(self) -> tuple[VendorHost, ...]: ...

    def local_file(self, host_key: str, path: str) -> bytes | None:
        """The bytes of ``path`` on host ``host_key``, or ``None`` when none are there."""
        ...


def file_urls(origin: str, outputs: Iterable[StoredFile], vendor: str) -> list[str]:
    """Absolute URLs of ``outputs`` (a job's output files) of ``vendor`` under ``origin``
    (``scheme://host[:port]``), in order."""
    return [f"{origin}{FILES_PATH}/{vendor}/{f.name}" for f in outputs]


class OwnUrls:
    """Builds the emulator's file URLs and reads its own URLs in-process.

    Args:
        host, port: where the emulator listens (``Settings.host``, ``Settings.port``); the
            origin of file URLs made where no request is at hand.
        files: the job engine's file store (outputs and uploads).
        fetch_policy: the job engine's fetch policy (its :attr:`FetchPolicy.own` addresses are
            the emulator's loopback names).
        vendors: every vendor's host files (adapters), in a stable order.
    """

    def __init__(self, *, host: str, port: int, files: FileStore, fetch_policy: FetchPolicy,
                 vendors: Iterable[HostFiles]) -> None:
        self.host, self.port = host, port
        self.files = files
        self.fetch_policy = fetch_policy
        self.vendors = list(vendors)
        #: Real host name -> (its vendor, its host), for every vendor host.
        self.vendor_hosts: Mapping[str, tuple[HostFiles, VendorHost]] = {
            spec.name: (vendor, spec) for vendor in self.vendors for spec in vendor.hosts
        }

    def file_urls_at(self, origin: str | None, outputs: Iterable[StoredFile], vendor: str
                     ) -> list[str]:
        """Absolute URLs of ``outputs`` of ``vendor`` under ``origin`` (``scheme://host:port``;
        ``None``: the address the emulator listens on)."""
        return file_urls(origin or f"http://{self.host}:{self.port}", outputs, vendor)

    async def resolve(self, url: str, origin: str | None) -> bytes | None:
        """Bytes of a URL this emulator serves itself (samples, outputs, vendor files), no HTTP.

        A URL is the emulator's own when it is on the same ``host:port`` as the submitting
        request (``origin``); or, when that request used a vendor's real host name (Host
        routing), on another vendor host name at the same port; or on the address the
        emulator listens on (``host``, its loopback names, and ``port``). Vendor hosts' own
        files (fal's CDN and uploads) come from :meth:`HostFiles.local_file`. So a job that
        refers to the emulator's samples or to a URL it handed out also works in-process (ASGI
        transport) and never fetches the emulator over HTTP.

        Returns:
            The bytes, or ``None`` for a URL that is not the emulator's own (it is fetched).

        Raises:
            InputImageError: (``fetch_failed``) one of the emulator's own URLs that is not an
                image it serves: an unknown sample or file, or any other path, such as the
                ``/_emulator`` control plane, whose answers a job must never read.
        """
        parts = urlsplit(url)
        path = parts.path
        host = (parts.hostname or "").lower()
        try:
            port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        except ValueError:
            return None  # not a port: the fetch names the error
        own = urlsplit(origin) if origin is not None else None
        if own is not None and parts.netloc.lower() == own.netloc.lower():
            data = self._own_file(path, (own.hostname or "").lower())
        elif (own is not None and host in self.vendor_hosts
              and (own.hostname or "").lower() in self.vendor_hosts
              and parts.port == own.port):
            data = self._own_file(path, host, vendor_host_only=True)
        elif self._listens_on(host, port):
            data = self._own_file(path, "")
        else:
            return None
        if data is not None:
            return data
        short = url if len(url) <= 200 else url[:197] + "..."
        if path.startswith((SAMPLES_PATH + "/", FILES_PATH + "/")):
            raise InputImageError(
                f"fetching the input image failed: {short}: the emulator has no such "
                "sample or file (unknown, expired, or made before a reset)",
                code=FETCH_FAILED)
        raise InputImageError(
            f"fetching the input image was refused: {short} is the emulator's own URL and "
            "not an image it serves (its samples and files are read in-process; nothing "
            "else of it, such as /_emulator, can be an input)", code=FETCH_FAILED)

    def _listens_on(self, host: str, port: int) -> bool:
        """Whether ``host:port`` reaches this emulator: its own host and port, or a loopback
        name or address of it (:attr:`FetchPolicy.own`)."""
        if port != self.port:
            return False
        if host == self.host.lower():
            return True
        own = self.fetch_policy.own
        ip = parse_ip(host)
        if ip is None:
            return host == "localhost" and any(a.is_loopback for a in own)
        return (embedded_ipv4(ip) or ip) in own

    def _own_file(self, path: str, origin_host: str, *, vendor_host_only: bool = False
                  ) -> bytes | None:
        """The bytes behind one of the emulator's own paths, or ``None`` when it serves no
        image there. ``origin_host`` is the host name the path was reached under (a vendor
        host name selects that vendor's files)."""
        if path.startswith(SAMPLES_PATH + "/") and not vendor_host_only:
            name = path.rsplit("/", 1)[-1]
            return samples.read_bytes(name) if samples.lookup(name) else None
        if path.startswith(FILES_PATH + "/"):
            file_id = path.rsplit("/", 1)[-1].split(".", 1)[0]
            record = self.files.get(file_id)
            return record.data if record is not None else None
        named = self.vendor_hosts.get(origin_host)
        if named is not None:
            vendor, spec = named
            return vendor.local_file(spec.key, path)
        if vendor_host_only:
            return None
        for vendor in self.vendors:
            for spec in vendor.hosts:
                if spec.prefix and (path + "/").startswith(spec.prefix + "/"):
                    return vendor.local_file(spec.key, path[len(spec.prefix):])
        for vendor in self.vendors:
            for spec in vendor.hosts:
                if not spec.prefix:
                    data = vendor.local_file(spec.key, path)
                    if data is not None:
                        return data
        return None


__all__ = ["FILES_PATH", "SAMPLES_PATH", "HostFiles", "OwnUrls", "VendorHost", "file_urls"]
