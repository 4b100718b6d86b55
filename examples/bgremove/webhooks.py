"""Receiving the vendors' webhooks: check the signature, parse, deduplicate.

Framework-free: give :meth:`WebhookReceiver.handle` the vendor, the request headers and the raw
body (the exact bytes: signatures cover them) from whatever web framework you use, or let
:meth:`WebhookReceiver.respond` pick the HTTP status to answer.

* fal signs with ED25519 (docs/vendors/fal.md): ``X-Fal-Webhook-Signature`` is the hex signature of
  ``request_id \\n user_id \\n timestamp \\n sha256_hex(body)``, checked against the public keys
  fal serves as a JSON Web Key Set (``/.well-known/jwks.json`` on its REST host); the timestamp
  must be recent (replays of old deliveries are refused).
* Runflow signs with HMAC-SHA256 (docs/vendors/runflow.md): ``Runflow-Signature`` is the hex HMAC of
  the raw body with a callback secret (``whsec_...``) made by ``POST /v1/callback-secrets``.
* Bria signs with HMAC-SHA256 (docs/vendors/bria.md): ``Bria-Webhook-Signature: v1=<base64>`` over
  ``"{Bria-Webhook-Id}.{Bria-Webhook-Timestamp}.{body}"``, keyed by an HMAC of the API token
  (:meth:`WebhookReceiver.verify_bria`); the timestamp must be recent.
* Pixazo and Apiframe (and Runflow without a secret, Bria without its token) sign nothing:
  the receiver then accepts only jobs it was told about (:meth:`WebhookReceiver.expect`), so
  nobody can make it download an arbitrary URL.

Every vendor may deliver more than once (fal retries for two hours, Runflow three times; an
answer lost on the way back looks like a failure to them): each job's outcome is handled once,
later deliveries come back with ``duplicate=True``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import InvalidSignature, MalformedWebhook, UnknownJob, WebhookError
from .vendors import REGISTRY, Job

#: HTTP status to answer for each error (2xx would make the vendor stop retrying).
STATUS_FOR: dict[type[WebhookError], int] = {
    InvalidSignature: 401, UnknownJob: 404, MalformedWebhook: 400}


@dataclass(frozen=True)
class WebhookEvent:
    """One accepted delivery.

    Attributes:
        job: the job's outcome (status, result URLs, error) as the vendor reported it.
        duplicate: this job's outcome was handled before: acknowledge, do nothing.
        signed: a signature was checked (fal, Runflow with a secret).
    """

    vendor: str
    job: Job
    duplicate: bool
    signed: bool


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ed25519_keys(jwks: Mapping[str, Any]) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of a JSON Web Key Set (RFC 8037 ``OKP`` keys); others are skipped.

    Raises:
        ValueError: not a key set.
    """
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise ValueError("a JWKS has a 'keys' list")
    found = []
    for key in keys:
        if isinstance(key, dict) and key.get("kty") == "OKP" and key.get("crv") == "Ed25519":
            try:
                found.append(Ed25519PublicKey.from_public_bytes(_b64url(str(key["x"]))))
            except (KeyError, ValueError, binascii.Error):
                continue
    return found


class WebhookReceiver:
    """Checks and deduplicates webhook deliveries of all five vendors. Thread-safe.

    Args:
        fal_jwks_url: where fal's public keys are (default: fal's; the emulator serves them at
            ``url_for("fal", "rest") + "/.well-known/jwks.json"``).
        runflow_secrets: Runflow callback secrets (several while rotating).
        bria_api_tokens: Bria API tokens whose deliveries are checked (Bria keys the
            signature with the token that submitted the job; several while rotating).
        http: client for the JWKS fetch (default: one of our own, with ``verify``).
        max_skew_s: how far a fal timestamp may be from ``now()`` (seconds).
        now: unix time (seconds) for the timestamp check.
        jwks_refresh_s: an unknown signature refetches the key set at most this often.
        remember: how many handled jobs (and expected ones) are kept for deduplication.
    """

    def __init__(self, *, fal_jwks_url: str = "https://rest.fal.ai/.well-known/jwks.json",
                 runflow_secrets: Iterable[str] = (), bria_api_tokens: Iterable[str] = (),
                 http: httpx.Client | None = None,
                 verify: bool | str = True, max_skew_s: float = 300.0,
                 now: Callable[[], float] = time.time, jwks_refresh_s: float = 60.0,
                 remember: int = 100_000) -> None:
        self.fal_jwks_url = fal_jwks_url
        self.runflow_secrets = list(runflow_secrets)
        self.bria_api_tokens = list(bria_api_tokens)
        self._http = http
        self.tls_verify = verify
        self.max_skew_s = max_skew_s
        self.now = now
        self.jwks_refresh_s = jwks_refresh_s
        self.remember = remember
        self._lock = threading.Lock()
        self._fal_keys: list[Ed25519PublicKey] = []
        self._fal_keys_at: float | None = None
        self._expected: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._handled: OrderedDict[tuple[str, str], None] = OrderedDict()

    # -- what we submitted -------------------------------------------------------------------
    def expect(self, vendor: str, job_id: str) -> None:
        """Remember a submitted job, so its unsigned webhook is accepted."""
        with self._lock:
            self._keep(self._expected, (vendor, job_id))

    def _keep(self, table: OrderedDict[tuple[str, str], None], key: tuple[str, str]) -> None:
        table[key] = None
        table.move_to_end(key)
        while len(table) > self.remember:
            table.popitem(last=False)

    # -- the entry points --------------------------------------------------------------------
    def handle(self, vendor: str, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Check one delivery and say whether it was seen before.

        Args:
            headers: the request's headers (any case).
            body: the raw request body.

        Raises:
            InvalidSignature: fal or Runflow (with a secret) signature missing, stale or wrong.
            UnknownJob: an unsigned delivery for a job not passed to :meth:`expect`.
            MalformedWebhook: not JSON, or not the vendor's webhook shape.
        """
        cls = REGISTRY.get(vendor)
        if cls is None:
            raise MalformedWebhook(f"unknown vendor {vendor!r}")
        lower = {k.lower(): v for k, v in headers.items()}
        signed = False
        if vendor == "fal":
            self.verify_fal(lower, body)
            signed = True
        elif vendor == "runflow" and self.runflow_secrets:
            self.verify_runflow(lower, body)
            signed = True
        elif vendor == "bria" and self.bria_api_tokens:
            self.verify_bria(lower, body)
            signed = True
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise MalformedWebhook(f"{vendor}: body is not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise MalformedWebhook(f"{vendor}: body is not a JSON object")
        job = cls.parse_webhook(data)
        if vendor == "fal" and job.job_id != lower.get("x-fal-webhook-request-id"):
            raise InvalidSignature("fal: the body's request_id is not the signed one")
        if vendor == "bria" and signed and job.job_id != lower.get("bria-webhook-id"):
            raise InvalidSignature("bria: the body's request_id is not the signed one")
        key = (vendor, job.job_id)
        with self._lock:
            if not signed and key not in self._expected and key not in self._handled:
                raise UnknownJob(f"{vendor}: webhook for job {job.job_id}, which was not "
                                 "submitted here (unsigned vendors: call expect() at submit)")
            duplicate = key in self._handled
            self._keep(self._handled, key)
        return WebhookEvent(vendor, job, duplicate, signed)

    def respond(self, vendor: str, headers: Mapping[str, str], body: bytes
                ) -> tuple[int, WebhookEvent | None]:
        """:meth:`handle`, with the HTTP status to answer: 200 (also for a duplicate), or
        400 / 401 / 404 for a refused delivery (then the event is ``None``)."""
        try:
            return 200, self.handle(vendor, headers, body)
        except WebhookError as exc:
            return STATUS_FOR.get(type(exc), 400), None

    # -- signatures --------------------------------------------------------------------------
    def verify_fal(self, headers: Mapping[str, str], body: bytes) -> None:
        """Check fal's ED25519 signature (``headers`` with lower-case names).

        Raises:
            InvalidSignature: a header missing, a stale timestamp, or no key verifies it.
        """
        try:
            request_id = headers["x-fal-webhook-request-id"]
            user_id = headers["x-fal-webhook-user-id"]
            timestamp = headers["x-fal-webhook-timestamp"]
            signature = bytes.fromhex(headers["x-fal-webhook-signature"])
        except KeyError as exc:
            raise InvalidSignature(f"fal: header {exc.args[0]} is missing") from None
        except ValueError:
            raise InvalidSignature("fal: the signature is not hex") from None
        try:
            skew = abs(self.now() - int(timestamp))
        except ValueError:
            raise InvalidSignature(f"fal: timestamp {timestamp!r} is not an integer") from None
        if skew > self.max_skew_s:
            raise InvalidSignature(f"fal: timestamp is {skew:.0f} s away from now (at most "
                                   f"{self.max_skew_s:g} s)")
        message = "\n".join([request_id, user_id, timestamp,
                             hashlib.sha256(body).hexdigest()]).encode()
        for refresh in (False, True):
            for key in self._keys(refresh=refresh):
                try:
                    key.verify(signature, message)
                    return
                except CryptoInvalidSignature:
                    continue
        raise InvalidSignature("fal: the signature matches none of fal's keys")

    def _keys(self, *, refresh: bool) -> list[Ed25519PublicKey]:
        """fal's keys: the cached set, or a fresh fetch when there is none yet or ``refresh``
        is asked and the last fetch is older than ``jwks_refresh_s``."""
        with self._lock:
            fetched_at = self._fal_keys_at
            if fetched_at is not None and (
                    not refresh or time.monotonic() - fetched_at < self.jwks_refresh_s):
                return [] if refresh else list(self._fal_keys)
        try:
            if self._http is not None:
                response = self._http.get(self.fal_jwks_url)
            else:
                with httpx.Client(verify=self.tls_verify, timeout=15) as client:
                    response = client.get(self.fal_jwks_url)
            response.raise_for_status()
            keys = ed25519_keys(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidSignature(f"fal: cannot read the key set at {self.fal_jwks_url}: "
                                   f"{exc}") from exc
        with self._lock:
            self._fal_keys, self._fal_keys_at = keys, time.monotonic()
        return keys

    def verify_runflow(self, headers: Mapping[str, str], body: bytes) -> None:
        """Check Runflow's HMAC-SHA256 signature against every configured secret.

        Raises:
            InvalidSignature: the header is missing or matches no secret.
        """
        given = headers.get("runflow-signature")
        if not given:
            raise InvalidSignature("runflow: Runflow-Signature is missing")
        for secret in self.runflow_secrets:
            expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            if hmac.compare_digest(expected, given.strip().lower()):
                return
        raise InvalidSignature("runflow: Runflow-Signature matches no callback secret")

    def verify_bria(self, headers: Mapping[str, str], body: bytes) -> None:
        """Check Bria's signature (docs/vendors/bria.md; ``bria_client.toolkit``'s
        ``verify_webhook_signature``): a ``v1=<base64>`` token of ``Bria-Webhook-Signature``
        equals HMAC-SHA256 over ``"{Bria-Webhook-Id}.{Bria-Webhook-Timestamp}.{body}"`` keyed
        by ``HMAC-SHA256(key=api_token, msg="bria-webhook-signing-v1")``, for one of
        :attr:`bria_api_tokens`; the timestamp within ``max_skew_s`` of ``now()``.

        Raises:
            InvalidSignature: a header missing, a stale timestamp, or no token matches.
        """
        try:
            webhook_id = headers["bria-webhook-id"]
            timestamp = headers["bria-webhook-timestamp"]
            given = headers["bria-webhook-signature"]
        except KeyError as exc:
            raise InvalidSignature(f"bria: header {exc.args[0]} is missing") from None
        try:
            skew = abs(self.now() - int(timestamp))
        except ValueError:
            raise InvalidSignature(f"bria: timestamp {timestamp!r} is not an integer") from None
        if skew > self.max_skew_s:
            raise InvalidSignature(f"bria: timestamp is {skew:.0f} s away from now (at most "
                                   f"{self.max_skew_s:g})")
        tokens = [t.strip()[3:] for t in given.split(",") if t.strip().startswith("v1=")]
        message = f"{webhook_id}.{timestamp}.".encode() + body
        for api_token in self.bria_api_tokens:
            key = hmac.new(api_token.encode(), b"bria-webhook-signing-v1",
                           hashlib.sha256).digest()
            expected = base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()
            if any(hmac.compare_digest(expected, t) for t in tokens):
                return
        raise InvalidSignature("bria: Bria-Webhook-Signature matches no API token")


__all__ = ["STATUS_FOR", "WebhookEvent", "WebhookReceiver", "ed25519_keys"]
