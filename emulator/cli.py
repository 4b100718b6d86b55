"""``rmbg-emulator``: serve | remove | models.

``serve`` starts every vendor on one port; ``remove`` runs the same matte engine on local
files; ``models`` lists and installs weights.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DOCS_URL = "README.md (or GET /_emulator/health once running)"


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default=None,
                        help="auto (default): u2netp if its weights are found, else grabcut; "
                             "or u2netp, grabcut, or PATH.onnx")
    parser.add_argument("--engine-preset", default=None,
                        choices=["u2netp", "isnet", "birefnet", "rmbg2"],
                        help="input/output convention of an ONNX file given as --engine")
    parser.add_argument("--models-dir", default=None,
                        help="directory searched first for weights (env RMBG_EMULATOR_MODELS)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="rmbg-emulator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the emulator (all five vendors, one port)")
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
                       help="threads in the image worker pool (default 2)")
    serve.add_argument("--keys", default=None, metavar="FILE",
                       help="accept only the API keys listed in FILE (one a line)")
    serve.add_argument("--tls", action="store_true", default=None,
                       help="serve https with a certificate from a local CA; the CA bundle's "
                            "path is printed (set SSL_CERT_FILE to it in clients)")
    serve.add_argument("--tls-dir", default=None, metavar="DIR",
                       help="where --tls writes ca.pem and the server certificate (default: a "
                            "new temporary directory); an existing CA there is reused")
    serve.add_argument("--log-level", default="warning")

    remove = sub.add_parser("remove", help="remove the background of local image files")
    remove.add_argument("inputs", nargs="+", type=Path, help="image files")
    remove.add_argument("-o", "--output-dir", type=Path, required=True,
                        help="directory for <stem>.png outputs")
    _add_engine_args(remove)

    models = sub.add_parser("models", help="list or install model weights")
    msub = models.add_subparsers(dest="models_command", required=True)
    mlist = msub.add_parser("list", help="show which weights are found where")
    mlist.add_argument("--models-dir", default=None)
    minstall = msub.add_parser("install", help="download and verify weights into the cache")
    minstall.add_argument("name", choices=["u2netp"])
    minstall.add_argument("--from", dest="from_path", type=Path, default=None,
                          help="copy a local file instead of downloading (sha256 checked)")
    minstall.add_argument("--dest", type=Path, default=None,
                          help="directory to install into (default: $U2NET_HOME or ~/.u2net)")
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    """Start uvicorn with every vendor; prints the base URL and the engine in use."""
    import uvicorn

    from emulator.app import create_app
    from emulator.matte.engine import EngineUnavailable
    from emulator.settings import Settings, load_keys_file

    try:
        settings = Settings.from_env(
            host=args.host, port=args.port, engine=args.engine,
            engine_preset=args.engine_preset, models_dir=args.models_dir,
            progression=args.progression, latency=args.latency,
            virtual_clock=args.virtual_clock, workers=args.workers,
            keys=load_keys_file(Path(args.keys)) if args.keys else None,
            tls=args.tls, tls_dir=args.tls_dir,
        )
    except (ValueError, OSError) as exc:
        print(f"rmbg-emulator: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings)
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
    base = f"{'https' if settings.tls else 'http'}://{settings.host}:{settings.port}"
    print(f"rmbg-emulator {_version()} on {base}", flush=True)
    print(f"  engine: {engine.name}" + (
        "  (no u2netp weights found: `rmbg-emulator models install u2netp` for the neural "
        "engine)" if engine.name == "grabcut" and settings.engine == "auto" else ""))
    print(f"  vendors: {', '.join(emulator.adapters)}")
    print(f"  progression: {settings.progression} (latency {settings.latency})")
    for line in tls_lines:
        print(line)
    print(f"  health: {base}/_emulator/health   samples: {base}/_emulator/samples")
    print(f"  docs: {DOCS_URL}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level,
                ssl_certfile=certfile, ssl_keyfile=keyfile)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Write ``<stem>.png`` cut-outs for local files; a progress bar for more than one."""
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
    for path in tqdm(paths, disable=len(paths) < 2, unit="image"):
        try:
            rgb = decode_image(path.read_bytes(), max_pixels=settings.max_input_pixels)
        except (OSError, InputImageError) as exc:
            failures += 1
            tqdm.write(f"{path}: {exc}", file=sys.stderr)
            continue
        png = encode_png(cutout(rgb, engine.alpha(rgb)),
                         compress_level=settings.png_compress_level)
        out = args.output_dir / f"{path.stem}.png"
        out.write_bytes(png)
        if len(paths) < 2:
            print(f"{out} ({rgb.shape[1]}x{rgb.shape[0]}, engine {engine.name})")
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


def _version() -> str:
    from emulator import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rmbg-emulator`` console script."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "remove":
        return cmd_remove(args)
    return cmd_models(args)


if __name__ == "__main__":
    raise SystemExit(main())
