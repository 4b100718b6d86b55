"""The Starlette application: every vendor host, the control plane, one port.

Each vendor host answers by its real ``Host`` header and by a path prefix on the one port (the
vendor's main API host at the root). A request walks one way, and is resolved once: the
outermost middleware (:mod:`emulator.middleware`) resolves it into a
:class:`~emulator.context.RequestContext` (adapter, host, operation, route, key) with the one
route table built here at start-up, applies the fault rules, and serves it
(:func:`emulator.middleware.serve`) -> guard -> vendor adapter -> core -> vendor adapter renders
the reply; whatever a handler raises is rendered at the one error boundary
(:func:`emulator.middleware.serve`), by the context's adapter or the control plane; the middleware
journals the final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp

from emulator.context import RouteTable
from emulator.core import scenarios
from emulator.core.clock import Clock
from emulator.core.faults import FaultRules
from emulator.core.jobs import EngineSpec, Job, JobEngine, default_threads
from emulator.core.journal import Journal
from emulator.core.state import Doc, StateSaver, open_store
from emulator.core.urls import FILES_PATH, OwnUrls
from emulator.core.webhooks import Secrets, WebhookOutbox
from emulator.errors import EmulatorError
from emulator.gcpolicy import IdleCollector, Traffic
from emulator.guard import RequestGuard
from emulator.matte.engine import MatteEngine
from emulator.settings import Settings
from emulator.vendors import load_all
from emulator.vendors.base import VendorAdapter

if TYPE_CHECKING:
    from emulator.core.state.journal import SharedJournal

log = logging.getLogger("emulator")


class Emulator:
    """The wiring: settings, clock, job engine, own URLs, adapters, fault rules, journal.

    It is the :class:`~emulator.vendors.base.VendorPort` the adapters are built with: they
    reach it only through that port (``settings``, ``jobs``, ``clock``, ``secrets``,
    ``faults``, ``guard``, ``urls``, ``accepted_keys``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock = Clock(frozen=settings.virtual_clock)
        self.accepted_keys: frozenset[str] | None = settings.keys
        self.started_at = time.time()
        self._matte: MatteEngine | None = None
        self._matte_lock = threading.Lock()
        #: How the matte engine is built, here and in each matte worker process.
        self.engine_spec = EngineSpec(settings.engine, settings.engine_preset,
                                      settings.models_dir,
                                      settings.matte_threads or default_threads())
        self.jobs = JobEngine(settings, clock=self.clock, matte=self.matte,
                              engine_spec=self.engine_spec)
        self.webhooks = WebhookOutbox(self.clock, journal_size=settings.journal_size)
        self.webhooks.policy = self.jobs.fetch_policy
        self.secrets = Secrets()
        self.jobs.final_listeners.append(self._on_final)
        self.guard = RequestGuard(settings, self.clock)
        self.adapters: dict[str, VendorAdapter] = {
            slug: cls(self) for slug, cls in sorted(load_all().items())
        }
        self.guard.prepare(self.adapters)
        #: The emulator's own URLs: output file URLs, and its URLs read in-process.
        self.urls = OwnUrls(host=settings.host, port=settings.port, files=self.jobs.files,
                            fetch_policy=self.jobs.fetch_policy,
                            vendors=self.adapters.values())
        self.jobs.local_resolver = self.urls.resolve
        self.faults: FaultRules = FaultRules(
            {slug: a.operations() for slug, a in self.adapters.items()})
        # Webhook-stage fault effects act on each delivery being queued.
        self.webhooks.hooks.append(partial(self.faults.act_on_delivery, outbox=self.webhooks))
        self.journal: Journal = Journal(settings.journal_size)
        #: The journal when it is shared through Redis (``--store redis://``), else ``None``.
        self.shared_journal: SharedJournal | None = None
        #: Requests in flight (kept by the fault middleware), for the idle collector.
        self.traffic: Traffic = Traffic()
        #: Full garbage-collection passes while idle; ``serve`` sets it (emulator.gcpolicy).
        self.idle_gc: IdleCollector | None = None
        #: Scenarios loaded since the last reset (summaries, for ``GET /_emulator/scenarios``).
        self.scenarios: list[dict[str, Any]] = []
        self._startup_scenarios = [scenarios.load_file(path, self.faults)
                                   for path in settings.scenarios]
        for scenario in self._startup_scenarios:
            self.load_scenario(scenario)
        #: The state store (``Settings.store``) and, when it is durable, its saver.
        self.state = open_store(settings.store)
        if settings.store.startswith(("redis://", "rediss://")):
            from emulator.core.state.shared import SharedJobs

            self.jobs.shared = SharedJobs(settings.store, self.jobs)
            self.jobs.shared.on_reset = partial(self.reset, store=False)
            self.jobs.shared.faults = self.faults
            self.jobs.shared.secrets = self.secrets
            from emulator.core.state.outbox import SharedOutbox

            # Webhook deliveries in Redis, claimed by every process's outbox loop.
            self.webhooks.shared = SharedOutbox(settings.store, self.webhooks, self._resign,
                                                prepare=self.jobs.shared.prefetch)
            self.webhooks.id_prefix = f"wh_{self.webhooks.shared.token[:6]}_"
            from emulator.core.state.journal import SharedJournal

            # The journal's entries go to a Redis stream too (written in the background).
            self.shared_journal = SharedJournal(settings.journal_size, settings.store)
            self.journal = self.shared_journal
        self.saver: StateSaver | None = None
        if self.state.durable:
            self.saver = self._restore_state()

    def _restore_state(self) -> StateSaver:
        """Build the saver of the durable store, with every document it keeps, and load
        what the store holds (after the start-up scenarios: saved rules replace theirs)."""
        saver = StateSaver(self.state, self.jobs)
        billing = self.jobs.billing
        saver.add_doc("billing", Doc(billing.dump, billing.load, lambda: billing.version))
        saver.add_doc("faults", Doc(self.faults.dump, self.faults.load))
        saver.add_doc("secrets", Doc(self.secrets.dump, self.secrets.load))
        saver.add_doc("clock", Doc(self.clock.dump, self.clock.load))

        def load_scenarios(value: list[dict[str, Any]]) -> None:
            self.scenarios[:] = value

        saver.add_doc("scenarios", Doc(lambda: list(self.scenarios), load_scenarios))
        outbox = self.webhooks
        saver.add_doc("webhooks", Doc(outbox.dump, partial(outbox.load, resign=self._resign),
                                      lambda: outbox.version, after_jobs=True))
        guard = self.guard
        saver.add_doc("violations", Doc(guard.dump, guard.load, lambda: guard.version))
        saver.add_doc("journal", Doc(self.journal.dump, self.journal.load, at_stop_only=True))
        for slug, adapter in self.adapters.items():
            kept = adapter.saved_state()
            if kept is not None:
                saver.add_doc(f"vendor.{slug}", Doc(*kept))
        counts = saver.restore()
        if counts["jobs"]:
            log.info("state %s: restored %d jobs (%d ended: their work was cut short), "
                     "%d files", self.state.url, counts["jobs"], counts["ended"],
                     counts["files"])
        return saver

    def _resign(self, record: dict[str, Any]) -> Callable[[bytes, float], dict[str, str]] | None:
        """The ``sign`` of a restored webhook delivery's message: its vendor signs its job's
        callback again (the secrets are restored too); ``None`` when the job is gone."""
        job = self.jobs.find(record["job_id"])
        adapter = self.adapters.get(record["vendor"])
        message = adapter.webhook(job) if job is not None and adapter is not None else None
        return message.sign if message is not None else None

    def host_names(self) -> list[str]:
        """Every vendor host's real name (``fal.run``, ``queue.fal.run``, ...), sorted."""
        return sorted(self.urls.vendor_hosts)

    def matte(self) -> MatteEngine:
        """The matte engine, built on first use (thread-safe).

        Raises:
            EngineUnavailable: the configured engine cannot be built.
        """
        if self._matte is None:
            with self._matte_lock:
                if self._matte is None:
                    self._matte = self.engine_spec.build()
        return self._matte

    @property
    def engine_name(self) -> str:
        """Name of the matte engine in use (``"(not loaded)"`` before first use)."""
        return self._matte.name if self._matte is not None else "(not loaded)"

    async def _on_final(self, job: Job) -> None:
        adapter = self.adapters.get(job.vendor)
        message = await adapter.final_webhook(job) if adapter is not None else None
        if message is not None and adapter is not None and self.jobs.shared is not None:
            # signed with the secrets every process shares (a round trip only for jobs
            # with a webhook); Redis away: this process's
            with contextlib.suppress(EmulatorError):
                if await self.jobs.shared.share_secrets():
                    message = await adapter.final_webhook(job)
        if message is not None:
            if self.jobs.shared is not None:  # a webhook rule's times are global
                from emulator.core.state.hits import claim_webhook_rule

                await claim_webhook_rule(self.jobs.shared, self.faults, job)
            self.webhooks.enqueue(message, job_id=job.id, vendor=job.vendor,
                                  api_key=job.api_key)

    def load_scenario(self, scenario: scenarios.Scenario) -> dict[str, Any]:
        """Apply a validated scenario (keys, defaults, rules after the stored ones).

        Returns:
            Its summary, with the stored rules and their ids.
        """
        rules = scenarios.apply(scenario, self.faults, self.jobs.billing, self.clock.now())
        summary = scenarios.summary(scenario, rules)
        self.scenarios.append(summary)
        return summary

    def reset(self, *, reload_scenarios: bool = True, store: bool = True) -> None:
        """Forget jobs, files, balances, violations, fault rules, the journal and webhook
        deliveries, and what a durable state store holds (unless ``store`` is false: another
        process sharing it has reset it already); the clock goes back to now. Then the
        scenario files given at start-up are applied again (fresh counters), unless
        ``reload_scenarios`` is false.
        """
        self.jobs.reset()
        if self.saver is not None and store:
            self.saver.clear()
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
    once (:class:`~emulator.context.RouteTable`) and serves it (:func:`emulator.middleware.serve`).

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
        if emulator.jobs.shared is not None:
            await emulator.jobs.shared.start()
            with contextlib.suppress(EmulatorError):  # Redis away: shared at the next write
                await emulator.jobs.shared.share_secrets()
        if emulator.shared_journal is not None:
            emulator.shared_journal.start()
        await emulator.webhooks.start()
        if emulator.saver is not None:
            await emulator.saver.start()
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
            if emulator.jobs.shared is not None:
                await emulator.jobs.shared.stop()
            if emulator.shared_journal is not None:
                await emulator.shared_journal.stop()
            await emulator.webhooks.stop()
            if emulator.saver is not None:
                await emulator.saver.stop()

    app = EmulatorApp(lifespan=lifespan, table=table)
    app.state.emulator = emulator
    return app


def create_app_from_env() -> EmulatorApp:
    """The app of one ``serve --workers N`` worker process (uvicorn's factory): settings from
    ``RMBG_EMULATOR_SETTINGS_JSON`` (what ``serve`` parsed), else from the environment.

    Raises:
        ValueError: settings that do not parse.
    """
    text = os.environ.get(Settings.JSON_ENV)
    return create_app(Settings.from_json(text) if text else Settings.from_env())


def describe(app: Starlette) -> dict[str, Any]:
    """Banner facts for the CLI: engine name, vendors, progression."""
    emulator: Emulator = app.state.emulator
    return {
        "engine": emulator.engine_name,
        "vendors": list(emulator.adapters),
        "progression": emulator.settings.progression,
    }


__all__ = ["FILES_PATH", "Emulator", "Route", "create_app", "describe"]
