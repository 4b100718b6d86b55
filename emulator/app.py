"""The Starlette application: every vendor host, the control plane, one port.

Each vendor host answers by its real ``Host`` header and by a path prefix on the one port (the
vendor's main API host at the root). A request walks one way, and is resolved once: the
outermost middleware (:mod:`emulator.middleware`) resolves it into a
:class:`~emulator.context.RequestContext` (adapter, host, operation, route, key) with the one
route table built here at start-up, applies the fault rules, and serves it
(:func:`emulator.boundary.serve`) -> guard -> vendor adapter -> core -> vendor adapter renders
the reply; whatever a handler raises is rendered at the one error boundary
(:mod:`emulator.boundary`), by the context's adapter or the control plane; the middleware
journals the final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp

from emulator import samples
from emulator.context import RouteTable
from emulator.core import scenarios
from emulator.core.clock import Clock
from emulator.core.faults import FaultRules
from emulator.core.fetchpolicy import FETCH_FAILED, embedded_ipv4, parse_ip
from emulator.core.jobs import Job, JobEngine, default_threads
from emulator.core.journal import Journal
from emulator.core.webhooks import Secrets, WebhookOutbox
from emulator.errors import InputImageError
from emulator.gcpolicy import IdleCollector, Traffic
from emulator.guard import RequestGuard
from emulator.matte.engine import MatteEngine, create_engine
from emulator.settings import Settings
from emulator.vendors import load_all
from emulator.vendors.base import HostSpec, VendorAdapter

log = logging.getLogger("emulator")

FILES_PATH = "/_emulator/files"


class Emulator:
    """The running emulator's state: settings, clock, job engine, adapters, matte engine."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = Clock(frozen=settings.virtual_clock)
        self.accepted_keys: frozenset[str] | None = settings.keys
        self.started_at = time.time()
        self._matte: MatteEngine | None = None
        self._matte_lock = threading.Lock()
        self.jobs = JobEngine(settings, clock=self.clock, matte=self.matte)
        self.jobs.local_resolver = self.resolve_local
        self.webhooks = WebhookOutbox(self.clock, journal_size=settings.journal_size)
        self.webhooks.policy = self.jobs.fetch_policy
        self.secrets = Secrets()
        self.jobs.final_listeners.append(self._on_final)
        self.guard = RequestGuard(settings, self.clock)
        self.adapters: dict[str, VendorAdapter] = {
            slug: cls(self) for slug, cls in sorted(load_all().items())
        }
        self.guard.prepare(self.adapters)
        self._vendor_hosts: dict[str, tuple[VendorAdapter, HostSpec]] = {
            spec.name: (adapter, spec)
            for adapter in self.adapters.values() for spec in adapter.hosts
        }
        self.faults = FaultRules({slug: a.operations() for slug, a in self.adapters.items()})
        # Webhook-stage fault effects act on each delivery being queued.
        self.webhooks.hooks.append(partial(self.faults.act_on_delivery, outbox=self.webhooks))
        self.journal = Journal(settings.journal_size)
        #: Requests in flight (kept by the fault middleware), for the idle collector.
        self.traffic = Traffic()
        #: Full garbage-collection passes while idle; ``serve`` sets it (emulator.gcpolicy).
        self.idle_gc: IdleCollector | None = None
        #: Scenarios loaded since the last reset (summaries, for ``GET /_emulator/scenarios``).
        self.scenarios: list[dict[str, Any]] = []
        self._startup_scenarios = [scenarios.load_file(path, self.faults)
                                   for path in settings.scenarios]
        for scenario in self._startup_scenarios:
            self.load_scenario(scenario)

    def host_names(self) -> list[str]:
        """Every vendor host's real name (``fal.run``, ``queue.fal.run``, ...), sorted."""
        return sorted(self._vendor_hosts)

    def matte(self) -> MatteEngine:
        """The matte engine, built on first use (thread-safe).

        Raises:
            EngineUnavailable: the configured engine cannot be built.
        """
        if self._matte is None:
            with self._matte_lock:
                if self._matte is None:
                    s = self.settings
                    self._matte = create_engine(
                        s.engine, preset=s.engine_preset, models_dir=s.models_dir,
                        threads=s.matte_threads or default_threads(),
                    )
        return self._matte

    @property
    def engine_name(self) -> str:
        """Name of the matte engine in use (``"(not loaded)"`` before first use)."""
        return self._matte.name if self._matte is not None else "(not loaded)"

    def file_urls(self, request: Request, job: Job) -> list[str]:
        """Absolute URLs of ``job``'s outputs on the scheme and host the client used."""
        return self.file_urls_at(VendorAdapter.origin(request), job)

    def file_urls_at(self, origin: str | None, job: Job) -> list[str]:
        """Absolute URLs of ``job``'s outputs under ``origin`` (``scheme://host:port``)."""
        base = origin or f"http://{self.settings.host}:{self.settings.port}"
        return [f"{base}{FILES_PATH}/{job.vendor}/{f.name}" for f in job.outputs]

    async def _on_final(self, job: Job) -> None:
        adapter = self.adapters.get(job.vendor)
        message = await adapter.final_webhook(job) if adapter is not None else None
        if message is not None:
            self.webhooks.enqueue(message, job_id=job.id, vendor=job.vendor,
                                  api_key=job.api_key)

    async def resolve_local(self, url: str, origin: str | None) -> bytes | None:
        """Bytes of a URL this emulator serves itself (samples, outputs, vendor files), no HTTP.

        A URL is the emulator's own when it is on the same ``host:port`` as the submitting
        request (``origin``); or, when that request used a vendor's real host name (Host
        routing), on another vendor host name at the same port; or on the address the
        emulator listens on (``Settings.host``, its loopback names, and ``Settings.port``).
        Vendor hosts' own files (fal's CDN and uploads) come from
        :meth:`VendorAdapter.local_file`. So a job that refers to the emulator's samples or to
        a URL it handed out also works in-process (ASGI transport) and never fetches the
        emulator over HTTP.

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
        elif (own is not None and host in self._vendor_hosts
              and (own.hostname or "").lower() in self._vendor_hosts
              and parts.port == own.port):
            data = self._own_file(path, host, vendor_host_only=True)
        elif self._listens_on(host, port):
            data = self._own_file(path, "")
        else:
            return None
        if data is not None:
            return data
        short = url if len(url) <= 200 else url[:197] + "..."
        if path.startswith(("/_emulator/samples/", FILES_PATH + "/")):
            raise InputImageError(
                f"fetching the input image failed: {short}: the emulator has no such "
                "sample or file (unknown, expired, or made before a reset)",
                code=FETCH_FAILED)
        raise InputImageError(
            f"fetching the input image was refused: {short} is the emulator's own URL and "
            "not an image it serves (its samples and files are read in-process; nothing "
            "else of it, such as /_emulator, can be an input)", code=FETCH_FAILED)

    def _listens_on(self, host: str, port: int) -> bool:
        """Whether ``host:port`` reaches this emulator: its own ``Settings.host`` and port,
        or a loopback name or address of it (:attr:`FetchPolicy.own`)."""
        if port != self.settings.port:
            return False
        if host == self.settings.host.lower():
            return True
        own = self.jobs.fetch_policy.own
        ip = parse_ip(host)
        if ip is None:
            return host == "localhost" and any(a.is_loopback for a in own)
        return (embedded_ipv4(ip) or ip) in own

    def _own_file(self, path: str, origin_host: str, *, vendor_host_only: bool = False
                  ) -> bytes | None:
        """The bytes behind one of the emulator's own paths, or ``None`` when it serves no
        image there. ``origin_host`` is the host name the path was reached under (a vendor
        host name selects that vendor's files)."""
        if path.startswith("/_emulator/samples/") and not vendor_host_only:
            name = path.rsplit("/", 1)[-1]
            return samples.read_bytes(name) if samples.lookup(name) else None
        if path.startswith(FILES_PATH + "/"):
            file_id = path.rsplit("/", 1)[-1].split(".", 1)[0]
            record = self.jobs.files.get(file_id)
            return record.data if record is not None else None
        named = self._vendor_hosts.get(origin_host)
        if named is not None:
            adapter, spec = named
            return adapter.local_file(spec.key, path)
        if vendor_host_only:
            return None
        for adapter in self.adapters.values():
            for spec in adapter.hosts:
                if spec.prefix and (path + "/").startswith(spec.prefix + "/"):
                    return adapter.local_file(spec.key, path[len(spec.prefix):])
        for adapter in self.adapters.values():
            for spec in adapter.hosts:
                if not spec.prefix:
                    data = adapter.local_file(spec.key, path)
                    if data is not None:
                        return data
        return None

    def load_scenario(self, scenario: scenarios.Scenario) -> dict[str, Any]:
        """Apply a validated scenario (keys, defaults, rules after the stored ones).

        Returns:
            Its summary, with the stored rules and their ids.
        """
        rules = scenarios.apply(scenario, self.faults, self.jobs.billing, self.clock.now())
        summary = scenarios.summary(scenario, rules)
        self.scenarios.append(summary)
        return summary

    def reset(self, *, reload_scenarios: bool = True) -> None:
        """Forget jobs, files, balances, violations, fault rules, the journal and webhook
        deliveries; the clock goes back to now. Then the scenario files given at start-up are
        applied again (fresh counters), unless ``reload_scenarios`` is false.
        """
        self.jobs.reset()
        self.webhooks.clear()
        self.secrets.reset()
        self.clock.reset()
        self.guard.reset()
        self.faults.clear()
        self.journal.clear()
        self.scenarios.clear()
        if reload_scenarios:
            for scenario in self._startup_scenarios:
                self.load_scenario(scenario)


class EmulatorApp(Starlette):
    """The Starlette app with the one middleware outermost, which resolves every request
    once (:class:`~emulator.context.RouteTable`) and serves it (:mod:`emulator.boundary`).

    Outside Starlette's own stack, the middleware sees the server's ``send`` (to drop
    connections) and journals every answer. Starlette's router has no routes: it serves the
    lifespan only.

    Attributes:
        table: the route table of every vendor host and the control plane.
    """

    def __init__(self, *args: Any, table: RouteTable, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = table

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack (the lifespan) wrapped in
        :class:`~emulator.middleware.FaultMiddleware` (every ``http`` request)."""
        from emulator.middleware import FaultMiddleware

        return FaultMiddleware(super().build_middleware_stack(), self.state.emulator,
                               self.table)


def create_app(settings: Settings | None = None) -> EmulatorApp:
    """Build the application.

    Args:
        settings: defaults to :meth:`Settings.from_env`.

    Returns:
        A Starlette app (:class:`EmulatorApp`); its ``state.emulator`` is the
        :class:`Emulator`.

    Raises:
        ScenarioError: a scenario file in ``settings.scenarios`` cannot be loaded.
    """
    from emulator.admin import admin_routes, file_route

    settings = settings or Settings.from_env()
    emulator = Emulator(settings)

    table = RouteTable(list(emulator.adapters.values()), file_route(emulator),
                       admin_routes(emulator))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await emulator.jobs.start()
        await emulator.webhooks.start()
        # Built in the worker pool, so the engine's own threads (onnxruntime's intra-op pool)
        # inherit the workers' lower priority (JobEngine.start).
        await emulator.jobs.run_blocking(emulator.matte)
        collector = (asyncio.create_task(emulator.idle_gc.run())
                     if emulator.idle_gc is not None else None)
        try:
            yield
        finally:
            if collector is not None:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collector
            await emulator.jobs.stop()
            await emulator.webhooks.stop()

    app = EmulatorApp(lifespan=lifespan, table=table)
    app.state.emulator = emulator
    return app


def describe(app: Starlette) -> dict[str, Any]:
    """Banner facts for the CLI: engine name, vendors, progression."""
    emulator: Emulator = app.state.emulator
    return {
        "engine": emulator.engine_name,
        "vendors": list(emulator.adapters),
        "progression": emulator.settings.progression,
    }


__all__ = ["FILES_PATH", "Emulator", "Route", "create_app", "describe"]
