"""Settings: one frozen dataclass, filled from defaults, ``RMBG_EMULATOR_*`` env vars and CLI flags.

Every field has a default that works on a fresh machine with no network and no key.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.core.fetchpolicy import check_allow_entries

ENV_PREFIX = "RMBG_EMULATOR_"
#: Where image work runs (``--matte-pool``): worker processes, or threads of the server.
MATTE_POOLS = ("processes", "threads", "redis")


@dataclass(frozen=True)
class LatencyProfile:
    """How long a job shows each non-final status under ``progression=time``.

    Attributes:
        queued_s: seconds a job shows as queued after submit.
        processing_s: seconds it then shows as processing (at least until its image work ends).
    """

    queued_s: float
    processing_s: float

    @property
    def total_s(self) -> float:
        """Seconds from submit to the final status, ignoring the image work itself."""
        return self.queued_s + self.processing_s


# "vendor": Apiframe's page quotes "about 3s per generation on average" (docs/vendors/apiframe.md).
LATENCY_PROFILES: dict[str, LatencyProfile] = {
    "fast": LatencyProfile(queued_s=0.05, processing_s=0.2),
    "vendor": LatencyProfile(queued_s=0.5, processing_s=2.5),
    "none": LatencyProfile(queued_s=0.0, processing_s=0.0),
}


def parse_progression(value: str) -> tuple[str, int]:
    """Parse ``immediate``, ``polls:N`` or ``time`` into ``(mode, n)``.

    ``immediate`` is ``("polls", 0)``: the first status read shows the final status.

    Raises:
        ValueError: for any other text.
    """
    text = value.strip().lower()
    if text == "immediate":
        return ("polls", 0)
    if text == "time":
        return ("time", 0)
    if text.startswith("polls:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"progression {value!r}: N in polls:N must be an integer") from None
        if n < 0:
            raise ValueError(f"progression {value!r}: N must be >= 0")
        return ("polls", n)
    raise ValueError(f"progression {value!r}: expected immediate, polls:N or time")


@dataclass(frozen=True)
class Settings:
    """Everything the emulator can be told.

    Units: seconds for times, bytes for sizes, pixels for image limits, USD for money.

    Input fetches: ``fetch_timeout_s`` bounds each connect and read, ``fetch_deadline_s`` the
    whole fetch (redirects and body included); ``allow_fetch`` lists CIDRs, addresses or host
    names that input fetches may reach although they are loopback, private or link-local
    (``"any"``: no address check; see :mod:`emulator.core.fetchpolicy`). ``max_wait_s``
    bounds how long one status read or synchronous call (fal.run, Runflow ``sync_mode``)
    waits for a job's image work: past it the read shows the job in progress and the
    synchronous call answers the vendor's time-out error.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "auto"
    engine_preset: str | None = None
    models_dir: str | None = None
    progression: str = "time"
    latency: str = "fast"
    virtual_clock: bool = False
    #: Server processes (``--workers``). More than one needs a store the processes share
    #: (``--store redis://...``); memory and SQLite keep state in one process.
    workers: int = 1
    #: Image workers (``--matte-workers``): threads, each with its worker process when
    #: ``matte_pool`` is ``processes`` (emulator.core.jobs.pool).
    matte_workers: int = 2
    #: ``processes`` (decode, matte, encode in worker processes, started on first use),
    #: ``threads`` (in the server process; the pytest plugin's default) or ``redis``
    #: (separate ``rmbg-emulator worker`` processes take the work from the Redis store).
    matte_pool: str = "processes"
    #: With ``matte_pool`` ``redis``: seconds a job's image work may wait for and take in a
    #: worker before the job fails saying no worker did it (env RMBG_EMULATOR_WORKER_WAIT_S).
    worker_wait_s: float = 120.0
    worker_nice: int = 10
    matte_threads: int = 0
    max_input_bytes: int = 25 * 1024 * 1024
    max_input_pixels: int = 50_000_000
    fetch_timeout_s: float = 15.0
    fetch_deadline_s: float = 30.0
    allow_fetch: tuple[str, ...] = field(default_factory=tuple)
    max_wait_s: float = 60.0
    png_compress_level: int = 1
    keys: frozenset[str] | None = None
    default_balance_usd: float = 1000.0
    price_usd: float = 0.018
    max_jobs: int = 100_000
    max_file_bytes: int = 1024 * 1024 * 1024
    result_cache_bytes: int = 64 * 1024 * 1024
    result_ttl_s: float = 7 * 24 * 3600.0
    journal_size: int = 10_000
    ledger_size: int = 10_000
    tls: bool = False
    tls_dir: str | None = None
    strict: bool = False
    scenarios: tuple[str, ...] = field(default_factory=tuple)
    #: Seconds ``serve`` gives requests in flight to end after SIGTERM/SIGINT (uvicorn's
    #: ``timeout_graceful_shutdown``); then they are cancelled, and so is background work
    #: (input fetches, webhook attempts). A client trickling a body cannot hold the process.
    graceful_shutdown_s: int = 3
    #: When set, ``/_emulator/*`` (except result files and samples) requires
    #: ``Authorization: Bearer <admin_token>`` (env ``RMBG_EMULATOR_ADMIN_TOKEN``).
    admin_token: str | None = None
    #: Where state lives (``--store``, ``--state PATH`` for ``sqlite:PATH``; env
    #: ``RMBG_EMULATOR_STORE``): ``memory`` (default; a restart forgets everything) or
    #: ``sqlite:PATH`` (jobs, result files, balances, rules... survive a restart).
    store: str = "memory"

    def __post_init__(self) -> None:
        from emulator.core.state.base import check_store_url

        check_store_url(self.store)
        parse_progression(self.progression)
        if self.latency not in LATENCY_PROFILES:
            raise ValueError(
                f"latency {self.latency!r}: expected one of {sorted(LATENCY_PROFILES)}"
            )
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.workers > 1 and not self.store.startswith(("redis://", "rediss://")):
            raise ValueError(
                f"--workers {self.workers}: more than one server process needs a store they "
                "share (--store redis://...); the memory store keeps jobs in one process. "
                "For more image workers in this process use --matte-workers N")
        if self.matte_workers < 1:
            raise ValueError("matte_workers must be >= 1")
        if self.matte_pool not in MATTE_POOLS:
            raise ValueError(f"matte_pool {self.matte_pool!r}: expected one of "
                             f"{', '.join(MATTE_POOLS)}")
        if self.matte_pool == "redis" and not self.store.startswith(("redis://", "rediss://")):
            raise ValueError("--matte-pool redis: image work goes through the Redis store to "
                             "`rmbg-emulator worker` processes; give --store redis://...")
        if not 0 <= self.worker_nice <= 19:
            raise ValueError("worker_nice must be 0..19")
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError("png_compress_level must be 0..9")
        if self.result_cache_bytes < 0:
            raise ValueError("result_cache_bytes must be >= 0")
        if self.ledger_size < 0:
            raise ValueError("ledger_size must be >= 0")
        for name in ("fetch_timeout_s", "fetch_deadline_s", "max_wait_s", "worker_wait_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        check_allow_entries(self.allow_fetch)
        if self.graceful_shutdown_s < 0:
            raise ValueError("graceful_shutdown_s must be >= 0")
        if self.admin_token is not None and (
                not self.admin_token.strip() or not self.admin_token.isprintable()
                or not self.admin_token.isascii()):
            raise ValueError("admin_token must be printable ASCII text, not blank")

    @functools.cached_property
    def json_body_limit(self) -> int:
        """The largest JSON request body accepted (bytes): the base64 text of a
        ``max_input_bytes`` file plus 1 MiB (36,001,112, about 34.3 MiB, for the default
        25 MiB); see :func:`emulator.jsonbody.json_body_limit`."""
        from emulator.jsonbody import json_body_limit

        return json_body_limit(self.max_input_bytes)

    @property
    def latency_profile(self) -> LatencyProfile:
        """The :class:`LatencyProfile` named by ``latency``."""
        return LATENCY_PROFILES[self.latency]

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    #: The environment variable that hands ``serve --workers N``'s settings to each worker
    #: process (:meth:`to_json`, :func:`emulator.app.create_app_from_env`).
    JSON_ENV = "RMBG_EMULATOR_SETTINGS_JSON"

    def to_json(self) -> str:
        """These settings as JSON (read back by :meth:`from_json`)."""
        values = dataclasses.asdict(self)
        values["keys"] = sorted(self.keys) if self.keys is not None else None
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """The settings of :meth:`to_json`'s ``text``.

        Raises:
            ValueError: not such JSON, or a value :meth:`__post_init__` refuses.
        """
        values = json.loads(text)
        for f in dataclasses.fields(cls):
            if isinstance(values.get(f.name), list):
                values[f.name] = (frozenset(values[f.name]) if f.name == "keys"
                                  else tuple(values[f.name]))
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``RMBG_EMULATOR_*`` variables, then ``overrides`` (CLI flags).

        ``RMBG_EMULATOR_KEYS_FILE`` names a file of accepted keys, one a line (strict key
        mode); ``RMBG_EMULATOR_MODELS`` names the weights directory;
        ``RMBG_EMULATOR_SCENARIOS`` lists scenario files (``os.pathsep``-separated); a
        tuple field such as ``RMBG_EMULATOR_ALLOW_FETCH`` takes comma- or space-separated
        items.

        Raises:
            ValueError: a variable that does not parse.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or f.name in ("keys", "scenarios"):
                continue
            values[f.name] = _coerce(f.name, str(f.type), raw)
        if env.get(ENV_PREFIX + "MODELS"):
            values["models_dir"] = env[ENV_PREFIX + "MODELS"]
        scenario_files = env.get(ENV_PREFIX + "SCENARIOS")
        if scenario_files:
            values["scenarios"] = tuple(p for p in scenario_files.split(os.pathsep) if p)
        keys_file = env.get(ENV_PREFIX + "KEYS_FILE")
        if keys_file:
            values["keys"] = load_keys_file(Path(keys_file))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def load_keys_file(path: Path) -> frozenset[str]:
    """Read accepted API keys, one a line; blank lines and ``#`` comments are skipped.

    Raises:
        OSError: the file cannot be read.
    """
    keys = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.add(line)
    return frozenset(keys)


def _coerce(name: str, type_name: str, raw: str) -> Any:
    if type_name.startswith("tuple"):
        return tuple(item for item in raw.replace(",", " ").split() if item)
    if type_name.endswith("| None") and not raw.strip():
        return None  # an empty variable means "not set"
    if "bool" in type_name:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if type_name.startswith("int"):
        return int(raw)
    if type_name.startswith("float"):
        return float(raw)
    return raw
