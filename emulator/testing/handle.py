"""What a test drives the emulator with: :class:`EmulatorHandle` (a running server's URL and
control plane, what the ``rmbg_emulator`` fixture yields) and :class:`InProcessEmulator` (the
ASGI app in the test's own event loop, for clients that take an httpx transport).

Both are re-exported by :mod:`emulator.testing.plugin`, where they lived first, so
``from emulator.testing.plugin import EmulatorHandle`` keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from emulator.settings import Settings
    from emulator.testing.server import EmulatorServer

__all__ = ["EmulatorHandle", "InProcessEmulator"]


class EmulatorHandle:
    """What a test gets from the ``rmbg_emulator`` fixture.

    Attributes:
        server: the running :class:`~emulator.testing.server.EmulatorServer`.
        url: base URL (``http://127.0.0.1:PORT``, or ``https://`` with TLS).
        ca_file: path of the CA bundle when TLS is on, else ``None``.
        admin_token: the server's admin token (``--rmbg-emulator-admin-token``), else
            ``None``; the control-plane methods send it (see :attr:`admin_headers`).
    """

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.url = server.url
        ca = server.ca_bundle
        self.ca_file: str | None = str(ca) if ca is not None else None
        self.admin_token: str | None = server.settings.admin_token
        self._http: httpx.Client | None = None

    @property
    def admin_headers(self) -> dict[str, str]:
        """Headers a request to ``/_emulator/*`` needs: ``Authorization: Bearer <token>``
        when the server has an admin token, else none."""
        return {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client on :attr:`url` (trusting the CA when TLS is on)."""
        import httpx

        kwargs.setdefault("timeout", 60)
        if self.ca_file:
            kwargs.setdefault("verify", self.ca_file)
        return httpx.Client(base_url=self.url, **kwargs)

    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        # One client per handle: making an httpx.Client (its TLS context) costs tens of ms.
        if self._http is None:
            self._http = self.client(headers=self.admin_headers)
        response = self._http.request(method, f"/_emulator{path}", **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} /_emulator{path}: {response.status_code} "
                                 f"{response.text}")
        return response.json()

    def close(self) -> None:
        """Close the control-plane client (the fixture does it after each test)."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def url_for(self, vendor: str, host: str | None = None) -> str:
        """Base URL of a vendor host on the one port, prefix included.

        ``url_for("pixazo")`` is :attr:`url`; ``url_for("fal", "queue")`` is ``url + "/queue"``.

        Raises:
            KeyError: unknown vendor or host key.
        """
        adapter = self.server.emulator.adapters[vendor]
        specs = adapter.hosts if host is None else [h for h in adapter.hosts if h.key == host]
        if not specs:
            raise KeyError(f"{vendor} has no host {host!r}: {[h.key for h in adapter.hosts]}")
        return self.url + specs[0].prefix

    def reset(self) -> None:
        """Forget jobs, files, balances, rules and journal."""
        self._admin("POST", "/reset")

    def inject(self, **rule: Any) -> dict[str, Any]:
        """Add a fault rule (``POST /_emulator/faults``); returns it with its ``id``."""
        result: dict[str, Any] = self._admin("POST", "/faults", json=rule)
        return result

    def scenario(self, scenario: str | Path | Mapping[str, Any]) -> dict[str, Any]:
        """Load a scenario (``POST /_emulator/scenarios``): a YAML/JSON file's path, or the
        scenario itself as a mapping. Returns its summary (name, keys, rules with ids)."""
        if isinstance(scenario, Mapping):
            result: dict[str, Any] = self._admin("POST", "/scenarios", json=dict(scenario))
            return result
        text = Path(scenario).read_text(encoding="utf-8")
        result = self._admin("POST", "/scenarios", content=text.encode("utf-8"),
                             headers={"Content-Type": "application/yaml"})
        return result

    def advance(self, seconds: float) -> float:
        """Move the emulator's clock forward; returns the new time (unix s)."""
        return float(self._admin("POST", "/clock/advance", json={"seconds": seconds})["now"])

    def journal(self, **filters: Any) -> list[dict[str, Any]]:
        """Journal entries (``GET /_emulator/journal``) matching ``filters``."""
        entries: list[dict[str, Any]] = self._admin("GET", "/journal", params=filters)[
            "entries"]
        return entries

    def verify(self, **criteria: Any) -> dict[str, Any]:
        """WireMock-style verify (``POST /_emulator/journal/verify``).

        Raises:
            AssertionError: the journal does not match, with the near misses.
        """
        result: dict[str, Any] = self._admin("POST", "/journal/verify", json=criteria)
        if not result["pass"]:
            raise AssertionError(
                f"journal verify failed: {result['count']} matching, expected "
                f"{result['expected']}; criteria {result['criteria']}; near misses: "
                f"{result.get('near_misses', [])}")
        return result

    def webhooks(self, **filters: Any) -> list[dict[str, Any]]:
        """Webhook deliveries (``GET /_emulator/webhooks``)."""
        deliveries: list[dict[str, Any]] = self._admin("GET", "/webhooks", params=filters)[
            "deliveries"]
        return deliveries

    def wait_for_webhooks(self, count: int = 1, *, timeout_s: float = 10.0,
                          **filters: Any) -> list[dict[str, Any]]:
        """Deliveries matching ``filters`` once at least ``count`` exist and none is being
        sent: each has ended (``delivered``, ``failed``, ``dropped``) or made an attempt and
        waits for its next one. Deliveries go out in the background, so use this before
        asserting on their attempts (a receiver has the request a moment before the emulator
        records its answer).

        Raises:
            AssertionError: not so after ``timeout_s`` seconds (real time).
        """
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            found = self.webhooks(**filters)
            settled = all(d["state"] != "pending" or (d["attempts"] and d["next_at"] is not None)
                          for d in found)
            if len(found) >= count and settled:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} webhook deliveries settled "
                                     f"after {timeout_s:g} s: {found}")
            time.sleep(0.01)

    def resend_webhook(self, delivery_id: str) -> dict[str, Any]:
        """Deliver a recorded webhook again, as a new delivery
        (``POST /_emulator/webhooks/{id}/resend``); returns the new delivery."""
        result: dict[str, Any] = self._admin("POST", f"/webhooks/{delivery_id}/resend")
        return result

    def set_balance(self, key: str, usd: float) -> dict[str, Any]:
        """Set an API key's balance in USD."""
        result: dict[str, Any] = self._admin("PUT", f"/keys/{key}", json={"balance_usd": usd})
        return result

    def violations(self, **filters: Any) -> list[dict[str, Any]]:
        """Contract violations of client requests (``GET /_emulator/violations``), oldest
        first; ``filters``: ``vendor``, ``api_key``."""
        found: list[dict[str, Any]] = self._admin("GET", "/violations", params=filters)[
            "violations"]
        return found

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        """Jobs (``GET /_emulator/jobs``)."""
        found: list[dict[str, Any]] = self._admin("GET", "/jobs", params=filters)["jobs"]
        return found


class InProcessEmulator:
    """The emulator app in this event loop, for clients that take an httpx transport.

    ``async with InProcessEmulator(settings) as emu:`` then use ``emu.transport`` (an
    ``httpx.ASGITransport``) or ``emu.client`` (an ``httpx.AsyncClient`` on
    ``http://testserver``). Runs the app's start-up and shut-down around the block. Without
    ``settings``, the image work runs in threads (``RMBG_EMULATOR_MATTE_POOL`` may say
    otherwise).
    """

    base_url = "http://testserver"

    def __init__(self, settings: Settings | None = None) -> None:
        import httpx

        from emulator.app import create_app
        from emulator.settings import Settings

        # Threads unless RMBG_EMULATOR_MATTE_POOL says otherwise: a test makes many of these,
        # and a worker process costs about 1 s to start (emulator.core.jobs.pool).
        threads: dict[str, Any] = ({} if "RMBG_EMULATOR_MATTE_POOL" in os.environ
                                   else {"matte_pool": "threads"})
        self.app = create_app(settings or Settings.from_env(progression="immediate", **threads))
        self.emulator = self.app.state.emulator
        self.transport = httpx.ASGITransport(app=self.app)
        self.client = httpx.AsyncClient(transport=self.transport, base_url=self.base_url,
                                        timeout=60)

    async def __aenter__(self) -> InProcessEmulator:
        import asyncio

        await self.emulator.jobs.start()
        await self.emulator.webhooks.start()
        await asyncio.get_running_loop().run_in_executor(None, self.emulator.matte)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.client.aclose()
        await self.emulator.jobs.stop()
        await self.emulator.webhooks.stop()
