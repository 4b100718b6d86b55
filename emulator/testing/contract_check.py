"""The property-based contract suite: schemathesis against any base URL, per contract.

``rmbg-emulator contracts check VENDOR --base-url URL [--api-key KEY]`` and the CI test run
this same function. It runs ``schemathesis run`` (in a child process, so its global
registrations stay there) on the contract laid out for the base URL
(:meth:`emulator.contracts.Contract.flattened`), with:

* a fixed seed and a bounded example count per operation, reproducible run to run;
* every phase: the contract's own examples, coverage, fuzzing, and a stateful run that
  follows the contract's ``links`` (submit -> status -> result);
* every check: no server error, documented status codes, content types, headers and
  response schemas, negative data rejected with a documented 4xx, valid data accepted,
  ``ignored_auth``, unsupported methods answered 405 with ``Allow``...;
* the hooks of :mod:`emulator.testing.schemathesis_hooks`, which keep image and webhook
  fields on safe values (no run reaches the network);
* statuses a contract marks ``x-state-dependent`` accepted for valid data of their operation
  (a result that is not ready, a cancel too late), and a token fetched for every security
  scheme with ``x-token-from`` (fal's CDN upload), so uploads run with a real credential.
* a request schemathesis makes that HTTP itself refuses (a malformed header name, an unknown
  ``Transfer-Encoding``) gets uvicorn's ``text/plain`` 400 before any route: each contract
  documents it once (``x-transport-responses``, merged into every operation at load), so no
  check is switched off for it.

``benchmarks/contracts_long.py`` runs every contract at 1000 examples (minutes each; CI keeps
bounded counts).

Against an emulator that accepts any key (no ``--keys``), ``ignored_auth`` cannot pass (an
invented key is a valid key there), so it is skipped with a note; start the emulator with
``--keys FILE`` to include it. The report is schemathesis's own, framed by a header and a
verdict line; the exit status is 0 when every check passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from emulator import INSTALL_TEST_EXTRA, contracts

DEFAULT_KEY = "rmbg-contract-check"
PHASES = ("examples", "coverage", "fuzzing", "stateful")


@dataclass(frozen=True)
class CheckOptions:
    """How the suite runs.

    Attributes:
        max_examples: test cases per operation and phase (schemathesis ``--max-examples``).
        seed: the random seed (the same seed gives the same run).
        phases: schemathesis phases to run.
        exclude_checks: checks to skip (names as ``schemathesis run --checks`` lists them).
        image_url: put this URL in every image field (a real vendor may refuse ``data:``).
        webhook_url: put this URL in every webhook field.
        request_timeout_s: per request, seconds.
        report_dir: write a JUnit XML report there.
        extra_args: more arguments for ``schemathesis run``.
        admin_token: the emulator's admin token (``serve --admin-token``): sent as
            ``Authorization: Bearer`` to its ``/_emulator/health`` probe and, for the
            ``emulator`` contract (the control plane), on every request.
    """

    max_examples: int = 25
    seed: int = 42
    phases: tuple[str, ...] = PHASES
    exclude_checks: tuple[str, ...] = ()
    image_url: str | None = None
    webhook_url: str | None = None
    request_timeout_s: float = 30.0
    report_dir: Path | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    admin_token: str | None = None


#: The environment variable that carries the admin token to the schemathesis process (its
#: config file names it as ``${...}``, so the token is in no file and no command line).
ADMIN_TOKEN_ENV = "RMBG_CHECK_ADMIN_TOKEN"


def admin_headers(admin_token: str | None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` for an emulator's control plane, or ``{}``."""
    return {"Authorization": f"Bearer {admin_token}"} if admin_token else {}


def probe(base_url: str, admin_token: str | None = None) -> dict[str, object] | None:
    """The target's ``/_emulator/health`` when it is an rmbg-emulator, else ``None``.

    ``admin_token``: the emulator's ``--admin-token``, if it was started with one.
    """
    try:
        response = httpx.get(base_url.rstrip("/") + "/_emulator/health", timeout=5.0,
                             headers=admin_headers(admin_token))
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    if response.status_code == 200 and isinstance(body, dict) and "engine" in body:
        return body
    return None


def auth_config(contract: contracts.Contract, api_key: str,
                tokens: dict[str, str] | None = None) -> str:
    """A ``schemathesis.toml`` giving ``api_key`` to every security scheme of the contract.

    Given per scheme (not as a plain header), so schemathesis knows which header is the key
    and can leave it out where a check needs it missing (``ignored_auth``,
    ``missing_required_header``). An ``x-key-prefix`` (``"Key "``) is put before the key.
    A scheme found in ``tokens`` (see :func:`fetch_tokens`) gets its token instead.
    """
    tokens = tokens or {}
    lines: list[str] = []
    for name, scheme in contract.security_schemes().items():
        value = tokens.get(name, api_key)
        lines.append(f"[auth.openapi.{json.dumps(name)}]")
        if scheme.kind == "http" and scheme.prefix.strip().lower() == "bearer":
            lines.append(f"bearer = {json.dumps(value)}")
        else:
            lines.append(f"api_key = {json.dumps(scheme.prefix + value)}")
    return "\n".join(lines) + "\n"


#: schemathesis's own default for ``positive_data_acceptance`` (``config/_checks.py``).
POSITIVE_STATUSES = ("2xx", "3xx", "401", "403", "404", "409", "429", "5xx")


def state_statuses(contract: contracts.Contract) -> dict[str, list[str]]:
    """Statuses marked ``x-state-dependent: true``, by operation id.

    Such a status answers a *valid* request because of the state of what it names: fal's
    result of a request that is not done (400), failed (422) or was cancelled (499), a
    cancel once the request runs (400). Valid data getting one is no failure.
    """
    out: dict[str, list[str]] = {}
    for op in contract.operations.values():
        raw = ((contract.resolved.get("paths") or {}).get(op.path) or {}).get(op.method.lower())
        responses = (raw or {}).get("responses") or {}
        marked = [str(code) for code, spec in responses.items()
                  if isinstance(spec, dict) and spec.get("x-state-dependent") is True]
        if marked:
            out[op.operation_id] = marked
    return out


def operations_config(contract: contracts.Contract) -> str:
    """``[[operations]]`` tables letting valid requests get their ``x-state-dependent``
    statuses (:func:`state_statuses`) in ``positive_data_acceptance``."""
    lines: list[str] = []
    for operation_id, statuses in state_statuses(contract).items():
        allowed = [*POSITIVE_STATUSES, *statuses]
        lines += ["[[operations]]", f"include-operation-id = {json.dumps(operation_id)}",
                  f"checks.positive_data_acceptance.expected-statuses = {json.dumps(allowed)}",
                  ""]
    return "\n".join(lines)


def fetch_tokens(contract: contracts.Contract, base_url: str, api_key: str, *,
                 timeout_s: float = 30.0) -> tuple[dict[str, str], list[str]]:
    """Tokens for the security schemes whose credential an operation issues.

    A scheme says so with ``x-token-from: {operationId, pointer, query?, body?}`` (fal's
    CDN upload takes ``Authorization: Bearer <token>`` from ``POST
    rest.fal.ai/storage/auth/token``): that operation is called once with ``api_key`` at its
    URL for ``base_url`` (:meth:`emulator.contracts.Contract.url_for`), and the JSON pointer
    picks the token out of the reply. ``x-token-from`` may also be a list of such steps, run
    in order (GMI Cloud's login: e-mail and password give an auth token, the session
    operation trades it for the access token); in a step's ``query`` and ``body``, the
    string ``"{api_key}"`` is replaced by ``api_key`` and ``"{token}"`` by the token the
    step before picked. The last step's token is the scheme's.

    Returns:
        ``({scheme: token}, notes)``; a token that could not be had is left out (the scheme
        then gets ``api_key``) and a note says why.
    """
    tokens: dict[str, str] = {}
    notes: list[str] = []
    raw_schemes = (contract.resolved.get("components") or {}).get("securitySchemes") or {}
    for name, raw in raw_schemes.items():
        spec = raw.get("x-token-from") if isinstance(raw, dict) else None
        steps = spec if isinstance(spec, list) else [spec] if isinstance(spec, dict) else []
        token: str | None = None
        for step in steps:
            token, note = _token_step(contract, name, step, base_url, api_key, token,
                                      timeout_s)
            if token is None:
                notes.append(note)
                break
        if token is not None:
            tokens[name] = token
    return tokens, notes


def _substitute(value: Any, api_key: str, token: str | None) -> Any:
    """``value`` with the strings ``"{api_key}"`` and ``"{token}"`` replaced."""
    if isinstance(value, dict):
        return {k: _substitute(v, api_key, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, api_key, token) for v in value]
    if value == "{api_key}":
        return api_key
    if value == "{token}":
        return token
    return value


def _token_step(contract: contracts.Contract, name: str, step: Any, base_url: str,
                api_key: str, previous: str | None, timeout_s: float
                ) -> tuple[str | None, str]:
    """One step of ``x-token-from``: ``(token, "")``, or ``(None, why not)``."""
    if not isinstance(step, dict):
        return None, f"{name}: x-token-from has a step that is not a mapping"
    op = contract.operation(str(step.get("operationId", "")))
    if op is None:
        return None, f"{name}: x-token-from names no operation of the contract"
    headers = dict(s.header_value(api_key) for s in (op.security[0] if op.security
                                                      else []) if s.location == "header")
    try:
        response = httpx.request(op.method, contract.url_for(op, base_url),
                                 headers=headers,
                                 params=_substitute(step.get("query"), api_key, previous)
                                 or None,
                                 json=_substitute(step.get("body"), api_key, previous),
                                 timeout=timeout_s)
        value: object = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return None, f"{name}: no token from {op.operation_id}: {exc}"
    for part in str(step.get("pointer", "/token")).strip("/").split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    if response.status_code >= 400 or not isinstance(value, str) or not value:
        return None, (f"{name}: no token from {op.operation_id} "
                      f"(HTTP {response.status_code}); the API key stands in")
    return value, ""


def command(contract_file: Path, config_file: Path, base_url: str, options: CheckOptions,
            exclude_checks: Sequence[str]) -> list[str]:
    """The ``schemathesis run`` command line."""
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file),
        "run", str(contract_file),
        "--url", base_url.rstrip("/"),
        "--checks", "all",
        "--seed", str(options.seed),
        "--max-examples", str(options.max_examples),
        "--phases", ",".join(options.phases),
        "--workers", "1",
        "--generation-database", "none",
        "--request-timeout", str(options.request_timeout_s),
        "--suppress-health-check", "too_slow,filter_too_much,data_too_large",
        "--no-color",
    ]
    if exclude_checks:
        cmd += ["--exclude-checks", ",".join(exclude_checks)]
    if options.report_dir is not None:
        cmd += ["--report", "junit", "--report-dir", str(options.report_dir.resolve())]
    cmd += list(options.extra_args)
    return cmd


def run(name: str, base_url: str, *, api_key: str | None = None,
        options: CheckOptions | None = None, out: TextIO | None = None) -> int:
    """Run the suite of contract ``name`` against ``base_url``; print the report to ``out``.

    Returns:
        0 when every check passed, else non-zero (schemathesis's exit status; 2 when the
        suite could not start).

    Raises:
        ContractError: no such contract.
    """
    out = out or sys.stdout
    options = options or CheckOptions()
    contract = contracts.load(name)
    try:
        import schemathesis  # noqa: F401
    except ImportError:
        print(f"rmbg-emulator: the contract suite needs schemathesis: {INSTALL_TEST_EXTRA}",
              file=out)
        return 2
    key = api_key or DEFAULT_KEY
    health = probe(base_url, options.admin_token)
    excluded = list(options.exclude_checks)
    notes: list[str] = []
    if health is not None and health.get("keys") == "any" and "ignored_auth" not in excluded:
        excluded.append("ignored_auth")
        notes.append("ignored_auth skipped: this emulator accepts any key "
                     "(start it with --keys FILE to include the check)")
    started = time.monotonic()
    tokens, token_notes = fetch_tokens(contract, base_url, key,
                                       timeout_s=options.request_timeout_s)
    notes += token_notes
    with tempfile.TemporaryDirectory(prefix="rmbg-contract-") as tmp:
        flat = Path(tmp) / f"{name}.json"
        flat.write_text(json.dumps(contract.flattened(base_url)), encoding="utf-8")
        config = Path(tmp) / "schemathesis.toml"
        control_plane = name == "emulator" and options.admin_token is not None
        headers = (f'headers = {{ Authorization = "Bearer ${{{ADMIN_TOKEN_ENV}}}" }}\n'
                   if control_plane else "")
        config.write_text(headers + auth_config(contract, key, tokens)
                          + operations_config(contract), encoding="utf-8")
        cmd = command(flat, config, base_url, options, excluded)
        env = dict(os.environ)
        package_root = str(contracts.loading.PACKAGE_DIR.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        env["SCHEMATHESIS_HOOKS"] = "emulator.testing.schemathesis_hooks"
        env["RMBG_CHECK_CONTRACT"] = str(flat)
        env.pop("RMBG_CHECK_IMAGE_URL", None)
        env.pop("RMBG_CHECK_WEBHOOK_URL", None)
        env.pop(ADMIN_TOKEN_ENV, None)
        if control_plane and options.admin_token:
            env[ADMIN_TOKEN_ENV] = options.admin_token
        if options.image_url:
            env["RMBG_CHECK_IMAGE_URL"] = options.image_url
        if options.webhook_url:
            env["RMBG_CHECK_WEBHOOK_URL"] = options.webhook_url
        print(f"== contracts check {name}: {contract.title} ({contract.version})", file=out)
        print(f"   contract: {contract.path}", file=out)
        print(f"   target:   {base_url}"
              + (f" (rmbg-emulator {health.get('version')}, engine {health.get('engine')})"
                 if health else ""), file=out)
        print(f"   operations: {', '.join(contract.operations)}", file=out)
        print(f"   seed {options.seed}, at most {options.max_examples} examples per operation, "
              f"phases {', '.join(options.phases)}", file=out)
        for note in notes:
            print(f"   note: {note}", file=out)
        out.flush()
        proc = subprocess.run(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, check=False)
    out.write(proc.stdout)
    elapsed = time.monotonic() - started
    verdict = "PASSED" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
    print(f"== contracts check {name}: {verdict} in {elapsed:.1f} s", file=out)
    out.flush()
    return proc.returncode


__all__ = ["ADMIN_TOKEN_ENV", "DEFAULT_KEY", "PHASES", "POSITIVE_STATUSES", "CheckOptions",
           "admin_headers", "auth_config", "command", "fetch_tokens", "operations_config",
           "probe", "run", "state_statuses"]
