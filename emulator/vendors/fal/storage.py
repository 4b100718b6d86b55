"""fal.ai storage: the storage token (``rest.fal.ai``), CDN uploads and files
(``v3.fal.media``), and reading CDN URLs in-process (:meth:`FalStorage.local_file`).
Facts from ``docs/vendors/fal.md`` (Other fal docs and fal-client: file upload)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import mimetypes
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from emulator.core.files import StoredFile
from emulator.errors import (
    InvalidInput,
    NotFound,
    Unauthorized,
)
from emulator.vendors.base import KeyHeader, VendorAdapter, VendorPort

#: Seconds a storage token lives (the SDK refreshes it once ``expires_at`` has passed).
TOKEN_TTL_S = 3600.0
#: Path segments of CDN URLs, as fal's (``/files/tiger/...``, ``/files/panda/...``).
CDN_BUCKETS = ("panda", "tiger", "lion", "penguin", "koala", "zebra", "rabbit", "monkey")

_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
_CDN_FILE = re.compile(r"/files/[^/]+/(?P<name>[^/]+)")
_NO_TOKEN = ("Missing CDN token: send 'Authorization: Bearer <token>' from "
             "POST rest.fal.ai/storage/auth/token")
#: Where a CDN upload's token is (``fal_client.upload_file`` sends ``Bearer <token>``); one
#: message for a missing header, another scheme and nothing after ``Bearer``.
_CDN_TOKEN = KeyHeader("authorization", scheme="Bearer", missing=_NO_TOKEN,
                       wrong_scheme=_NO_TOKEN, empty=_NO_TOKEN)


class FalStorage(VendorAdapter):
    """fal's storage token, CDN upload and CDN files (no ``slug``: :class:`FalAdapter`
    registers)."""

    def __init__(self, port: VendorPort) -> None:
        super().__init__(port)
        self._token_secret = secrets.token_bytes(32)

    def saved_state(self) -> tuple[Callable[[], Any], Callable[[Any], None]]:
        """The CDN token secret, so that storage tokens issued before a restart still
        work after it (``{"token_secret": hex}``)."""
        def load(value: Any) -> None:
            self._token_secret = bytes.fromhex(value["token_secret"])

        return (lambda: {"token_secret": self._token_secret.hex()}), load

    @staticmethod
    def cdn_path(record: StoredFile) -> str:
        """``/files/<bucket>/<name>`` on the CDN host."""
        bucket = CDN_BUCKETS[int(hashlib.sha1(record.id.encode()).hexdigest(), 16)
                             % len(CDN_BUCKETS)]
        return f"/files/{bucket}/{record.name}"

    def _cdn_record(self, path: str) -> StoredFile | None:
        match = _CDN_FILE.fullmatch(path)
        if match is None:
            return None
        record = self.port.jobs.files.get(match.group("name").split(".", 1)[0])
        if record is None or record.expired(self.port.clock.now()):
            return None
        return record

    def local_file(self, host_key: str, path: str) -> bytes | None:
        """Bytes of a CDN URL (outputs and uploads), for jobs that use them as input."""
        if host_key != "cdn":
            return None
        record = self._cdn_record(path)
        return record.data if record is not None else None

    # -- storage: rest.fal.ai and v3.fal.media --------------------------------------------------
    async def storage_token(self, request: Request) -> Response:
        """``POST /storage/auth/token?storage_type=fal-cdn-v3`` (docs/vendors/fal.md, file
        upload)."""
        key = self.api_key(request)
        storage_type = request.query_params.get("storage_type", "fal-cdn-v3")
        if storage_type != "fal-cdn-v3":
            raise InvalidInput(f"storage_type {storage_type!r} is not supported; use "
                               "fal-cdn-v3", field="storage_type")
        expires = self.port.clock.now() + TOKEN_TTL_S
        return self.json({
            "token": self._sign(key, expires),
            "token_type": "Bearer",
            "base_url": self.public_url(request, "", host_key="cdn"),
            "expires_at": _iso_seconds(expires),
        })

    def _sign(self, key: str, expires: float) -> str:
        payload = base64.urlsafe_b64encode(json.dumps({"k": key, "e": int(expires)}).encode())
        text = payload.decode().rstrip("=")
        mac = hmac.new(self._token_secret, text.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{text}.{mac}"

    def _token_key(self, request: Request) -> str:
        """The API key a CDN token was issued to.

        Raises:
            Unauthorized: no token, a forged one, or an expired one.
        """
        text, _, mac = _CDN_TOKEN.credential(request).rpartition(".")
        good = hmac.new(self._token_secret, text.encode(), hashlib.sha256).hexdigest()[:32]
        if not text or not hmac.compare_digest(mac, good):
            raise Unauthorized("Invalid CDN token")
        try:
            claims = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (ValueError, binascii.Error):
            raise Unauthorized("Invalid CDN token") from None
        if float(claims["e"]) <= self.port.clock.now():
            raise Unauthorized("CDN token has expired")
        return str(claims["k"])

    async def upload(self, request: Request) -> Response:
        """``POST /files/upload``: keep the raw body; its ``access_url`` works as an input."""
        self._token_key(request)
        settings = self.port.settings
        limit = settings.max_input_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise InvalidInput(f"upload is over the limit of {limit} bytes", status=413)
            chunks.append(chunk)
        if size == 0:
            raise InvalidInput("upload body is empty")
        content_type = (request.headers.get("content-type") or "application/octet-stream"
                        ).split(";", 1)[0].strip() or "application/octet-stream"
        file_name = request.headers.get("x-fal-file-name") or (
            "upload" + (mimetypes.guess_extension(content_type) or ".bin"))
        dot = file_name.rfind(".")
        suffix = file_name[dot:] if dot >= 0 and _SUFFIX.fullmatch(file_name[dot:]) else ""
        record = self.port.jobs.files.put(
            b"".join(chunks), content_type=content_type, width=0, height=0,
            now=self.port.clock.now(), ttl_s=_lifecycle_ttl(request, settings.result_ttl_s),
            suffix=suffix)
        return self.json({
            "access_url": self.public_url(request, self.cdn_path(record), host_key="cdn"),
            "content_type": content_type,
            "file_name": file_name,
            "file_size": record.size,
        })

    async def cdn_file(self, request: Request) -> Response:
        """``GET /files/{bucket}/{name}``: an output or an upload (public, no auth)."""
        params = request.path_params
        record = self._cdn_record(f"/files/{params['bucket']}/{params['name']}")
        if record is None:
            raise NotFound("File not found")
        return Response(record.data, media_type=record.content_type,
                        headers={"Cache-Control": "public, max-age=3600"})


def _iso_seconds(ts: float) -> str:
    """``2026-01-01T10:00:00+00:00``: what ``datetime.fromisoformat`` reads on Python 3.10."""
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).isoformat()


def _lifecycle_ttl(request: Request, default: float) -> float:
    """``X-Fal-Object-Lifecycle: {"expiration_duration_seconds": N}``, else ``default``."""
    raw = request.headers.get("x-fal-object-lifecycle")
    if not raw:
        return default
    try:
        value = json.loads(raw).get("expiration_duration_seconds")
    except (ValueError, AttributeError):
        return default
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default
