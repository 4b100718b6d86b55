"""Webhook deliveries: an outbox, retry schedules on the emulator's clock, a delivery journal.

Vendor-neutral: an adapter turns a finished job into a :class:`WebhookMessage` (URL, raw body,
headers, signature, :class:`RetryPolicy`); the outbox delivers it in the background, never
delaying an API answer, with a time-out per attempt, and records every attempt. Retries are
scheduled on the :class:`~emulator.core.clock.Clock`, so tests see a two-hour retry schedule by
advancing a virtual clock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import httpx

from emulator.core.background import end_tasks
from emulator.core.clock import Clock
from emulator.core.fetchpolicy import FetchPolicy
from emulator.errors import InputImageError

if TYPE_CHECKING:
    from emulator.core.state.outbox import SharedOutbox

log = logging.getLogger("emulator.webhooks")

#: HMAC secrets kept per (vendor, API key); only the newest signs, older ones are dropped.
MAX_SECRETS_PER_KEY = 16

#: ``fault`` hooks: called with a delivery about to be sent; may change or drop it.
DeliveryHook = Callable[["Delivery"], "list[Delivery]"]


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed delivery is tried again.

    Attributes:
        delays_s: seconds between attempt ``i`` and ``i + 1``; its length is the number of
            retries (so attempts = ``len(delays_s) + 1``).
        timeout_s: seconds one attempt may take.
        retry_on_4xx: retry on a 4xx answer too (else only on 5xx and network errors).
        source: where the policy comes from (a vendor-doc file).
    """

    delays_s: tuple[float, ...] = ()
    timeout_s: float = 15.0
    retry_on_4xx: bool = False
    source: str = ""

    @property
    def attempts(self) -> int:
        """Total attempts, the first included."""
        return len(self.delays_s) + 1

    def should_retry(self, status: int | None) -> bool:
        """``status`` is the HTTP status, or ``None`` for a network error or time-out."""
        if status is None or status >= 500:
            return True
        return self.retry_on_4xx and 400 <= status < 500


@dataclass(frozen=True)
class WebhookMessage:
    """What an adapter asks the outbox to send: ``POST url`` with ``body`` and ``headers``.

    ``sign``, when set, is called before each attempt with the body and the attempt's unix
    time and returns the signature headers (so a timestamped signature is fresh per attempt).
    """

    url: str
    body: bytes
    headers: dict[str, str]
    policy: RetryPolicy
    sign: Callable[[bytes, float], dict[str, str]] | None = None


@dataclass
class Attempt:
    """One try: when (unix s), the answer's status (``None``: no answer), latency, error."""

    number: int
    at: float
    status: int | None
    latency_ms: float
    error: str | None
    headers: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


@dataclass
class Delivery:
    """A webhook being delivered, with its attempts.

    ``state``: ``pending`` (an attempt is due at ``next_at``), ``delivered`` (2xx),
    ``failed`` (out of attempts or not retryable), ``dropped`` (by a fault).
    """

    id: str
    job_id: str
    vendor: str
    api_key: str
    message: WebhookMessage
    created_at: float
    next_at: float | None
    state: str = "pending"
    attempts: list[Attempt] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    resend_of: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    forge_signature: bool = False
    time_shift_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON view for ``GET /_emulator/webhooks``."""
        return {
            "id": self.id,
            "job_id": self.job_id,
            "vendor": self.vendor,
            "api_key": self.api_key,
            "url": self.message.url,
            "state": self.state,
            "created_at": self.created_at,
            "next_at": self.next_at,
            "attempts": [a.to_json() for a in self.attempts],
            "max_attempts": self.message.policy.attempts,
            "faults": list(self.faults),
            "resend_of": self.resend_of,
            "body": self.message.body.decode("utf-8", "replace"),
        }


def delivery_record(delivery: Delivery) -> dict[str, Any]:
    """A delivery as JSON values (for a state store): its attributes, its attempts, and its
    message but ``sign`` (``signed`` says whether it had one; the body is base64)."""
    message = delivery.message
    return {
        "id": delivery.id, "job_id": delivery.job_id, "vendor": delivery.vendor,
        "api_key": delivery.api_key, "created_at": delivery.created_at,
        "next_at": delivery.next_at, "state": delivery.state,
        "attempts": [a.to_json() for a in delivery.attempts], "faults": list(delivery.faults),
        "resend_of": delivery.resend_of, "extra_headers": dict(delivery.extra_headers),
        "forge_signature": delivery.forge_signature, "time_shift_s": delivery.time_shift_s,
        "url": message.url, "body": base64.b64encode(message.body).decode("ascii"),
        "headers": dict(message.headers), "signed": message.sign is not None,
        "policy": {"delays_s": list(message.policy.delays_s),
                   "timeout_s": message.policy.timeout_s,
                   "retry_on_4xx": message.policy.retry_on_4xx,
                   "source": message.policy.source},
    }


def delivery_from_record(record: dict[str, Any],
                         sign: Callable[[bytes, float], dict[str, str]] | None) -> Delivery:
    """The delivery of :func:`delivery_record`'s ``record``, signed by ``sign``."""
    policy = record["policy"]
    message = WebhookMessage(
        url=record["url"], body=base64.b64decode(record["body"]), headers=record["headers"],
        policy=RetryPolicy(delays_s=tuple(policy["delays_s"]), timeout_s=policy["timeout_s"],
                           retry_on_4xx=policy["retry_on_4xx"], source=policy["source"]),
        sign=sign)
    return Delivery(
        id=record["id"], job_id=record["job_id"], vendor=record["vendor"],
        api_key=record["api_key"], message=message, created_at=record["created_at"],
        next_at=record["next_at"], state=record["state"],
        attempts=[Attempt(**a) for a in record["attempts"]], faults=record["faults"],
        resend_of=record["resend_of"], extra_headers=record["extra_headers"],
        forge_signature=record["forge_signature"], time_shift_s=record["time_shift_s"])


#: Rebuilds the ``sign`` of a restored delivery's message from its record (the app asks the
#: vendor's adapter); ``None`` when it cannot (the job is gone).
Resigner = Callable[[dict[str, Any]], "Callable[[bytes, float], dict[str, str]] | None"]


@dataclass(frozen=True)
class SigningSecret:
    """A shared secret for HMAC-signed callbacks (Runflow's ``whsec_...``)."""

    id: str
    label: str
    value: str
    created_at: float


class Secrets:
    """Per (vendor, API key) signing secrets, and the emulator's own ED25519 key.

    The ED25519 key is made once per process (fal signs its webhooks with one and serves the
    public half as JWKS, docs/vendors/fal.md); HMAC secrets are made on request and kept until
    reset, at most :data:`MAX_SECRETS_PER_KEY` per (vendor, key), the oldest dropped first.
    """

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.ed25519 = Ed25519PrivateKey.generate()
        self.ed25519_kid = secrets.token_hex(8)
        self._hmac: dict[tuple[str, str], deque[SigningSecret]] = {}
        #: Moves on every change made here (:meth:`create`, :meth:`reset`), so a shared
        #: store publishes the secrets only when they changed.
        self.version = 0

    def create(self, vendor: str, api_key: str, label: str, now: float) -> SigningSecret:
        """A new ``whsec_`` secret for the key; the newest one signs from now on."""
        secret = SigningSecret(id=f"cs_{secrets.token_hex(8)}", label=label,
                               value="whsec_" + secrets.token_urlsafe(24), created_at=now)
        kept = self._hmac.get((vendor, api_key))
        if kept is None:
            kept = self._hmac[(vendor, api_key)] = deque(maxlen=MAX_SECRETS_PER_KEY)
        kept.append(secret)
        self.version += 1
        return secret

    def current(self, vendor: str, api_key: str) -> SigningSecret | None:
        """The newest secret of the key, or ``None``."""
        found = self._hmac.get((vendor, api_key))
        return found[-1] if found else None

    def jwks(self) -> dict[str, Any]:
        """The ED25519 public key as a JSON Web Key Set (RFC 8037 OKP key)."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = self.ed25519.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.ed25519_kid,
                          "use": "sig", "alg": "EdDSA"}]}

    def dump(self) -> dict[str, Any]:
        """The secrets as JSON values, for a state store: ``{"hmac": [{vendor, api_key, id,
        label, value, created_at}] (oldest first per key), "ed25519": hex of the private key,
        "kid": its JWKS key id}`` (kept, so that receivers' cached JWKS still verify)."""
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
        )

        raw = self.ed25519.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return {"hmac": [{"vendor": vendor, "api_key": key, **s.__dict__}
                         for (vendor, key), kept in self._hmac.items() for s in kept],
                "ed25519": raw.hex(), "kid": self.ed25519_kid}

    def load(self, doc: dict[str, Any]) -> None:
        """Replace the secrets with those of :meth:`dump`'s ``doc``."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self.ed25519 = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(doc["ed25519"]))
        self.ed25519_kid = doc["kid"]
        self._hmac.clear()
        for item in doc["hmac"]:
            kept = self._hmac.setdefault((item["vendor"], item["api_key"]),
                                         deque(maxlen=MAX_SECRETS_PER_KEY))
            kept.append(SigningSecret(id=item["id"], label=item["label"], value=item["value"],
                                      created_at=item["created_at"]))

    def reset(self) -> None:
        """Forget the HMAC secrets (the ED25519 key stays: receivers may cache the JWKS)."""
        self._hmac.clear()
        self.version += 1


class WebhookOutbox:
    """Delivers :class:`WebhookMessage` objects in the background and journals every attempt.

    Call :meth:`start` / :meth:`stop` on the serving event loop. At most ``journal_size``
    deliveries are kept (the oldest finished ones are dropped first).
    """

    def __init__(self, clock: Clock, *, journal_size: int = 10_000) -> None:
        self.clock = clock
        self.hooks: list[DeliveryHook] = []
        #: The most deliveries kept (the oldest finished ones are dropped first).
        self.journal_size = journal_size
        self._deliveries: OrderedDict[str, Delivery] = OrderedDict()
        self._ids = itertools.count(1)
        self._client: httpx.AsyncClient | None = None
        #: The address policy every delivery goes through (``Emulator`` gives it the input
        #: fetches' one: a callback URL is a URL the client gave, like an ``image_url``);
        #: ``None`` delivers anywhere.
        self.policy: FetchPolicy | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._held: list[Delivery] = []
        self._waiting: dict[str, list[Delivery]] = {}
        #: Goes up with every change (a state store saves the deliveries when it moved).
        self.version = 0
        #: Deliveries kept in Redis and claimed there by every process (``--store
        #: redis://``, :mod:`emulator.core.state.outbox`); ``None``: this process's only.
        self.shared: SharedOutbox | None = None
        #: Delivery ids are this prefix and a number (a shared outbox makes it unique to the
        #: process).
        self.id_prefix = "wh_"

    async def start(self) -> None:
        """Create the HTTP client and the delivery loop."""
        if self._client is None:
            # No proxy from the environment: the address the policy checks is the address
            # connected to.
            self._client = httpx.AsyncClient(headers={"User-Agent": "rmbg-emulator webhooks"},
                                             trust_env=False)
        if self._loop_task is None:
            self._wake = asyncio.Event()
            self._loop_task = asyncio.create_task(self._run())
        if self.shared is not None:
            self.shared.start()

    async def stop(self, *, grace_s: float = 0.0) -> None:
        """Stop the loop, give attempts in flight ``grace_s`` seconds to end, then cancel
        them (:func:`emulator.core.background.end_tasks`); close the client."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._sending:
            await end_tasks(list(self._sending), grace_s=grace_s, what="webhook attempts")
        if self.shared is not None:
            await self.shared.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def enqueue(self, message: WebhookMessage, *, job_id: str, vendor: str, api_key: str,
                resend_of: str | None = None) -> list[Delivery]:
        """Queue a message for delivery now; hooks (faults) may drop, delay or copy it.

        Returns:
            The deliveries created (none shown as dropped are still journaled).
        """
        now = self.clock.now()
        delivery = Delivery(id=f"{self.id_prefix}{next(self._ids)}", job_id=job_id, vendor=vendor,
                            api_key=api_key, message=message, created_at=now, next_at=now,
                            resend_of=resend_of)
        batch = [delivery]
        for hook in self.hooks:
            batch = [out for d in batch for out in hook(d)]
        for item in batch:
            self._keep(item)
        self._release_held([d for d in batch if d.next_at is not None])
        self._wake.set()
        return batch

    def copy(self, delivery: Delivery, *, next_at: float | None = None) -> Delivery:
        """A new delivery of the same message (for duplicate faults and resends)."""
        return replace(delivery, id=f"{self.id_prefix}{next(self._ids)}", attempts=[],
                       state="pending", next_at=self.clock.now() if next_at is None else next_at,
                       faults=list(delivery.faults))

    def resend(self, delivery_id: str) -> Delivery | None:
        """Send a recorded delivery's message again, as a new delivery (no hooks applied)."""
        old = self._deliveries.get(delivery_id)
        if old is None:
            return None
        new = self.copy(old)
        new.resend_of = old.id
        new.faults = []
        new.extra_headers = {}
        new.forge_signature = False
        new.time_shift_s = 0.0
        self._keep(new)
        self._wake.set()
        return new

    def _keep(self, delivery: Delivery) -> None:
        self.version += 1
        self._deliveries[delivery.id] = delivery
        if self.shared is not None:
            self.shared.changed(delivery)
        while len(self._deliveries) > self.journal_size:
            oldest_id = next(iter(self._deliveries))
            if self._deliveries[oldest_id].state == "pending":
                self._deliveries.move_to_end(oldest_id)
                break
            del self._deliveries[oldest_id]

    def hold(self, delivery: Delivery) -> None:
        """Keep ``delivery`` back until the next delivery is queued, then send it after that
        one (the ``reorder`` fault)."""
        self.version += 1
        delivery.next_at = None
        self._held.append(delivery)
        if self.shared is not None:
            self.shared.changed(delivery)

    def _release_held(self, after: list[Delivery]) -> None:
        """Held deliveries go out once the first attempt of ``after[-1]`` has ended."""
        if not self._held or not after:
            return
        self._waiting.setdefault(after[-1].id, []).extend(self._held)
        self._held.clear()

    def get(self, delivery_id: str) -> Delivery | None:
        """The delivery with ``delivery_id``, or ``None``."""
        return self._deliveries.get(delivery_id)

    def deliveries(self, **filters: str | None) -> list[Delivery]:
        """Deliveries, oldest first, whose attributes equal every non-``None`` filter."""
        out = []
        for d in list(self._deliveries.values()):
            if all(v is None or str(getattr(d, k)) == v for k, v in filters.items()):
                out.append(d)
        return out

    def clear(self) -> None:
        """Forget every delivery (attempts in flight finish unseen)."""
        self.version += 1
        self._deliveries.clear()
        self._held.clear()
        self._waiting.clear()
        if self.shared is not None:
            self.shared.forget()

    def replace_all(self, deliveries: list[Delivery]) -> None:
        """Make ``deliveries`` (oldest first) the ones kept (a shared outbox's view of every
        process's deliveries); attempts and held ones of this process are unaffected."""
        self.version += 1
        self._deliveries = OrderedDict((d.id, d) for d in deliveries)

    def dump(self) -> dict[str, Any]:
        """Every kept delivery with its attempts (:func:`delivery_record`), oldest first,
        and the next id: ``{"next_id": N, "deliveries": [...]}`` (for a state store)."""
        next_id = next(self._ids)
        self._ids = itertools.count(next_id)
        return {"next_id": next_id,
                "deliveries": [delivery_record(d) for d in self._deliveries.values()]}

    def load(self, doc: dict[str, Any], resign: Resigner) -> None:
        """Replace the deliveries with those of :meth:`dump`'s ``doc``; each message's
        ``sign`` comes from ``resign``. A delivery that was in flight when the last process
        stopped (pending, no time set) is due now; so is one a ``reorder`` fault held."""
        self.clear()
        now = self.clock.now()
        for record in doc["deliveries"]:
            delivery = delivery_from_record(
                record, resign(record) if record["signed"] else None)
            if delivery.state == "pending" and delivery.next_at is None:
                delivery.next_at = now
            self._deliveries[delivery.id] = delivery
        self._ids = itertools.count(int(doc["next_id"]))
        self._wake.set()

    def pending(self) -> int:
        """Deliveries still waiting for an attempt."""
        return sum(1 for d in self._deliveries.values() if d.state == "pending")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.05)
            woken = self._wake.is_set()
            self._wake.clear()
            now = self.clock.now()
            if self.shared is not None:  # due deliveries of every process, claimed in Redis
                try:
                    claimed = await self.shared.claim(now, woken=woken)
                except Exception:  # never let a claim kill the loop (its leases lapse)
                    log.exception("claiming webhook deliveries")
                    claimed = []
                for delivery in claimed:
                    self._deliveries[delivery.id] = delivery
                    delivery.next_at = None  # in flight
                    self._send(delivery)
                continue
            for delivery in list(self._deliveries.values()):
                if delivery.state == "pending" and delivery.next_at is not None \
                        and delivery.next_at <= now:
                    delivery.next_at = None  # in flight
                    self._send(delivery)

    def _send(self, delivery: Delivery) -> None:
        """Attempt ``delivery`` in a task (a shared outbox then writes its outcome)."""
        task = asyncio.create_task(self._attempt(delivery))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _post(self, message: WebhookMessage, headers: dict[str, str]) -> httpx.Response:
        """POST ``message`` to its URL, through :attr:`policy` when there is one.

        Raises:
            InputImageError: the policy refused the URL's address (never retried).
            httpx.HTTPError: the delivery failed.
        """
        assert self._client is not None
        timeout = message.policy.timeout_s
        if self.policy is None:
            return await self._client.post(message.url, content=message.body, headers=headers,
                                           timeout=timeout)
        url = httpx.URL(message.url)
        short = message.url if len(message.url) <= 200 else message.url[:197] + "..."
        request = await self.policy.request(self._client, "POST", url, short=short,
                                            what="delivering the webhook", headers=headers,
                                            content=message.body, timeout=timeout)
        return await self._client.send(request)

    async def _attempt(self, delivery: Delivery) -> None:
        assert self._client is not None
        message = delivery.message
        at = self.clock.now()
        headers = {"Content-Type": "application/json", **message.headers}
        if message.sign is not None:
            headers.update(message.sign(message.body, at + delivery.time_shift_s))
        headers.update(delivery.extra_headers)
        if delivery.forge_signature:
            for name, value in list(headers.items()):
                if "signature" in name.lower():
                    headers[name] = secrets.token_hex(max(1, len(value) // 2))
        status: int | None = None
        error: str | None = None
        started = time.perf_counter()
        refused = False
        try:
            response = await self._post(message, headers)
            status = response.status_code
        except InputImageError as exc:  # the address policy refused the callback URL
            error, refused = exc.message, True
        except httpx.TimeoutException:
            error = f"timed out after {message.policy.timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # never let a delivery kill the loop
            log.exception("webhook %s", delivery.id)
            error = f"{type(exc).__name__}: {exc}"
        latency = (time.perf_counter() - started) * 1000
        number = len(delivery.attempts) + 1
        shown = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        delivery.attempts.append(Attempt(number, at, status, round(latency, 2), error, shown))
        self.version += 1
        for held in self._waiting.pop(delivery.id, []):
            held.next_at = self.clock.now()
            if self.shared is not None:
                self.shared.changed(held)
            self._wake.set()
        if status is not None and 200 <= status < 300:
            delivery.state = "delivered"
        elif (not refused and number < message.policy.attempts
              and message.policy.should_retry(status)):
            delivery.next_at = self.clock.now() + message.policy.delays_s[number - 1]
        else:
            delivery.state = "failed"
        if self.shared is not None:
            await self.shared.finish(delivery)
