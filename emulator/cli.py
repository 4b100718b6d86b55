"""``rmbg-emulator``: serve | remove | scenario | models | contracts | fuzz-client.

The parser's own texts (``--help``) are plain text: :data:`DESCRIPTION` below, not this
docstring, is the top-level description.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emulator import INSTALL_TEST_EXTRA

DOCS_URL = "README.md (or GET /_emulator/health once running)"

#: The top-level ``--help`` text (plain text, no reStructuredText).
DESCRIPTION = (
    "An offline stand-in for the hosted background-removal APIs (Apiframe, Pixazo, GMI Cloud, "
    "fal.ai, Runflow, Bria). 'serve' starts every vendor on one port; 'remove' runs the same "
    "matte engine on local files; 'scenario check' validates scenario files; 'models' lists "
    "and installs weights; 'contracts' lists, shows, validates and checks the OpenAPI "
    "contracts; 'fuzz-client' runs the property-based client checks against a client given "
    "as a command, in any language.")


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default=None,
                        help="auto (default): u2netp (its weights ship with the package); "
                             "or u2netp, grabcut, or PATH.onnx")
    parser.add_argument("--engine-preset", default=None,
                        choices=["u2netp", "isnet", "birefnet", "rmbg2"],
                        help="input/output convention of an ONNX file given as --engine")
    parser.add_argument("--models-dir", default=None,
                        help="directory searched first for weights (env RMBG_EMULATOR_MODELS)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="rmbg-emulator", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the installed package's version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the emulator (every vendor and the control "
                                         "plane, one port)")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    _add_engine_args(serve)
    serve.add_argument("--progression", default=None,
                       help="immediate | polls:N | time (default time)")
    serve.add_argument("--latency", default=None, choices=["fast", "vendor", "none"],
                       help="latency profile for --progression time (default fast; "
                            "vendor: about 3 s like the vendors)")
    serve.add_argument("--virtual-clock", action="store_true", default=None,
                       help="time moves only through POST /_emulator/clock/advance")
    serve.add_argument("--workers", type=int, default=None,
                       help="server processes (default 1; more need a shared store, "
                            "--store redis://...)")
    serve.add_argument("--matte-workers", type=int, default=None, metavar="N",
                       help="image workers: decode, matte and encode run N at a time "
                            "(default 2; env RMBG_EMULATOR_MATTE_WORKERS)")
    serve.add_argument("--matte-pool", default=None, choices=["processes", "threads", "redis"],
                       help="where image work runs: worker processes (default; started on "
                            "first use, the model loaded once in each), threads of the "
                            "server process, or (redis, with --store redis://...) separate "
                            "`rmbg-emulator worker` processes on any machine "
                            "(env RMBG_EMULATOR_MATTE_POOL)")
    serve.add_argument("--keys", default=None, metavar="FILE",
                       help="accept only the API keys listed in FILE (one a line)")
    serve.add_argument("--strict", action="store_true", default=None,
                       help="refuse requests that break their vendor's contract with the "
                            "vendor's 400/422 (violations are listed at /_emulator/violations "
                            "either way)")
    serve.add_argument("--tls", action="store_true", default=None,
                       help="serve https with a certificate from a local CA; the CA bundle's "
                            "path is printed (set SSL_CERT_FILE to it in clients)")
    serve.add_argument("--tls-dir", default=None, metavar="DIR",
                       help="where --tls writes ca.pem and the server certificate (default: a "
                            "new temporary directory); an existing CA there is reused")
    serve.add_argument("--scenario", action="append", default=None, metavar="FILE",
                       help="load a scenario YAML file (keys, balances, limits, fault rules); "
                            "repeatable; applied again after each POST /_emulator/reset")
    serve.add_argument("--allow-fetch", action="append", default=None,
                       metavar="CIDR_OR_HOST",
                       help="let input fetches reach this loopback/private/link-local CIDR, "
                            "address or host name (repeatable; 'any' turns the address check "
                            "off; env RMBG_EMULATOR_ALLOW_FETCH). By default only the "
                            "loopback address the emulator serves on is allowed")
    serve.add_argument("--fetch-deadline", type=float, default=None, metavar="SECONDS",
                       help="deadline for a whole input fetch, redirects and body included "
                            "(default 30)")
    serve.add_argument("--max-wait", type=float, default=None, metavar="SECONDS",
                       help="longest a status read or sync call (fal.run, Runflow sync_mode) "
                            "waits for a job's image work; past it the job shows in progress "
                            "and the sync call answers 504 (default 60)")
    serve.add_argument("--graceful-shutdown", type=int, default=None, metavar="SECONDS",
                       help="after SIGTERM/SIGINT, give requests in flight this long to end, "
                            "then cancel them and any background work (default 3; env "
                            "RMBG_EMULATOR_GRACEFUL_SHUTDOWN_S)")
    serve.add_argument("--admin-token", default=None, metavar="TOKEN",
                       help="require 'Authorization: Bearer TOKEN' on the control plane "
                            "/_emulator/* (result files and samples stay open; env "
                            "RMBG_EMULATOR_ADMIN_TOKEN)")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False,
                       help="print one line per request to stdout: method, path, status, "
                            "milliseconds (default off, as WireMock without --verbose: a "
                            "stdout pipe nobody reads must not fill up)")
    serve.add_argument("--store", default=None, metavar="URL",
                       help="where state lives: memory (default; a restart forgets "
                            "everything) or sqlite:PATH (jobs, result files, balances, fault "
                            "rules survive a restart; env RMBG_EMULATOR_STORE)")
    serve.add_argument("--state", default=None, metavar="PATH",
                       help="shorthand for --store sqlite:PATH")
    serve.add_argument("--log-level", default="warning",
                       choices=["critical", "error", "warning", "info", "debug", "trace"],
                       help="uvicorn's log level (default warning); see --access-log for "
                            "one line per request")

    worker = sub.add_parser(
        "worker", help="do the image work of `serve --store redis://... --matte-pool redis` "
                       "(run one or more, on any machine that reaches the Redis)")
    worker.add_argument("--store", required=True, metavar="URL",
                        help="the Redis the servers use (redis://HOST:PORT/DB)")
    worker.add_argument("--burst", action="store_true",
                        help="stop once the queue is empty (scripts, tests)")
    worker.add_argument("--name", default=None, help="this worker's name in RQ")

    remove = sub.add_parser("remove", help="remove the background of local image files")
    remove.add_argument("inputs", nargs="+", type=Path, help="image files")
    remove.add_argument("-o", "--output-dir", type=Path, required=True,
                        help="directory for <stem>.png outputs (inputs sharing a stem get "
                             "<stem>-2.png, <stem>-3.png, ...; each output path is printed)")
    _add_engine_args(remove)

    scenario = sub.add_parser("scenario", help="check scenario files without serving")
    ssub = scenario.add_subparsers(dest="scenario_command", required=True)
    scheck = ssub.add_parser("check", help="validate scenario YAML files; print their rules")
    scheck.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="scenario YAML files (keys, balances, limits, fault steps)")

    models = sub.add_parser("models", help="list or install model weights")
    msub = models.add_subparsers(dest="models_command", required=True)
    mlist = msub.add_parser("list", help="show which weights are found where")
    mlist.add_argument("--models-dir", default=None, metavar="DIR",
                       help="directory searched first for weights (env RMBG_EMULATOR_MODELS)")
    minstall = msub.add_parser("install", help="download and verify weights into the cache")
    minstall.add_argument("name", choices=["u2netp"], help="the weights to install")
    minstall.add_argument("--from", dest="from_path", type=Path, default=None,
                          help="copy a local file instead of downloading (sha256 checked)")
    minstall.add_argument("--dest", type=Path, default=None,
                          help="directory to install into (default: $U2NET_HOME or ~/.u2net)")

    contracts = sub.add_parser("contracts", help="list, show or check the OpenAPI contracts")
    csub = contracts.add_subparsers(dest="contracts_command", required=True)
    csub.add_parser("list", help="the contracts, with their operations")
    cshow = csub.add_parser("show", help="print one contract (YAML)")
    cshow.add_argument("name", metavar="VENDOR", help="a vendor slug, or emulator")
    cvalidate = csub.add_parser(
        "validate", help="validate contracts as OpenAPI 3.1 (openapi-spec-validator)",
        description="Load every contract (or the ones named), compile it as the emulator "
                    "does and validate it against the OpenAPI 3.1 schema with "
                    "openapi-spec-validator (the test extra). Exit status 0 when all are "
                    "valid, 1 when one is not, 2 when the validator is not installed.")
    cvalidate.add_argument("names", nargs="*", metavar="VENDOR",
                           help="contracts to validate (default: all)")
    ccheck = csub.add_parser(
        "check", help="run the property-based suite (schemathesis) against a base URL",
        description="Run the contract's schemathesis suite (fixed seed, bounded examples, "
                    "every check, stateful run along the links) against BASE_URL: the "
                    "emulator, another mock, or the real vendor with your own key. Exit "
                    "status 0 when every check passed.")
    ccheck.add_argument("name", metavar="VENDOR", help="a vendor slug, or emulator")
    ccheck.add_argument("--base-url", required=True, metavar="URL",
                        help="where to send the requests (http://127.0.0.1:8000, "
                             "https://gateway.pixazo.ai, ...)")
    ccheck.add_argument("--api-key", default=None, metavar="KEY",
                        help="put in the vendor's auth header (default: rmbg-contract-check)")
    ccheck.add_argument("--image-url", default=None, metavar="URL",
                        help="use this image in every image field (default: tiny data: URIs; "
                             "give a public URL for a real vendor)")
    ccheck.add_argument("--webhook-url", default=None, metavar="URL",
                        help="use this in every webhook field (default: a loopback URL "
                             "nobody listens on)")
    ccheck.add_argument("--max-examples", type=int, default=None, metavar="N",
                        help="test cases per operation and phase (default 25)")
    ccheck.add_argument("--seed", type=int, default=None, help="random seed (default 42)")
    ccheck.add_argument("--phases", default=None,
                        help="comma-separated: examples,coverage,fuzzing,stateful (default all)")
    ccheck.add_argument("--exclude-checks", default=None, metavar="NAMES",
                        help="comma-separated schemathesis checks to skip")
    ccheck.add_argument("--report-dir", type=Path, default=None, metavar="DIR",
                        help="also write a JUnit XML report there")
    ccheck.add_argument("--admin-token", default=None, metavar="TOKEN",
                        help="the emulator's admin token, sent on its control plane "
                             "(/_emulator/*) (default: env RMBG_EMULATOR_ADMIN_TOKEN)")
    fuzz = sub.add_parser(
        "fuzz-client", help="property-based checks of a client in any language, run as a "
                            "command",
        usage="rmbg-emulator fuzz-client VENDOR [options] -- COMMAND [ARGS...]",
        description="Start an emulator on a free port and, for each behaviour drawn from the "
                    "vendor's contract, run COMMAND with EMULATOR_URL (fal's queue host is "
                    "$EMULATOR_URL/queue), EMULATOR_VENDOR, EMULATOR_API_KEY, "
                    "EMULATOR_IMAGE_URL, EMULATOR_OUTPUT (write the cut-out PNG there) and "
                    "EMULATOR_DEADLINE (seconds). Exit status 0 of COMMAND claims success. "
                    "Exit status: 0 when every property held, 1 when one broke, 2 on a "
                    "usage error.")
    fuzz.add_argument("vendor", metavar="VENDOR", help="a vendor slug (pixazo, fal, ...)")
    fuzz.add_argument("--examples", type=int, default=15, metavar="N",
                      help="behaviours to draw (default 15; shrinking runs come on top)")
    fuzz.add_argument("--seed", type=int, default=None, metavar="S",
                      help="random seed (default: derandomised, the same examples each time)")
    fuzz.add_argument("--report", type=Path, default=None, metavar="DIR",
                      help="on a failure write behaviour.yaml, journal.json and replay.sh "
                           "there")
    fuzz.add_argument("--deadline", type=float, default=30.0, metavar="SEC",
                      help="seconds one run of COMMAND may take; it is killed past it "
                           "(default 30)")
    fuzz.add_argument("--property", dest="only", nargs="+", action="extend", default=[],
                      metavar="NAME", help="check only these properties (terminates, "
                                           "honours_retry_after, polls_politely, "
                                           "speaks_contract, never_false_success, pays_once)")
    fuzz.add_argument("--no-property", dest="skip", nargs="+", action="extend", default=[],
                      metavar="NAME", help="do not check these properties")
    fuzz.add_argument("--family", dest="families", nargs="+", action="extend", default=[],
                      metavar="NAME", help="draw only these behaviour families (rate-limit, "
                                           "server-error, connection, body, latency, "
                                           "job-path, variation, payment, job-failure, "
                                           "job-end, image, webhook; default all)")
    fuzz.add_argument("--shrink-time", dest="shrink_s", type=float, default=60.0,
                      metavar="SEC", help="real seconds shrinking a failure may take; then "
                                          "the smallest failure found is reported "
                                          "(default 60)")
    return parser


def cmd_fuzz_client(args: argparse.Namespace, command: Sequence[str]) -> int:
    """``fuzz-client VENDOR [options] -- COMMAND``: :func:`emulator.testing.fuzzclient.fuzz_client`.
    Returns 0 (every property held), 1 (one broke) or 2 (usage error, hypothesis missing)."""
    try:
        from emulator.testing.fuzzclient import FuzzOptions, fuzz_client
    except ImportError as exc:
        print(f"rmbg-emulator: fuzz-client needs hypothesis ({INSTALL_TEST_EXTRA}): "
              f"{exc}", file=sys.stderr)
        return 2
    options = FuzzOptions(examples=args.examples, seed=args.seed, report=args.report,
                          deadline_s=args.deadline, only=tuple(args.only),
                          skip=tuple(args.skip), families=tuple(args.families),
                          shrink_s=args.shrink_s)
    return fuzz_client(args.vendor, command, options)


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``fuzz-client ... -- COMMAND``: the arguments before the first ``--`` and the command
    after it (``None`` without ``--``); other sub-commands are left whole."""
    if "--" in argv and "fuzz-client" in argv[:argv.index("--")]:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, None


def store_flag(args: argparse.Namespace) -> str | None:
    """The store named by ``--store`` or ``--state PATH`` (``sqlite:PATH``); ``None``: neither.

    Raises:
        ValueError: both were given.
    """
    if args.state is not None and args.store is not None:
        raise ValueError("--state PATH is short for --store sqlite:PATH: give one of them")
    return f"sqlite:{args.state}" if args.state is not None else args.store


def cmd_serve(args: argparse.Namespace) -> int:
    """Bind ``--host``/``--port`` (:func:`listen`), print the banner and a "Listening on URL"
    line, then serve every vendor with uvicorn on that socket (:func:`run_server`).

    Returns 0 after a clean stop, 1 when the port cannot be bound (only the bind error is
    printed) or the server fails to start, 2 for bad flags or a missing engine."""
    import sqlite3

    from emulator import gcpolicy
    from emulator.app import create_app
    from emulator.matte.engine import EngineUnavailable
    from emulator.settings import Settings, load_keys_file

    try:
        settings = Settings.from_env(
            host=args.host, port=args.port, engine=args.engine,
            engine_preset=args.engine_preset, models_dir=args.models_dir,
            progression=args.progression, latency=args.latency,
            virtual_clock=args.virtual_clock, workers=args.workers,
            matte_workers=args.matte_workers, matte_pool=args.matte_pool,
            keys=load_keys_file(Path(args.keys)) if args.keys else None, strict=args.strict,
            tls=args.tls, tls_dir=args.tls_dir,
            allow_fetch=tuple(args.allow_fetch) if args.allow_fetch else None,
            fetch_deadline_s=args.fetch_deadline, max_wait_s=args.max_wait,
            scenarios=tuple(args.scenario) if args.scenario else None,
            graceful_shutdown_s=args.graceful_shutdown, admin_token=args.admin_token,
            store=store_flag(args),
        )
        app = create_app(settings)
    except (ValueError, OSError, sqlite3.Error) as exc:
        print(f"rmbg-emulator: {exc}", file=sys.stderr)
        return 2
    emulator = app.state.emulator
    try:
        engine = emulator.matte()
    except EngineUnavailable as exc:
        print(f"rmbg-emulator: {exc}", file=sys.stderr)
        return 2
    certfile = keyfile = None
    tls_lines: list[str] = []
    if settings.tls:
        from emulator.tls import create_tls_files

        try:
            tls = create_tls_files([*emulator.host_names(), settings.host], settings.tls_dir)
        except (OSError, ValueError) as exc:
            print(f"rmbg-emulator: --tls: {exc}", file=sys.stderr)
            return 2
        certfile, keyfile = str(tls.cert_chain), str(tls.private_key)
        hostport = f"{settings.host}:{settings.port}"
        tls_lines = [
            f"  tls: CA bundle {tls.ca_bundle}",
            f"       export SSL_CERT_FILE={tls.ca_bundle}",
            f"       fal-client: export FAL_RUN_HOST={hostport} "
            f"FAL_QUEUE_RUN_HOST={hostport}/queue",
        ]
    try:
        sock = listen(settings.host, settings.port)
    except OSError as exc:
        # Only the bind error: no banner claims a URL that something else answers on.
        print(f"rmbg-emulator: cannot listen on {settings.host}:{settings.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    base = f"{'https' if settings.tls else 'http'}://{settings.host}:{settings.port}"
    print(f"rmbg-emulator {_version()} on {base}", flush=True)
    print(f"  engine: {engine.name}")
    print(f"  vendors: {', '.join(emulator.adapters)}")
    print(f"  progression: {settings.progression} (latency {settings.latency})"
          + ("  strict: requests are checked against the contracts" if settings.strict
             else ""))
    print(f"  state: {settings.store}" + (" (a restart forgets everything; --state PATH keeps "
                                          "it)" if settings.store == "memory" else ""))
    print("  image work: " + {
        "processes": f"{settings.matte_workers} worker processes, started on first use",
        "threads": f"{settings.matte_workers} threads of this process",
        "redis": f"`rmbg-emulator worker --store {settings.store}` processes "
                 f"({settings.matte_workers} jobs at a time from here)",
    }[settings.matte_pool] + " (--matte-workers, --matte-pool)")
    policy = emulator.jobs.fetch_policy
    print("  input fetches: " + (
        "any address (--allow-fetch any)" if policy.allow_any else
        "loopback, private and link-local addresses refused, except "
        + (", ".join([str(n) for n in policy.networks] + sorted(policy.hosts)) or "none")
        + f" (--allow-fetch); deadline {settings.fetch_deadline_s:g} s"))
    for line in tls_lines:
        print(line)
    if settings.admin_token is not None:
        print("  control plane: /_emulator/* requires 'Authorization: Bearer <admin token>' "
              "(result files and samples stay open)")
    elif not is_loopback(settings.host):
        print(f"rmbg-emulator: warning: --host {settings.host} is not a loopback address: the "
              "control plane (/_emulator/*: reset, faults, keys, clock, journal) is open to "
              "the network; start with --admin-token TOKEN (env RMBG_EMULATOR_ADMIN_TOKEN) "
              "to require a token", file=sys.stderr, flush=True)
    for loaded in emulator.scenarios:
        print(f"  scenario: {loaded['name']} ({len(loaded['rules'])} fault rules, "
              f"{len(loaded['keys'])} keys)")
    print(f"  health: {base}/_emulator/health   samples: {base}/_emulator/samples")
    print(f"  dashboard: {base}/_emulator/ui"
          + ("  (log in: /_emulator/ui/login)" if settings.admin_token is not None else ""))
    print(f"  docs: {DOCS_URL}")
    print(f"  access log: {'on' if args.access_log else 'off (--access-log)'}")
    # The socket is bound and listening: connections queue from here on.
    print(f"Listening on {base} (Ctrl+C to stop)", flush=True)
    # Full garbage-collection passes while idle, not in the middle of a run of requests
    # (emulator.gcpolicy; docs/PERFORMANCE.md, "Garbage collector").
    gcpolicy.install()
    emulator.idle_gc = gcpolicy.IdleCollector(emulator.traffic)
    listener = None
    asgi: Any = app
    if args.access_log:
        from emulator.accesslog import AccessLog, start_logger

        logger, listener = start_logger()
        asgi = AccessLog(app, logger)
    if settings.workers > 1:
        # N uvicorn worker processes on the one socket, each building its app from these
        # settings (emulator.app.create_app_from_env); state is shared through the store.
        os.environ[Settings.JSON_ENV] = settings.to_json()
        asgi = "emulator.app:create_app_from_env"
    try:
        run_server(asgi, sock=sock, host=settings.host, port=settings.port,
                   log_level=args.log_level, ssl_certfile=certfile, ssl_keyfile=keyfile,
                   timeout_graceful_shutdown=settings.graceful_shutdown_s,
                   workers=settings.workers)
    except ServerStartError as exc:
        print(f"rmbg-emulator: {exc}", file=sys.stderr)
        return 1
    finally:
        sock.close()
        if listener is not None:
            listener.stop()
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, for :func:`run_server`: IPv6 when
    ``host`` has a colon, else IPv4 (so ``localhost`` is 127.0.0.1), backlog 2048 and
    ``SO_REUSEADDR``, as uvicorn binds its own (``uvicorn.Config.bind_socket``).

    Raises:
        OSError: the address is in use, cannot be assigned, or the name does not resolve.
    """
    name = host.strip("[]")
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    return socket.create_server((name, port), family=family, backlog=2048)


class ServerStartError(RuntimeError):
    """uvicorn stopped without having started (its own error is logged above)."""


def run_server(app: Any, *, sock: socket.socket, **config: Any) -> None:
    """Serve ``app`` with uvicorn on an already listening ``sock`` (``config``: keyword
    arguments of :class:`uvicorn.Config`; uvicorn's own access log is off: ``--access-log``
    is ours) until it is stopped (SIGINT, SIGTERM).

    Raises:
        ServerStartError: the server never started (the lifespan's start-up failed).
    """
    import uvicorn

    if isinstance(app, str):  # --workers N: an import string of an app factory
        from uvicorn.supervisors import Multiprocess

        multi = uvicorn.Config(app, access_log=False, factory=True, **config)
        Multiprocess(multi, sockets=[sock]).run()
        return
    server = uvicorn.Server(uvicorn.Config(app, access_log=False, **config))
    server.run(sockets=[sock])
    if not server.started:
        raise ServerStartError("the server did not start")


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine only: ``localhost``, 127.0.0.0/8, ``::1``.

    Anything else (``0.0.0.0``, ``::``, a LAN address, another host name) is open to the
    network.
    """
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def output_names(inputs: Sequence[Path]) -> list[str]:
    """The output file name (``<stem>.png``) of each input, in order, none repeated.

    Inputs that share a stem (``a/photo.jpg b/photo.jpg``, ``photo.jpg photo.webp``) never
    overwrite one another: the first keeps ``<stem>.png``, later ones get ``<stem>-2.png``,
    ``<stem>-3.png``, ..., skipping any name another input's own stem takes.
    """
    taken = {path.stem for path in inputs}
    seen: set[str] = set()
    names = []
    for path in inputs:
        stem = path.stem
        if stem in seen:
            n = 2
            while f"{path.stem}-{n}" in taken:
                n += 1
            stem = f"{path.stem}-{n}"
            taken.add(stem)
        seen.add(stem)
        names.append(f"{stem}.png")
    return names


def cmd_worker(args: argparse.Namespace) -> int:
    """Take image work from ``--store`` (:func:`emulator.core.jobs.queue.run_worker`) until
    SIGINT/SIGTERM (or the queue is empty, with ``--burst``).

    Returns 0 after a clean stop, 2 for a store that is not Redis, 1 when Redis cannot be
    reached."""
    import redis

    from emulator.core.jobs.queue import QUEUE_NAME, run_worker

    if not args.store.startswith(("redis://", "rediss://")):
        print(f"rmbg-emulator worker: --store {args.store}: workers take image work from a "
              "Redis store (redis://HOST:PORT/DB), the one `serve --store` uses",
              file=sys.stderr)
        return 2
    print(f"rmbg-emulator {_version()} worker: image work from {args.store} "
          f"(queue {QUEUE_NAME})", flush=True)
    try:
        run_worker(args.store, burst=args.burst, name=args.name)
    except redis.RedisError as exc:
        print(f"rmbg-emulator worker: {args.store}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Write ``<stem>.png`` cut-outs for local files (names made unique by
    :func:`output_names`) and print each output path; a progress bar for more than one."""
    from tqdm import tqdm

    from emulator.core.inputs import decode_image
    from emulator.errors import InputImageError
    from emulator.matte.compose import cutout, encode_png
    from emulator.matte.engine import EngineUnavailable, create_engine
    from emulator.settings import Settings

    settings = Settings.from_env(engine=args.engine, engine_preset=args.engine_preset,
                                 models_dir=args.models_dir)
    try:
        engine = create_engine(settings.engine, preset=settings.engine_preset,
                               models_dir=settings.models_dir)
    except EngineUnavailable as exc:
        print(f"rmbg-emulator: {exc}", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    paths: Sequence[Path] = args.inputs
    for path, name in tqdm(list(zip(paths, output_names(paths), strict=True)),
                           disable=len(paths) < 2, unit="image"):
        try:
            rgb = decode_image(path.read_bytes(), max_pixels=settings.max_input_pixels)
        except (OSError, InputImageError) as exc:
            failures += 1
            tqdm.write(f"{path}: {exc}", file=sys.stderr)
            continue
        png = encode_png(cutout(rgb, engine.alpha(rgb)),
                         compress_level=settings.png_compress_level)
        out = args.output_dir / name
        out.write_bytes(png)
        tqdm.write(f"{out} ({rgb.shape[1]}x{rgb.shape[0]}, engine {engine.name})",
                   file=sys.stdout)
    return 1 if failures else 0


def cmd_models(args: argparse.Namespace) -> int:
    """``models list`` and ``models install``."""
    from emulator.matte import models

    if args.models_command == "list":
        for name, info in models.KNOWN.items():
            found = models.locate(name, models_dir=args.models_dir)
            print(f"{name}: {'found at ' + str(found) if found else 'not found'}")
            print(f"  searched: {', '.join(str(d) for d in models.search_dirs(args.models_dir))}")
            print(f"  sha256 {info.sha256}; licence {info.licence}")
        return 0
    try:
        models.install(args.name, from_path=args.from_path, dest_dir=args.dest)
    except models.ModelInstallError as exc:
        print(f"rmbg-emulator: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_scenario(args: argparse.Namespace) -> int:
    """``scenario check FILE...``: validate each file against the vendors' operations and print
    its rules, one a line in the rule grammar (:meth:`FaultRule.to_text`), in the order they
    are tried. Returns 0, or 1 when a file does not load (its error on stderr)."""
    from emulator.app import Emulator
    from emulator.core import scenarios
    from emulator.settings import Settings

    emulator = Emulator(Settings())
    failures = 0
    for path in args.files:
        try:
            scenario = scenarios.load_file(path, emulator.faults)
        except scenarios.ScenarioError as exc:
            failures += 1
            print(f"rmbg-emulator: {exc}", file=sys.stderr)
            continue
        print(f"{path}: ok: {scenario.name}: {len(scenario.keys)} keys, "
              f"{len(scenario.rules)} rules")
        for i, spec in enumerate(scenario.rules, 1):
            rule = emulator.faults.parse(spec, source=f"scenario:{scenario.name}")
            print(f"  {i}. {rule.to_text()}")
    return 1 if failures else 0


def cmd_contracts(args: argparse.Namespace) -> int:
    """``contracts list``, ``contracts show VENDOR``, ``contracts validate [VENDOR...]`` and
    ``contracts check VENDOR``."""
    from emulator import contracts

    if args.contracts_command == "validate":
        return _contracts_validate(args.names)
    try:
        if args.contracts_command == "list":
            found = contracts.load_all()
            print(f"contracts in {contracts.contracts_dir()}:")
            for c in found:
                print(f"  {c.name:<10} {c.title} (version {c.version})")
                for op in c.operations.values():
                    print(f"      {op.method:<6} {op.prefixes[0]}{op.path}  [{op.operation_id}]")
            return 0
        if args.contracts_command == "show":
            sys.stdout.write(contracts.text(args.name))
            return 0
    except contracts.ContractError as exc:
        print(f"rmbg-emulator: {exc}", file=sys.stderr)
        return 2
    return _contracts_check(args)


def _contracts_validate(names: Sequence[str]) -> int:
    """Validate contracts ``names`` (all when empty): each one loads and compiles
    (:func:`emulator.contracts.load`) and its document passes openapi-spec-validator.
    Prints one line per contract; returns 0 when all are valid, 1 when one is not, 2 when
    openapi-spec-validator is missing or no contract is found."""
    from emulator import contracts

    try:
        from openapi_spec_validator import validate
        from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
    except ImportError:
        print("rmbg-emulator: contracts validate needs openapi-spec-validator "
              f"({INSTALL_TEST_EXTRA})", file=sys.stderr)
        return 2
    try:
        chosen = list(names) or contracts.names()
    except contracts.ContractError as exc:
        print(f"rmbg-emulator: {exc}", file=sys.stderr)
        return 2
    failures = 0
    for name in chosen:
        try:
            contract = contracts.load(name)
            validate(contract.document)
        except contracts.ContractError as exc:
            failures += 1
            print(f"{name}: invalid: {exc}", file=sys.stderr)
        except OpenAPIValidationError as exc:
            failures += 1
            where = "/".join(str(p) for p in exc.path)
            first = (str(exc.message).splitlines() or [""])[0]
            print(f"{name}: invalid OpenAPI 3.1 at /{where}: {first}", file=sys.stderr)
        else:
            print(f"{name}: ok ({contract.path})")
    return 1 if failures else 0


def _contracts_check(args: argparse.Namespace) -> int:
    from emulator import contracts
    from emulator.testing.contract_check import PHASES, CheckOptions, run

    defaults = CheckOptions()
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip()) if args.phases \
        else PHASES
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        print(f"rmbg-emulator: unknown phase(s) {', '.join(unknown)}; "
              f"choose from {', '.join(PHASES)}", file=sys.stderr)
        return 2
    options = CheckOptions(
        max_examples=args.max_examples or defaults.max_examples,
        seed=defaults.seed if args.seed is None else args.seed,
        phases=phases,
        exclude_checks=tuple(c.strip() for c in (args.exclude_checks or "").split(",")
                             if c.strip()),
        image_url=args.image_url, webhook_url=args.webhook_url, report_dir=args.report_dir,
        admin_token=args.admin_token or os.environ.get("RMBG_EMULATOR_ADMIN_TOKEN") or None,
    )
    try:
        return run(args.name, args.base_url, api_key=args.api_key, options=options)
    except contracts.ContractError as exc:
        print(f"rmbg-emulator: {exc}", file=sys.stderr)
        return 2


def _version() -> str:
    """The installed distribution's version (importlib.metadata), else ``__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    from emulator import __version__

    try:
        return version("rmbg-emulator")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rmbg-emulator`` console script."""
    head, command = _split_command(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args, extra = parser.parse_known_args(head)
    if args.command == "fuzz-client" and not command:
        parser.error("fuzz-client: give the client's command after --: "
                     "rmbg-emulator fuzz-client VENDOR [options] -- COMMAND [ARGS...]")
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    if args.command == "fuzz-client":
        return cmd_fuzz_client(args, command or [])
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "worker":
        return cmd_worker(args)
    if args.command == "remove":
        return cmd_remove(args)
    if args.command == "scenario":
        return cmd_scenario(args)
    if args.command == "contracts":
        return cmd_contracts(args)
    return cmd_models(args)


if __name__ == "__main__":
    raise SystemExit(main())
